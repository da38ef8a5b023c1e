"""Batch-1 decode speed after a long context: SpikingBrain-7B (bf16, W8ASpike) vs a Qwen2.5-7B-shaped model.

For each model and context length ``L``: prefill ``L`` random tokens with the cache on (SpikingBrain: GLA
states and rolling SWA windows, in pieces; Qwen2: transformers' ``DynamicCache``), then time greedy
decode steps of one token (the logits of the whole vocabulary each step), eager PyTorch. Tokens/s are
compared with the weight-bandwidth bound of the same run: bytes every decode step must read (weights
as the step uses them, plus the recurrent/KV state) over the device's measured copy bandwidth.

Before timing, a correctness guard decodes a few tokens after a prompt longer than the window on the
fast path (fla's fused recurrent GLA, Triton W8ASpike GEMMs) and on the PyTorch reference path, and
compares the logits.

    python benchmarks/decode.py --out decode.json                     # GPU
    python benchmarks/decode.py --tiny --device cpu --contexts 64,256  # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _longctx as lc  # noqa: E402

from sb_kernels import use_reference  # noqa: E402
from sb_layers import SpikingLinear  # noqa: E402
from sb_layers.models.spikingbrain import GraphedDecoder, SpikingBrainCache, to_w8aspike  # noqa: E402
from sb_layers.models.spikingbrain.cache_names import output_cache  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--contexts", default="1k,128k")
    parser.add_argument("--steps", type=int, default=32, help="timed decode steps")
    parser.add_argument("--warmup", type=int, default=8, help="untimed decode steps first")
    parser.add_argument("--piece", type=int, default=32768)
    parser.add_argument("--swa-block", type=int, default=1024)
    parser.add_argument("--guard-length", type=int, default=4160, help="guard prompt (past the window)")
    parser.add_argument("--guard-steps", type=int, default=8)
    parser.add_argument("--models", default="spikingbrain-bf16,spikingbrain-w8aspike,qwen2")
    parser.add_argument(
        "--profile-steps", type=int, default=0,
        help="profile this many SpikingBrain decode steps (bf16 eager and graphed, W8ASpike graphed) after the "
        "first context, then time",
    )
    parser.add_argument("--out", default="decode.json")
    return parser.parse_args(argv)


def step_bytes(model: nn.Module, state_bytes: int) -> int:
    """Bytes one decode step reads: each linear's weight as the forward uses it, the head, the state.

    Spiking linears on the Triton path read int8 weights and float32 group scales; other linears their
    float weights. The embedding contributes one row.
    """
    total = state_bytes
    for module in model.modules():
        if isinstance(module, SpikingLinear) and module.weight_quantizer is not None:
            total += module.weight.numel() + module.weight_quantizer.scales.numel() * 4
        elif isinstance(module, nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        if isinstance(module, nn.Linear) and module.bias is not None:
            total += module.bias.numel() * module.bias.element_size()
    return total


@torch.inference_mode()
def guard(model, length: int, steps: int, tolerance: float | None, seed: int = 0) -> dict:
    """Decode ``steps`` tokens after a ``length``-token prompt: fast path vs reference path logits.

    ``tolerance`` None records the figures for information (full-depth bf16: see ``ttft.py``)."""
    device = model.lm_head.weight.device
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, length + steps), generator=gen).to(device)
    logits = {}
    for fast in (False, True):
        lc.set_path(model, fast)
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        # The reference path takes PyTorch for the layers' other kernels too (norms, rotary, GLU).
        with contextlib.nullcontext() if fast else use_reference():
            model(ids[:, :length], cache=cache, use_cache=True, logits_to_keep=1, prefill_chunk_size=length)
            logits[fast] = torch.cat(
                [model(ids[:, t : t + 1], cache=cache, use_cache=True).logits.float() for t in range(length, length + steps)],
                dim=1,
            )
    error = float((logits[True] - logits[False]).norm() / logits[False].norm())
    agree = float((logits[True].argmax(-1) == logits[False].argmax(-1)).float().mean())
    return {"prompt": length, "steps": steps, "rel_l2_error": error, "argmax_agreement": agree, "tolerance": tolerance,
        "passed": None if tolerance is None else error <= tolerance}


@torch.inference_mode()
def per_layer_decode_guard(model, length: int, steps: int, tolerance: float, seed: int = 0) -> dict:
    """Every spiking linear on its real input, fast backend against its PyTorch count form, through a
    ``length``-token prefill and ``steps`` one-token decode steps (the decode kernel); worst layer judged.

    The W8ASpike logits of two correct paths drift apart through count flips at rounding ties
    (``_longctx.spiking_layer_comparison``): the logit guard is recorded, this one judges."""
    device = model.lm_head.weight.device
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, length + steps), generator=gen).to(device)
    with lc.spiking_layer_comparison(model) as errors:
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        model(ids[:, :length], cache=cache, use_cache=True, logits_to_keep=1, prefill_chunk_size=length)
        for t in range(length, length + steps):
            model(ids[:, t : t + 1], cache=cache, use_cache=True)
    return lc.judge_layers(errors, tolerance, prompt=length, steps=steps)


def decode_float32_guards(config, device, length: int, steps: int, layers: int = 4) -> dict:
    """:func:`guard` in float32 on a full-width ``layers``-deep model: the bf16 architecture (judged),
    W8ASpike logits (recorded) and W8ASpike layer by layer (judged)."""
    import copy

    small = copy.deepcopy(config)
    small.num_hidden_layers, small.attn_layers = layers, list(range(1, layers, 2))
    model = lc.build_spikingbrain(small, device, torch.float32)
    results = {"float32-bf16-arch": guard(model, length, steps, 1e-3)}
    model.config.coding = {"backend": "auto"}
    w8 = to_w8aspike(model)
    del model
    results["float32-w8aspike"] = guard(w8, length, steps, None)
    results["float32-w8aspike-per-layer"] = per_layer_decode_guard(w8, length, steps, 1e-3)
    del w8
    lc.release()
    for name, value in results.items():
        value["layers"] = layers
        print(f"guard {name} ({layers} layers, float32): {value}", flush=True)
    return results


@torch.inference_mode()
def prefill(model, length: int, device, spiking_brain: bool, seed: int = 1):
    """``(cache, first greedy token)`` after a ``length``-token random prompt."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=gen).to(device)
    if spiking_brain:
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        out = model(ids, cache=cache, use_cache=True, logits_to_keep=1)
    else:
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
    return cache, out.logits[:, -1:].argmax(-1)


@torch.inference_mode()
def graph_guard(model, length: int, steps: int, device) -> dict:
    """The CUDA-graph decode steps against eager steps of the same fast path from the same cache."""
    import copy

    cache, token = prefill(model, length, device, True)
    twin = copy.deepcopy(cache)
    graphed = GraphedDecoder(model, cache, token, warmup=2)  # its warm-up steps leave the cache as it was
    graph_logits = [graphed.step().float().clone() for _ in range(steps)]
    eager_logits, eager_token = [], token
    for _ in range(steps):
        logits = model(eager_token, cache=twin, use_cache=True).logits
        eager_token = logits[:, -1:].argmax(-1)
        eager_logits.append(logits.float())
    got, want = torch.cat(graph_logits, 1), torch.cat(eager_logits, 1)
    error = float((got - want).norm() / want.norm())
    agree = float((got.argmax(-1) == want.argmax(-1)).float().mean())
    # Same kernels, but captured SDPA may pick another backend (reduction order): bf16 rounding level.
    return {"prompt": length, "steps": steps, "rel_l2_error": error, "argmax_agreement": agree, "tolerance": 1e-2, "passed": error <= 1e-2}


@torch.inference_mode()
def decode_speed(model, length: int, steps: int, warmup: int, device, spiking_brain: bool, graph: bool) -> dict:
    """Prefill ``length`` tokens with the cache on, then time ``steps`` greedy one-token steps."""
    lc.reset_peak(device)
    cache, token = prefill(model, length, device, spiking_brain)
    if graph:
        graphed = GraphedDecoder(model, cache, token, warmup=warmup)
        step = graphed.step
    else:
        def step():
            nonlocal token
            logits = model(token, past_key_values=cache, use_cache=True).logits
            token = logits[:, -1:].argmax(-1)

        for _ in range(warmup):
            step()
    ms, _ = lc.wall_ms(lambda: [step() for _ in range(steps)], device, 1)
    state = cache.memory_bytes() if spiking_brain else sum(
        layer.keys.numel() * layer.keys.element_size() * 2 for layer in cache.layers if getattr(layer, "keys", None) is not None
    )
    return {
        "mode": "cuda_graph" if graph else "eager", "ms_per_token": ms / steps, "tokens_per_s": steps / (ms * 1e-3),
        "state_bytes": int(state), "peak_mem_gib": lc.peak_gib(device),
    }


@torch.inference_mode()
def profile_steps(model, length: int, steps: int, device, graph: bool) -> dict:
    """Kernel time of ``steps`` decode steps after a ``length``-token prompt (torch.profiler), by category,
    beside their wall time: the gap is what launches and idle time between kernels cost."""
    from profile_prefill import time_by_category

    cache, token = prefill(model, length, device, True)
    if graph:
        step = GraphedDecoder(model, cache, token, warmup=2).step
    else:
        def step():
            nonlocal token
            token = model(token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)

        step()
    lc.sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        wall, _ = lc.wall_ms(lambda: [step() for _ in range(steps)], device, 1)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events) / 1e3
    shares = time_by_category(events, lambda e: e.self_device_time_total / 1e3 / steps)
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:48]
    # Host side: the operators whose own CPU time is largest (an eager step is host-bound; e.g. a
    # library that rebuilds a plan for every new key length shows up here, not among the kernels).
    host = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU]
    host_top = sorted(host, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    row = {
        "mode": "cuda_graph" if graph else "eager", "context": length, "steps": steps, "wall_ms_per_step": wall / steps,
        "kernel_ms_per_step": total / steps, "kernels_per_step": sum(e.count for e in events) / steps,
        "by_category_ms_per_step": shares,
        "top": [{"name": e.key[:120], "ms_per_step": e.self_device_time_total / 1e3 / steps, "calls_per_step": e.count / steps} for e in top],
        "host_top": [{"name": e.key[:120], "cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps, "calls_per_step": e.count / steps}
                     for e in host_top],
    }
    print(f"profile [{row['mode']}] after {length}: wall {row['wall_ms_per_step']:.2f} ms/step, kernels "
          f"{row['kernel_ms_per_step']:.2f} ms/step in {row['kernels_per_step']:.0f} launches", flush=True)
    for label, value in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {label:12s} {value:8.3f} ms/step")
    for entry in row["top"]:
        print(f"  {entry['ms_per_step']:8.3f} ms {entry['calls_per_step']:6.1f}x  {entry['name'][:100]}")
    print("  host (own CPU time per step):")
    for entry in row["host_top"]:
        print(f"  {entry['cpu_ms_per_step']:8.3f} ms {entry['calls_per_step']:6.1f}x  {entry['name'][:100]}")
    return row


def run_model(name, model, contexts, args, device, bandwidth, result, spiking_brain, graph=False) -> None:
    for length in contexts:
        try:
            row = decode_speed(model, length, args.steps, args.warmup, device, spiking_brain, graph)
        except torch.OutOfMemoryError:
            lc.release()
            result["rows"].append({"model": name, "context": length, "tokens_per_s": None})
            print(f"{name} {length}: out of memory", flush=True)
            continue
        read = step_bytes(model, row["state_bytes"])
        bound = bandwidth / read
        row.update(model=name, context=length, step_bytes=read, bound_tokens_per_s=bound, fraction_of_bound=row["tokens_per_s"] / bound)
        result["rows"].append(row)
        print(
            f"{name} [{row['mode']}] after {length}: {row['tokens_per_s']:.1f} tok/s ({row['ms_per_token']:.2f} ms), "
            f"bound {bound:.0f} tok/s ({read / 1e9:.2f} GB/step) -> {row['fraction_of_bound']:.0%}",
            flush=True,
        )
        lc.release()


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    models = args.models.split(",")
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    contexts = lc.parse_lengths(args.contexts)
    if args.tiny:
        args.piece, args.swa_block, args.guard_length = min(args.piece, 512), min(args.swa_block, 32), min(args.guard_length, 100)
        args.steps, args.warmup = min(args.steps, 4), min(args.warmup, 2)
    bandwidth = lc.copy_bandwidth(device, 2 * lc.GIB if not args.tiny else 2**24)
    print(f"device: {lc.device_label(device)}; copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
    config = lc.spikingbrain_config(args.tiny, args.piece, args.swa_block)
    result = {
        "device": lc.device_label(device), "date": lc.utc_now(), "copy_bandwidth_gbps": bandwidth / 1e9,
        "rows": [], "guards": {},
    }

    # Qwen2 first: a failed graph capture (W8ASpike) can leave the CUDA RNG unusable for a later random init.
    if "qwen2" in models:
        qconfig = lc.qwen_config(args.tiny)
        qwen = lc.build_qwen(qconfig, device, dtype)
        run_model("qwen2", qwen, contexts, args, device, bandwidth, result, False)
        del qwen
        lc.release()

    if "spikingbrain-bf16" in models or "spikingbrain-w8aspike" in models:
        result["guards"].update(decode_float32_guards(config, device, args.guard_length, args.guard_steps))
        model = lc.build_spikingbrain(config, device, dtype)
        result["guards"]["spikingbrain-bf16"] = guard(model, args.guard_length, args.guard_steps, None)
        print(f"guard bf16: {result['guards']['spikingbrain-bf16']}", flush=True)
        lc.set_path(model, True)
        graphs = device.type == "cuda"
        if graphs:
            result["guards"]["spikingbrain-bf16-graph"] = graph_guard(model, args.guard_length, args.guard_steps, device)
            print(f"guard bf16 graph: {result['guards']['spikingbrain-bf16-graph']}", flush=True)
        if args.profile_steps:
            result["profiles"] = [
                dict(profile_steps(model, contexts[0], args.profile_steps, device, graph), model="spikingbrain-bf16")
                for graph in ((False, True) if graphs else (False,))
            ]
            lc.release()
        if "spikingbrain-bf16" in models:
            run_model("spikingbrain-bf16", model, contexts, args, device, bandwidth, result, True)
            if graphs:
                run_model("spikingbrain-bf16", model, contexts, args, device, bandwidth, result, True, graph=True)
        if "spikingbrain-w8aspike" in models:
            model.config.coding = {"backend": "auto"}
            w8 = to_w8aspike(model)
            del model
            lc.release()
            result["guards"]["spikingbrain-w8aspike"] = guard(w8, args.guard_length, args.guard_steps, None)
            print(f"guard w8aspike: {result['guards']['spikingbrain-w8aspike']}", flush=True)
            lc.set_path(w8, True)
            run_model("spikingbrain-w8aspike", w8, contexts, args, device, bandwidth, result, True)
            if graphs:
                try:
                    result["guards"]["spikingbrain-w8aspike-graph"] = graph_guard(w8, args.guard_length, args.guard_steps, device)
                    if args.profile_steps:  # the graphed W8ASpike step too (its eager step is host-bound)
                        row = profile_steps(w8, contexts[0], args.profile_steps, device, True)
                        result.setdefault("profiles", []).append(dict(row, model="spikingbrain-w8aspike"))
                        lc.release()
                    run_model("spikingbrain-w8aspike", w8, contexts, args, device, bandwidth, result, True, graph=True)
                except RuntimeError as err:  # e.g. a host read inside a kernel wrapper breaks the capture
                    result["w8aspike_graph_error"] = str(err).splitlines()[0][:300]
                    print(f"W8ASpike decode cannot be captured as a CUDA graph: {result['w8aspike_graph_error']}", flush=True)
                    torch.cuda.synchronize()
            del w8
        else:
            del model
        lc.release()
        lc.write_json(args.out, result)

    qwen = {r["context"]: r for r in result["rows"] if r["model"] == "qwen2" and r.get("tokens_per_s")}
    for row in result["rows"]:
        if row["model"] != "qwen2" and row.get("tokens_per_s") and row["context"] in qwen:
            row["speedup_vs_qwen"] = row["tokens_per_s"] / qwen[row["context"]]["tokens_per_s"]
    print("\n| model | mode | context | tok/s | ms/token | x Qwen | bound tok/s | of bound |\n|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        if not row.get("tokens_per_s"):
            print(f"| {row['model']} | | {row['context']} | OOM | | | | |")
            continue
        speed = f"{row['speedup_vs_qwen']:.2f}" if "speedup_vs_qwen" in row else "-"
        print(
            f"| {row['model']} | {row['mode']} | {row['context']} | {row['tokens_per_s']:.1f} | {row['ms_per_token']:.2f} | {speed} | "
            f"{row['bound_tokens_per_s']:.0f} | {row['fraction_of_bound']:.0%} |"
        )
    lc.write_json(args.out, result)
    return lc.guard_exit_status(result["guards"])


if __name__ == "__main__":
    sys.exit(main())
