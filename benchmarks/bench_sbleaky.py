"""SBLeaky against snnTorch's Leaky, forward and forward + backward: ratios measured in one run.

A step-by-step loop over ``T`` steps of ``[B, D]`` inputs, as snnTorch users write it, for the fixed
threshold (where SBLeaky is Leaky spike for spike) and for ``threshold="first_step"`` (the adaptive one,
fed rate-coded input with a silent first step). Goal: SBLeaky within 1.2x of Leaky's time.

    python benchmarks/bench_sbleaky.py                 # CPU
    python benchmarks/bench_sbleaky.py --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import snntorch
import torch
from snntorch import spikegen

from sb_adapters.snntorch import SBLeaky


def loop(neuron, x_seq: torch.Tensor, backward: bool) -> None:
    x = x_seq.clone().requires_grad_(backward)
    mem = neuron.init_leaky()
    spikes = []
    for x_t in x:
        spk, mem = neuron(x_t, mem)
        spikes.append(spk)
    if backward:
        (torch.stack(spikes).sum() + mem.sum()).backward()


def median_ms(fn, device: torch.device, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"), "bench_sbleaky.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(args.steps, args.batch, args.width, generator=gen).to(device)
    rate = spikegen.rate(torch.rand(args.batch, args.width, generator=gen), num_steps=args.steps).to(device)
    rate[0] = 0.0  # a silent first step
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    rows = []
    for name, x_seq, ours in (
        ("threshold=1.0", dense, lambda: SBLeaky(beta=0.9)),
        ("threshold='first_step' (Leaky at the threshold it sets)", rate, lambda: SBLeaky(beta=0.9, threshold="first_step")),
    ):
        for backward in (False, True):
            leaky_ms = median_ms(lambda: loop(snntorch.Leaky(beta=0.9).to(device), x_seq, backward), device, args.repeat)
            ours_ms = median_ms(lambda: loop(ours().to(device), x_seq, backward), device, args.repeat)
            rows.append({"case": name, "pass": "forward + backward" if backward else "forward", "leaky_ms": leaky_ms,
                         "sbleaky_ms": ours_ms, "ratio": ours_ms / leaky_ms})
    print(f"device: {label}; T={args.steps}, B={args.batch}, D={args.width}\n")
    print("| case | pass | Leaky ms | SBLeaky ms | SBLeaky / Leaky |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['pass']} | {row['leaky_ms']:.2f} | {row['sbleaky_ms']:.2f} | {row['ratio']:.2f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": label, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
