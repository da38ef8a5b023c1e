"""What :func:`repack_per_channel` (group-128 int8 weights re-quantized per output channel) does to a
model's logits, beside what the W8ASpike conversion itself does. CPU, built-in defaults, seconds.

The model is small and trained here (a few hundred AdamW steps on the demo's byte-level corpus), wide
enough (512) that every projection has 4 or more weight groups of 128; nothing is downloaded, so this
is not the released 7B checkpoint, whose outlier channels may make groups differ more in range. On
held-out windows it prints, for float -> W8ASpike (group 128) and for W8ASpike -> repacked: the largest
|logit difference| over the largest |logit|, the mean KL divergence of the next-token distributions,
and how often the top-1 token agrees.

Usage: python benchmarks/repack_drift.py [--steps N] [--seed S]
"""

from __future__ import annotations

import argparse

import torch

from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM, continual_pretrain
from sb_layers.models.spikingbrain import repack_per_channel, to_w8aspike
from spikingbrain.demo import ByteTokenizer, corpus_batches


def drift(reference: torch.nn.Module, other: torch.nn.Module, batches: list[torch.Tensor]) -> dict[str, float]:
    """Largest |logit difference| / largest |logit|, mean KL(reference || other), top-1 agreement."""
    worst = peak = kl = agree = total = 0.0
    with torch.no_grad():
        for ids in batches:
            a, b = reference(ids).logits.double(), other(ids).logits.double()
            worst, peak = max(worst, float((a - b).abs().max())), max(peak, float(a.abs().max()))
            kl += float(torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="sum"))
            agree += float((a.argmax(-1) == b.argmax(-1)).sum())
            total += ids.numel()
    return {"max_logit_diff_over_max_logit": worst / peak, "mean_kl_nats": kl / total, "top1_agreement": agree / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="AdamW steps on the corpus (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokenizer = ByteTokenizer()
    config = SpikingBrainConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
        intermediate_size=1024, sliding_window=32, gla_chunk_size=16, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = SpikingBrainForCausalLM.build(config)
    batches = corpus_batches(tokenizer, seed=args.seed, count=16)
    losses = continual_pretrain(model, batches[:-4], steps=args.steps, lr=1e-3, progress=False)
    model.eval()
    grouped = to_w8aspike(model)
    repacked = repack_per_channel(grouped)
    held_out = batches[-4:]
    print(f"model: hidden 512, 4 layers, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"trained {args.steps} steps (loss {losses[0]:.3f} -> {losses[-1]:.3f}), seed {args.seed}")
    for label, a, b in (("float -> W8ASpike group 128", model, grouped), ("W8ASpike group 128 -> per channel", grouped, repacked)):
        row = drift(a, b, held_out)
        print(f"{label:<36} " + ", ".join(f"{key} {value:.4g}" for key, value in row.items()))


if __name__ == "__main__":
    main()
