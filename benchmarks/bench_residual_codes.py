"""What the release's weight codes past int8 cost on the GPU: ratios against no such code, in one run.

The released W8ASpike checkpoint keeps every code ``round(w / s)``, about 1% of them past ``[-127, 127]``
(sb_kernels.w8aspike.residual: int8 base codes plus a sparse residual). Timed with the same base codes,
without and with a residual of ``--share`` of the codes (``|code|`` up to 250, random positions):

- kernel: ``w8aspike_linear`` (Triton) on SpikingBrain-7B's spike-coded shapes (q/o, k/v and the merged
  gate, gate/up), one token in a CUDA graph (the split-K decode kernel) and M = 4096 / 16384 rows (the
  GEMM, its epilogue adding the residual); each checked against the float64 reference first;
- model (``--model``): the graphed batch-1 decode step of SpikingBrain-7B W8ASpike (random weights,
  ``to_w8aspike``) after 1k tokens, with every layer's scales shrunk until about ``--share`` of its codes
  pass int8, against the same model as converted (absmax scales: no code past int8).

    python benchmarks/bench_residual_codes.py [--model] [--share 0.01]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, graph_time_ms, print_table, rel_err, time_ms, write_json  # noqa: E402

from sb_kernels import split_weight_codes, w8aspike_linear, w8aspike_linear_reference  # noqa: E402

SHAPES = {"q_proj/o_proj": (3584, 3584), "k/v/gk_proj": (512, 3584), "gate/up_proj": (18944, 3584)}  # (N, K)
GROUP = 128


def codes_with_residual(n: int, k: int, share: float, seed: int = 0):
    """int8 base codes ``[n, k]`` and the residual putting ``share`` of them past int8 (up to +-250)."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int32)
    past = torch.rand(n, k, generator=g) < share
    wide = torch.randint(128, 251, (n, k), generator=g, dtype=torch.int32) * torch.where(codes < 0, -1, 1)
    base, residual = split_weight_codes(torch.where(past, wide, codes))
    return base.cuda(), residual.to("cuda")


def kernel_rows(share: float) -> list[dict]:
    rows = []
    for name, (n, k) in SHAPES.items():
        base, residual = codes_with_residual(n, k, share)
        scales = (torch.rand(n, k // GROUP, 1) * 2e-3 + 1e-3).cuda()
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        x = torch.randn(64, k, device="cuda", dtype=torch.bfloat16)
        got = w8aspike_linear(x, base, scales, bias, backend="triton", residual=residual)
        want = w8aspike_linear_reference(x.double(), base, scales, bias.double(), residual=residual)
        check = rel_err(got, want)
        assert check < 1e-2, (name, check)  # bf16 output
        for m in (1, 4096, 16384):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            plain = lambda: w8aspike_linear(x, base, scales, bias, backend="triton")  # noqa: E731
            with_residual = lambda: w8aspike_linear(x, base, scales, bias, backend="triton", residual=residual)  # noqa: E731
            timer = graph_time_ms if m == 1 else time_ms
            t_plain, t_residual = timer(plain), timer(with_residual)
            rows.append({
                "shape": name, "N": n, "K": k, "M": m, "share_past_int8": residual.nnz / (n * k),
                "ms_no_residual": t_plain, "ms_residual": t_residual, "slowdown": t_residual / t_plain,
                "rel_err_vs_float64": check,
            })
            print(rows[-1], flush=True)
    return rows


@torch.no_grad()
def shrink_scales(model, share: float) -> float:
    """Scale every spiking layer's weight scales down so that about ``share`` of its codes pass int8;
    returns the share reached over the model."""
    from sb_layers import spiking_layers

    past = total = 0
    for layer in spiking_layers(model).values():
        quantizer = layer.weight_quantizer
        weight = layer.weight_out_in().float().reshape(layer.out_features, -1, quantizer.group_size)
        ratio = (weight.abs() / (quantizer.scales * 127)).flatten()
        sample = ratio[torch.randint(0, ratio.numel(), (2**20,), device=ratio.device)]
        factor = float(torch.quantile(sample, 1 - share))
        quantizer.scales.mul_(factor)
        stats = layer.weight_code_stats()
        past, total = past + stats[0], total + layer.weight.numel()
    return past / total


@torch.inference_mode()
def model_rows(share: float, context: int, steps: int) -> list[dict]:
    import _longctx as lc

    from sb_layers.models.spikingbrain import GraphedDecoder, SpikingBrainCache, to_w8aspike

    device = torch.device("cuda")
    config = lc.spikingbrain_config(False, 32768, 1024)
    model = lc.build_spikingbrain(config, device, torch.bfloat16)
    model.config.coding = {"backend": "auto"}
    w8 = to_w8aspike(model)
    del model
    lc.release()
    lc.set_path(w8, True)
    ids = torch.randint(0, config.vocab_size, (1, context), generator=torch.Generator().manual_seed(1)).to(device)

    def step_ms() -> float:
        cache = SpikingBrainCache(config.num_hidden_layers)
        token = w8(ids, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
        graphed = GraphedDecoder(w8, cache, token, warmup=3)
        ms, _ = lc.wall_ms(lambda: [graphed.step() for _ in range(steps)], device, 3)
        del graphed, cache
        lc.release()
        return ms / steps

    plain = step_ms()
    reached = shrink_scales(w8, share)
    residual = step_ms()
    row = {"context": context, "share_past_int8": reached, "ms_per_token_no_residual": plain,
           "ms_per_token_residual": residual, "slowdown": residual / plain}
    print(row, flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.01)
    parser.add_argument("--model", action="store_true", help="also time the graphed 7B decode step")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    print(f"device: {device_name()}", flush=True)
    kernels = kernel_rows(args.share)
    print_table("w8aspike_linear, codes past int8 against none (same base codes)", kernels,
                ["shape", "M", "share_past_int8", "ms_no_residual", "ms_residual", "slowdown"])
    result = {"device": device_name(), "kernel": kernels}
    if args.model:
        result["model"] = model_rows(args.share, args.context, args.steps)
        print_table("graphed decode step, SpikingBrain-7B W8ASpike", result["model"],
                    ["context", "share_past_int8", "ms_per_token_no_residual", "ms_per_token_residual", "slowdown"])
    write_json("bench_residual_codes", result)


if __name__ == "__main__":
    main()
