"""Sliding-window attention prefill at SpikingBrain-7B's width: masked query blocks vs the windowed path.

Correctness first (bf16 against a float64 masked softmax, full width: 28 query / 4 key-value heads,
head_dim 128, window 4096, with and without a cache from a previous piece), then timing at ``--length``:

- ``masked``: the general path (query blocks of ``--block`` against the keys their windows reach, a
  boolean mask per block, keys and values repeated per query head), what every prefill ran before;
- ``windowed-flash`` and ``windowed-cudnn``: :func:`sb_layers.attention.windowed_attention`
  (causal squares and rectangles merged through their log-sum-exp, grouped heads read in place, no mask
  tensor) on PyTorch's flash-attention kernel and on cuDNN's fused attention, picked with
  ``torch.nn.attention.sdpa_kernel`` (the library takes cuDNN on Hopper unless switched off);
- ``flex`` (``--flex``): compiled FlexAttention with a sliding-window ``mask_mod`` (compiles per shape);
- the whole SWA layer (projections, rotary, cache) on the masked and both windowed paths;
- first calls at new lengths (cuDNN builds an execution plan per shape) against a repeated call.

    python benchmarks/bench_swa_prefill.py --out swa.json
    python benchmarks/bench_swa_prefill.py --tiny --device cpu --out /tmp/swa.json   # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _longctx as lc  # noqa: E402

from sb_layers import MixerCache, SlidingWindowAttention  # noqa: E402
from sb_layers import attention as swa  # noqa: E402


def masked_reference(q, keys, values, window, block):
    """The general path's computation: per block of queries, a boolean mask and repeated keys."""
    q_len, total = q.shape[2], keys.shape[2]
    cached = total - q_len
    outs = []
    for start in range(0, q_len, block):
        stop = min(start + block, q_len)
        low, high = max(0, cached + start - window + 1), cached + stop
        pos_q = torch.arange(cached + start, cached + stop, device=q.device)[:, None]
        pos_k = torch.arange(low, high, device=q.device)[None]
        allowed = ((pos_k <= pos_q) & (pos_k > pos_q - window))[None]
        outs.append(swa.masked_attention(q[:, :, start:stop], keys[:, :, low:high], values[:, :, low:high], allowed))
    return torch.cat(outs, dim=2)


KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def windowed_on(kernel, q, keys, values, window):
    """``windowed_attention`` with its pieces on one fused kernel ("flash" or "cudnn")."""
    with sdpa_kernel([KERNELS[kernel]]):
        return swa.windowed_attention(q, keys, values, window)


def flex_runner(q_len, total, window, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    cached = total - q_len

    def mask_mod(b, h, q_idx, kv_idx):
        pos = q_idx + cached
        return (kv_idx <= pos) & (kv_idx > pos - window)

    block_mask = create_block_mask(mask_mod, None, None, q_len, total, device=device)
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask, enable_gqa=True)


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=32768)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--check-length", type=int, default=6144)
    parser.add_argument("--flex", action="store_true", help="also FlexAttention (torch.compile per shape)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small shapes (CPU smoke run)")
    parser.add_argument("--out", default="swa.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    heads, kv_heads, dim, hidden = 28, 4, 128, 3584
    if args.tiny:
        heads, kv_heads, dim, hidden = 4, 2, 16, 64
        args.window, args.length, args.block, args.check_length = 64, 300, 32, 200
    window = args.window
    result = {"device": lc.device_label(device), "date": lc.utc_now(), "checks": {}, "timing_ms": {}}

    def tensors(q_len, total, dtype=torch.bfloat16):
        dtype = dtype if device.type == "cuda" else torch.float32
        q = torch.randn(1, q_len, heads, dim, device=device, dtype=dtype).transpose(1, 2)
        k = torch.randn(1, total, kv_heads, dim, device=device, dtype=dtype).transpose(1, 2)
        v = torch.randn(1, total, kv_heads, dim, device=device, dtype=dtype).transpose(1, 2)
        return q, k, v

    # Correctness: bf16 paths against the float64 masked softmax (no cache, and a full cache before the queries).
    shapes = {"no-cache": (args.check_length, 0), "cache": (args.check_length // 2, window), "short-cache": (args.check_length // 2, window // 6)}
    for name, (q_len, cached) in shapes.items():
        q, k, v = tensors(q_len, q_len + cached)
        ref = masked_reference(q.double(), k.double(), v.double(), window, args.block)
        entry = {
            "q_len": q_len, "cached": cached,
            "windowed_flash_bf16": rel(windowed_on("flash", q, k, v, window), ref),
            "windowed_cudnn_bf16": rel(windowed_on("cudnn", q, k, v, window), ref),
            "masked_bf16": rel(masked_reference(q, k, v, window, args.block), ref),
            "windowed_fp32": rel(swa.windowed_attention(q.float(), k.float(), v.float(), window), ref),
        }
        if args.flex:
            try:
                entry["flex_bf16"] = rel(flex_runner(q_len, q_len + cached, window, device)(q, k, v), ref)
            except Exception as err:  # noqa: BLE001
                entry["flex_bf16"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
        # The log-sum-exp of one square causal call against float64.
        n = min(1024, q_len)
        qd, kd = q[:, :, :n].double(), k[:, :, :n].double().repeat_interleave(heads // kv_heads, dim=1)
        scores = (qd @ kd.transpose(-1, -2)) * dim**-0.5
        steps = torch.arange(n, device=device)
        lse_ref = scores.masked_fill(steps[None] > steps[:, None], float("-inf")).logsumexp(-1)
        for kernel in KERNELS:
            with sdpa_kernel([KERNELS[kernel]]):
                o, lse = swa.attention_with_lse(q[:, :, :n], k[:, :, :n], v[:, :, :n], True)
            entry[f"lse_max_abs_error_{kernel}"] = float((lse.double() - lse_ref).abs().max())
        result["checks"][name] = entry
        print(name, entry, flush=True)
        del q, k, v, ref
        lc.release()

    # Timing at the full length, attention only.
    for name, cached in {"no-cache": 0, "cache": window}.items():
        q, k, v = tensors(args.length, args.length + cached)
        runs = {
            "masked": lambda: masked_reference(q, k, v, window, args.block),
            "windowed-flash": lambda: windowed_on("flash", q, k, v, window),
            "windowed-cudnn": lambda: windowed_on("cudnn", q, k, v, window),
        }
        timing = {}
        for label, fn in runs.items():
            fn()
            timing[label] = lc.wall_ms(fn, device, 5)[0]
        if device.type == "cuda":
            # cuDNN builds an execution plan per new shape, so the windowed path leaves the pieces whose
            # shapes follow the length (a last partial block) to flash. First calls at two new lengths
            # with a partial last block (the first also pays one-time compiles of those shapes'
            # kernel specializations) against the second length's call repeated.
            for shorter in (1, 2):
                q1, k1, v1 = q[:, :, shorter:], k[:, :, shorter:], v[:, :, shorter:]
                timing[f"first-call-length-minus-{shorter}"] = lc.wall_ms(lambda: windowed_on("cudnn", q1, k1, v1, window), device, 1)[0]
            timing["repeated-call-length-minus-2"] = lc.wall_ms(lambda: windowed_on("cudnn", q1, k1, v1, window), device, 5)[0]
        if args.flex:
            try:
                flex = flex_runner(args.length, args.length + cached, window, device)
                flex(q, k, v)
                timing["flex"] = lc.wall_ms(lambda: flex(q, k, v), device, 5)[0]
            except Exception as err:  # noqa: BLE001
                timing["flex"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
        useful = 4 * heads * dim * args.length * window
        timing["useful_tflop"] = useful / 1e12
        result["timing_ms"][name] = timing
        print(f"attention {name} L={args.length}: {timing}", flush=True)
        lc.write_json(args.out, result)  # each section saved: a run cut short keeps what it measured
        del q, k, v
        lc.release()

    # The whole layer: masked path (an all-ones attention_mask) vs windowed path (no mask).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    layer = SlidingWindowAttention(hidden, heads, kv_heads, window=window, query_chunk_size=args.block, device=device, dtype=dtype)
    x = torch.randn(1, args.length, hidden, device=device, dtype=dtype)
    ones = torch.ones(1, args.length, device=device, dtype=torch.long)
    with torch.inference_mode():
        # The mixer protocol: a fresh MixerCache per call, a whole sequence.
        a = layer(x, ones, MixerCache(1))
        b = layer(x, None, MixerCache(1))
        result["checks"]["layer_masked_vs_windowed_bf16"] = rel(b, a)
        layer_timing = {"masked": lc.wall_ms(lambda: layer(x, ones, MixerCache(1)), device, 5)[0]}
        for kernel in KERNELS:
            with sdpa_kernel([KERNELS[kernel]]):
                layer(x, None, MixerCache(1))
                layer_timing[f"windowed-{kernel}"] = lc.wall_ms(lambda: layer(x, None, MixerCache(1)), device, 5)[0]
    result["timing_ms"]["layer"] = layer_timing
    result["fused_kernels_usable"] = dict(swa._KERNEL_WORKS)  # cuDNN ran; grouped heads taken in place
    lc.write_json(args.out, result)
    print(f"layer L={args.length}: {layer_timing}; masked vs windowed rel {result['checks']['layer_masked_vs_windowed_bf16']:.2e}", flush=True)
    del layer, x, ones, a, b
    lc.release()

    # GLA layer (fla): keys, values and decays expanded in time-major storage vs the former
    # repeat_interleave to head-major plus fla's transpose copies.
    from sb_kernels import fla_available
    from sb_layers.linear_attention import GatedLinearAttention

    if fla_available() and device.type == "cuda":
        print("GLA layer: fla's Triton kernels compile and autotune on first use (minutes on a cold machine)", flush=True)
        gla = GatedLinearAttention(hidden, heads, kv_heads, mode="fla", device=device, dtype=torch.bfloat16)
        x = torch.randn(1, args.length, hidden, device=device, dtype=torch.bfloat16)
        with torch.inference_mode():
            new = gla(x, None, MixerCache(1))
            gla_timing = {"time-major": lc.wall_ms(lambda: gla(x, None, MixerCache(1)), device, 5)[0]}
            gla._repeat_kv = lambda t: t.repeat_interleave(heads // kv_heads, dim=1)  # the former copies
            old = gla(x, None, MixerCache(1))
            gla_timing["head-major (former)"] = lc.wall_ms(lambda: gla(x, None, MixerCache(1)), device, 5)[0]
        result["checks"]["gla_time_major_vs_former"] = rel(new, old)
        result["timing_ms"]["gla_layer"] = gla_timing
        print(f"GLA layer L={args.length}: {gla_timing}; rel {result['checks']['gla_time_major_vs_former']:.2e}", flush=True)
    lc.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
