"""What recording spike statistics costs: a forward inside a SpikeRecorder against the same forward plain.

An injected Llama-shaped model (random weights, hidden 256, 4 layers, every projection spike-coded), one
forward of ``[batch, length]`` tokens, no gradients; the median of ``--repeat`` runs each, measured in one
run. Goal: at most 1.3x on the CPU.

    python benchmarks/bench_recording.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers as tf

from sb_adapters import SpikingConfig, inject_spiking
from sb_layers import SpikeRecorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"), "bench_recording.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                            num_attention_heads=4, num_key_value_heads=2)
    model = tf.LlamaForCausalLM(config).eval().to(device)
    inject_spiking(model, SpikingConfig())
    ids = torch.randint(0, 1000, (args.batch, args.length), device=device)

    def forward() -> None:
        with torch.no_grad():
            model(ids)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def recorded() -> None:
        with SpikeRecorder(model):
            forward()

    times: dict[str, list[float]] = {"plain": [], "recording": []}
    forward(), recorded()
    for _ in range(args.repeat):  # interleaved: both see the same machine load
        for name, fn in (("plain", forward), ("recording", recorded)):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    plain, recording = statistics.median(times["plain"]), statistics.median(times["recording"])
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {label}; forward of {args.batch} x {args.length} tokens")
    print(f"plain {plain:.2f} ms, recording {recording:.2f} ms: {recording / plain:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": label, "plain_ms": plain, "recording_ms": recording, "ratio": recording / plain}, indent=2))


if __name__ == "__main__":
    main()
