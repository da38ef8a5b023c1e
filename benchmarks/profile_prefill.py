"""Where a SpikingBrain-7B prefill spends its GPU time: kernel time by category (torch.profiler).

One prefill of ``--context`` random tokens (fast path, bf16, random weights; ``--w8aspike``: the same model
converted by ``to_w8aspike``) after a warm-up, profiled;
prints the top kernels and the share of matmuls (cuBLAS/CUTLASS GEMMs), SWA attention (SDPA kernels),
GLA (fla's Triton kernels) and everything else (norms, activations, copies, rotary), then the operators
(with their input shapes) that launched the most kernel time, which names what generic elementwise
kernels were doing.

    python benchmarks/profile_prefill.py --context 32768 --out profile.json
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _longctx as lc  # noqa: E402

CATEGORIES = [  # first match wins: flash kernels' names mention cutlass types
    ("attention", re.compile(r"fmha|attention|flash|efficient|sdpa|cudnn", re.I)),  # cuDNN: ..._native_sdpa_sm90_...
    ("gemm", re.compile(r"gemm|sm90_xmma|cutlass|cublas|nvjet", re.I)),
    ("gla (fla)", re.compile(r"chunk|gla|fused_recurrent", re.I)),
    ("w8aspike", re.compile(r"w8a|quantize_rows|int8", re.I)),
]


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if pattern.search(name):
            return label
    return "other"


def time_by_category(events, time_of) -> dict[str, float]:
    """Sum of ``time_of(event)`` per :func:`category` of the events' names."""
    shares: dict[str, float] = {}
    for event in events:
        shares[category(event.key)] = shares.get(category(event.key), 0.0) + time_of(event)
    return shares


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--piece", type=int, default=32768)
    parser.add_argument("--swa-block", type=int, default=1024)
    parser.add_argument("--w8aspike", action="store_true", help="profile the W8ASpike model (to_w8aspike of the same)")
    parser.add_argument("--out", default="profile.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = lc.spikingbrain_config(args.tiny, args.piece, args.swa_block)
    model = lc.build_spikingbrain(config, device, dtype)
    if args.w8aspike:
        from sb_layers.models.spikingbrain import to_w8aspike

        model.config.coding = {"backend": "auto"}
        model = to_w8aspike(model)
        lc.release()
    ids = torch.randint(0, config.vocab_size, (1, args.context), device=device)
    with torch.inference_mode():
        model(ids, use_cache=False, logits_to_keep=1)
        lc.sync(device)
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            model(ids, use_cache=False, logits_to_keep=1)
            lc.sync(device)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA] if device.type == "cuda" else []
    if device.type != "cuda":
        events = list(prof.key_averages())
    time_of = (lambda e: e.self_device_time_total) if device.type == "cuda" else (lambda e: e.self_cpu_time_total)
    total = sum(time_of(e) for e in events) or 1.0
    shares = time_by_category(events, time_of)
    top = sorted(events, key=time_of, reverse=True)[:25]
    print(f"device {lc.device_label(device)}, {'W8ASpike' if args.w8aspike else 'bf16'}, context {args.context}: kernel time {total / 1e3:.1f} ms")
    for label, value in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {label:12s} {value / 1e3:9.1f} ms  {value / total:6.1%}")
    for event in top:
        print(f"  {time_of(event) / 1e3:9.2f} ms  {event.count:6d}x  {category(event.key):10s} {event.key[:110]}")
    operators = []
    if device.type == "cuda":
        # Operators (CPU events) by the kernel time they launched themselves, split by input shapes.
        cpu_ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.device_type == torch.autograd.DeviceType.CPU]
        operators = sorted((e for e in cpu_ops if e.self_device_time_total > 0), key=lambda e: e.self_device_time_total, reverse=True)[:30]
        print("operators by the kernel time they launched:")
        for event in operators:
            print(f"  {event.self_device_time_total / 1e3:9.2f} ms  {event.count:6d}x  {event.key[:40]:40s} {str(event.input_shapes)[:120]}")
    lc.write_json(args.out, {
        "device": lc.device_label(device), "date": lc.utc_now(), "context": args.context,
        "model": "spikingbrain-w8aspike" if args.w8aspike else "spikingbrain-bf16", "kernel_ms": total / 1e3,
        "by_category_ms": {k: v / 1e3 for k, v in shares.items()},
        "top": [{"name": e.key, "ms": time_of(e) / 1e3, "count": e.count, "category": category(e.key)} for e in top],
        "operators": [
            {"name": e.key, "ms": e.self_device_time_total / 1e3, "count": e.count, "input_shapes": str(e.input_shapes)}
            for e in operators
        ],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
