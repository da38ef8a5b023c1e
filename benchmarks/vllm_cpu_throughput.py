"""Generation throughput of a small SpikingBrain model on the CPU: vLLM (the sb_adapters.vllm plugin) against
our HF model's ``generate``, as a ratio measured in one run, in one process, on the same threads.

Run in the vLLM environment: ``.venv-vllm/bin/python benchmarks/vllm_cpu_throughput.py`` (writes
``$OUT/vllm_cpu_throughput.json``, default ``benchmarks/results``). The model: random weights, float32,
hidden 256, 4 layers (GLA, SWA, GLA, SWA), 4 heads of 64 (2 key/value heads), window 64, vocabulary 4096.
Workload: ``--prompts`` prompts of ``--prompt-len`` tokens, ``--new-tokens`` greedy tokens each, all at
once (HF: one batch of equal-length prompts, no padding; vLLM: one ``generate`` call). Both sides use the
one torch thread vLLM's CPU engine keeps for itself. Both generate the same tokens (checked).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: same process, same threads
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    for name in ("prompts", "prompt_len", "new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM

    config = SpikingBrainConfig(
        vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=512, sliding_window=64, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = SpikingBrainForCausalLM(config).float().eval()
    prompts = torch.randint(3, config.vocab_size, (args.prompts, args.prompt_len), generator=torch.Generator().manual_seed(1))

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt

        llm = LLM(
            model=folder, dtype="float32", enforce_eager=True, skip_tokenizer_init=True, max_model_len=1024,
            max_num_seqs=args.prompts, gpu_memory_utilization=0.05, enable_prefix_caching=False, seed=0,
        )
        threads = torch.get_num_threads()  # what vLLM's CPU engine left this process
        params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True, detokenize=False)
        requests = [TokensPrompt(prompt_token_ids=row.tolist()) for row in prompts]
        llm.generate(requests[:1], SamplingParams(temperature=0.0, max_tokens=2, detokenize=False), use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        vllm_s = time.perf_counter() - start
        vllm_tokens = [list(out.outputs[0].token_ids) for out in outputs]

    torch.set_num_threads(threads)
    with torch.no_grad():
        model.generate(prompts[:1], max_new_tokens=2, do_sample=False, eos_token_id=None, pad_token_id=0)  # warm-up
        start = time.perf_counter()
        generated = model.generate(prompts, max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        hf_s = time.perf_counter() - start
    hf_tokens = generated[:, args.prompt_len:].tolist()
    same = sum(a == b for a, b in zip(vllm_tokens, hf_tokens))

    total = args.prompts * args.new_tokens
    rows = [
        {"engine": "HF generate (baseline)", "seconds": hf_s, "tokens/s": total / hf_s, "ratio": 1.0},
        {"engine": "vLLM CPU (sb_adapters.vllm)", "seconds": vllm_s, "tokens/s": total / vllm_s, "ratio": hf_s / vllm_s},
    ]
    device = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}"
    print_table(f"{args.prompts} prompts x {args.prompt_len} tokens, {args.new_tokens} new tokens each ({device})", rows, list(rows[0]))
    print(f"\nidentical greedy continuations: {same}/{args.prompts}")
    path = write_json("vllm_cpu_throughput", {"device": device, "args": vars(args), "rows": rows, "identical": same})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
