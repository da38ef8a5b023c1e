"""Time to first token: SpikingBrain-7B (bf16 and W8ASpike) vs a Qwen2.5-7B-shaped Transformer, one GPU.

TTFT = prefill of ``L`` random tokens + the last position's logits (``logits_to_keep=1``), batch 1,
random bf16 weights, one model on the GPU at a time, all in one process so that every ratio compares
figures of the same run. SpikingBrain runs its fast path: fla's ``chunk_gla`` for the GLA layers,
sliding-window attention in query blocks (never an ``L x L`` mask), and the stack in pieces of
``--piece`` tokens with the cache carried (bounded activation memory); W8ASpike adds the Triton
int8 x spike-count GEMMs. Qwen2 is transformers' ``Qwen2ForCausalLM`` with SDPA attention as is, and
(``qwen2-cudnn``) once more with its SDPA calls on cuDNN's attention, the kernel SpikingBrain's
windowed attention takes on Hopper: speed-ups are reported against both.

Before timing, a correctness guard compares the fast path's logits with the PyTorch reference path
(PyTorch chunked GLA, SWA over all queries at once, PyTorch spiking linears, one piece) on an input
longer than the window: sharply in float32 on a full-width model of ``--guard-layers`` layers (bf16 and
W8ASpike; the run fails if they disagree), and for information on the full bf16 models, where the two
paths' different roundings grow through 28 random-weight layers (and flip spike counts). The prefill's achieved FLOP rate is compared with the bf16 matmul rate measured
in the same run (FLOPs counted in ``_longctx``: linears, windowed/causal attention, GLA chunk form).

GPU run (writes the JSON read by ``spikingbrain estimate --run FILE``)::

    python benchmarks/ttft.py --out ttft.json

CPU smoke run at tiny sizes::

    python benchmarks/ttft.py --tiny --device cpu --contexts 256,1024 --out /tmp/ttft.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _longctx as lc  # noqa: E402

from sb_layers import record_spikes  # noqa: E402
from sb_layers.models.spikingbrain import to_w8aspike  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run)")
    parser.add_argument("--contexts", default="4k,32k,128k,256k,512k,1024k", help="SpikingBrain bf16 lengths")
    parser.add_argument("--w8-contexts", default="4k,32k,128k", help="W8ASpike lengths")
    parser.add_argument("--qwen-contexts", default="4k,32k,128k", help="Qwen2 lengths")
    parser.add_argument(
        "--qwen-mlp-chunk", type=int, default=0,
        help="run Qwen2's MLPs over this many tokens at a time (0: as transformers does; for 512k and beyond)",
    )
    parser.add_argument("--piece", type=int, default=32768, help="prefill_chunk_size of SpikingBrain")
    parser.add_argument("--swa-block", type=int, default=1024, help="swa_query_chunk_size of SpikingBrain")
    parser.add_argument("--guard-length", type=int, default=6144, help="guard input length (past the window)")
    parser.add_argument("--guard-piece", type=int, default=2560, help="guard: prefill_chunk_size of the fast path")
    parser.add_argument("--guard-layers", type=int, default=4, help="depth of the float32 guard model (full width)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="seconds of timed runs: skip lengths predicted to end past this")
    parser.add_argument("--models", default="spikingbrain-bf16,spikingbrain-w8aspike,qwen2,qwen2-cudnn",
                        help="qwen2-cudnn: Qwen2 again with its attention on cuDNN (needs qwen2)")
    parser.add_argument("--guards-only", action="store_true", help="run the float32 guards and stop")
    parser.add_argument("--out", default="ttft.json")
    return parser.parse_args(argv)


def repeats(length: int) -> int:
    return 3 if length <= 32768 else 1


class Clock:
    """Seconds spent in timed runs, and a prediction whether a run of ``seconds`` still fits the budget.

    Only the timed runs count (guards, builds and compiles of a cold machine take minutes of their own
    and do not depend on the lengths asked for); ``elapsed`` is the script's whole wall time.
    """

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s, self.timed_s = time.perf_counter(), budget_s, 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, seconds: float) -> bool:
        return self.timed_s + seconds <= self.budget_s

    def add(self, seconds: float) -> None:
        self.timed_s += seconds


def time_lengths(name, model, lengths, device, clock, flops_of, scaling, rows, matmul) -> None:
    """TTFT of ``model`` at each length (ascending); stops at the first OOM or predicted overrun.

    ``scaling(a, b)`` predicts time(b) / time(a) (1 for linear cost) to skip runs the budget cannot hold.
    """
    vocab = model.config.vocab_size
    last = None  # (length, ms) of the last successful run
    for length in lengths:
        if last is not None:
            predicted = last[1] / 1e3 * scaling(last[0], length) * (repeats(length) + 0.2)
            if not clock.fits(predicted):
                print(f"{name} {length}: skipped (its predicted {predicted:.0f} s would pass the timing budget)", flush=True)
                continue
        ids = torch.randint(0, vocab, (1, length), device=device)
        lc.reset_peak(device)
        began = time.perf_counter()
        try:
            with torch.inference_mode():
                ms, runs = lc.wall_ms(lambda: model(ids, use_cache=False, logits_to_keep=1), device, repeats(length))
        except torch.OutOfMemoryError:
            del ids
            lc.release()
            rows.append({"model": name, "context": length, "ttft_ms": None, "peak_mem_gib": None})
            print(f"{name} {length}: out of memory", flush=True)
            break
        clock.add(time.perf_counter() - began)
        peak = lc.peak_gib(device)
        flops = flops_of(length)
        tflops = flops / (ms * 1e-3) / 1e12
        rows.append({
            "model": name, "context": length, "ttft_ms": ms, "peak_mem_gib": peak, "runs_ms": runs,
            "prefill_tflop": flops / 1e12, "achieved_tflops": tflops, "matmul_fraction": tflops / matmul,
        })
        print(
            f"{name} {length}: {ms:.1f} ms (runs {', '.join(f'{r:.0f}' for r in runs)}), peak "
            f"{peak if peak is None else round(peak, 2)} GiB, {tflops:.0f} TFLOP/s = {tflops / matmul:.0%} of matmul",
            flush=True,
        )
        last = (length, ms)
        del ids
        lc.release()


def warm_up(model, device, lengths) -> None:
    """Compile/autotune every kernel shape the timed runs use (a piece, a last partial piece, decode-free)."""
    with torch.inference_mode():
        for length in lengths:
            ids = torch.randint(0, model.config.vocab_size, (1, length), device=device)
            model(ids, use_cache=False, logits_to_keep=1)
    lc.sync(device)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    models = args.models.split(",")
    clock = Clock(args.budget_s)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    contexts, w8_contexts, qwen_contexts = (lc.parse_lengths(t) for t in (args.contexts, args.w8_contexts, args.qwen_contexts))
    if args.tiny:
        args.piece, args.swa_block, args.guard_length = min(args.piece, 512), min(args.swa_block, 32), min(args.guard_length, 160)
        args.guard_piece = min(args.guard_piece, 48)

    shapes = [(8192, 8192, 8192), (args.piece, 3584, 18944), (args.piece, 18944, 3584)]
    if args.tiny:
        shapes = [(256, 256, 256)]
    matmul = lc.matmul_tflops(device, shapes, dtype)
    print(f"device: {lc.device_label(device)}; bf16 matmul TFLOP/s: {matmul}", flush=True)

    config = lc.spikingbrain_config(args.tiny, args.piece, args.swa_block)
    result = {
        "device": lc.device_label(device), "date": lc.utc_now(),
        "config": {
            "num_layers": config.num_hidden_layers, "gla_layers": config.num_hidden_layers - len(config.attn_layers),
            "swa_layers": len(config.attn_layers), "window": config.sliding_window, "hidden_size": config.hidden_size,
            "num_experts": config.num_experts,
        },
        "matmul_tflops": matmul["best"], "matmul_by_shape": matmul["by_shape"],
        "rows": [], "spike_sparsity": None, "guards": {},
        "options": {"prefill_chunk_size": args.piece, "swa_query_chunk_size": args.swa_block, "dtype": str(dtype)},
    }

    def save() -> None:
        lc.write_json(args.out, result)

    warm = [min(4096, contexts[0]), args.piece + min(4096, contexts[0])] if not args.tiny else [64, args.piece + 64]

    if "spikingbrain-bf16" in models or "spikingbrain-w8aspike" in models:
        # The sharp guard: float32, full width, a few layers (fails on any wrong computation).
        result["guards"].update(lc.float32_guards(
            config, device, args.guard_length, args.guard_piece, args.guard_layers, w8aspike="spikingbrain-w8aspike" in models,
        ))
        print(f"float32 guards done ({clock.elapsed():.0f} s into the run)", flush=True)
        if args.guards_only:
            save()
            return lc.guard_exit_status(result["guards"])
        model = lc.build_spikingbrain(config, device, dtype)
        print(f"SpikingBrain built: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters", flush=True)
        result["guards"]["spikingbrain-bf16"] = lc.guard(model, args.guard_length, 64, None, args.guard_piece)
        print(f"guard bf16: {result['guards']['spikingbrain-bf16']}", flush=True)
        lc.release()
        flops_of = lambda n: lc.spikingbrain_prefill_flops(config, model, n)  # noqa: E731
        if "spikingbrain-bf16" in models:
            warm_up(model, device, warm)
            print(f"bf16 warm-up done ({clock.elapsed():.0f} s into the run)", flush=True)
            time_lengths(
                "spikingbrain-bf16", model, contexts, device, clock, flops_of, lambda a, b: b / a, result["rows"], matmul["best"],
            )
            save()
        if "spikingbrain-w8aspike" in models:
            model.config.coding = {"backend": "auto"}
            calib = torch.randint(0, config.vocab_size, (1, min(4096, args.guard_length)), device=device)
            w8 = to_w8aspike(model)
            del model
            lc.release()
            report = record_spikes(w8, [calib]).report
            del calib
            histogram = report.total.count_histogram
            result["spike_sparsity"] = float(histogram[0]) / report.total.num_channels
            result["spike_stats"] = {
                "zero_count_fraction": result["spike_sparsity"], "firing_rate": report.total.firing_rate,
                "counts_at_most_7": report.total.fraction_of_counts_at_most(7),
                "calibration_tokens": int(min(4096, args.guard_length)),
            }
            print(f"W8ASpike spike statistics: {result['spike_stats']}", flush=True)
            result["guards"]["spikingbrain-w8aspike"] = lc.guard(w8, args.guard_length, 64, None, args.guard_piece)
            print(f"guard w8aspike: {result['guards']['spikingbrain-w8aspike']}", flush=True)
            lc.release()
            flops_w8 = lambda n: lc.spikingbrain_prefill_flops(config, w8, n)  # noqa: E731
            warm_up(w8, device, warm)
            time_lengths(
                "spikingbrain-w8aspike", w8, w8_contexts, device, clock, flops_w8, lambda a, b: b / a, result["rows"], matmul["best"],
            )
            del w8
            lc.release()
            save()
        else:
            del model
            lc.release()

    if "qwen2" in models:
        qconfig = lc.qwen_config(args.tiny)
        qwen = lc.build_qwen(qconfig, device, dtype)
        print(f"Qwen2 built: {sum(p.numel() for p in qwen.parameters()) / 1e9:.2f} B parameters", flush=True)
        if args.qwen_mlp_chunk:
            lc.chunk_qwen_mlp(qwen, args.qwen_mlp_chunk)
            result["options"]["qwen_mlp_chunk"] = args.qwen_mlp_chunk
        warm_up(qwen, device, warm[:1])
        qflops = lambda n: lc.qwen_prefill_flops(qconfig, qwen, n)  # noqa: E731
        # Predicted cost from the FLOP count (quadratic attention term included).
        time_lengths("qwen2", qwen, qwen_contexts, device, clock, qflops, lambda a, b: qflops(b) / qflops(a), result["rows"], matmul["best"])
        if "qwen2-cudnn" in models and device.type == "cuda":
            # The same model with its SDPA calls on cuDNN's attention (SpikingBrain's windowed pieces take
            # cuDNN on Hopper): the baseline at its fastest attention kernel, so that the comparison does
            # not credit SpikingBrain with a kernel choice. cuDNN builds a plan per shape: warm up at
            # every timed length first.
            from torch.nn.attention import SDPBackend, sdpa_kernel

            try:
                with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                    warm_up(qwen, device, qwen_contexts)
                    time_lengths("qwen2-cudnn", qwen, qwen_contexts, device, clock, qflops, lambda a, b: qflops(b) / qflops(a),
                                 result["rows"], matmul["best"])
            except RuntimeError as err:  # no cuDNN attention in this build: recorded, the run goes on
                print(f"qwen2-cudnn: not run ({str(err)[:200]})", flush=True)
                result["qwen2_cudnn_error"] = str(err)[:500]
        del qwen
        lc.release()

    baselines = {name: {r["context"]: r["ttft_ms"] for r in result["rows"] if r["model"] == name and r["ttft_ms"]}
                 for name in ("qwen2", "qwen2-cudnn")}
    for row in result["rows"]:
        if row["model"].startswith("qwen2") or not row["ttft_ms"]:
            continue
        for name, key in (("qwen2", "speedup_vs_qwen"), ("qwen2-cudnn", "speedup_vs_qwen_cudnn")):
            if row["context"] in baselines[name]:
                row[key] = baselines[name][row["context"]] / row["ttft_ms"]
    print("\n| model | context | TTFT ms | x Qwen | x Qwen (cuDNN) | peak GiB | TFLOP/s | of matmul |\n|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        ms = "OOM" if row["ttft_ms"] is None else f"{row['ttft_ms']:.1f}"
        speed = f"{row['speedup_vs_qwen']:.2f}" if "speedup_vs_qwen" in row else "-"
        speed_cudnn = f"{row['speedup_vs_qwen_cudnn']:.2f}" if "speedup_vs_qwen_cudnn" in row else "-"
        peak = "-" if row["peak_mem_gib"] is None else f"{row['peak_mem_gib']:.1f}"
        rate = f"{row['achieved_tflops']:.0f}" if "achieved_tflops" in row else "-"
        frac = f"{row['matmul_fraction']:.0%}" if "matmul_fraction" in row else "-"
        print(f"| {row['model']} | {row['context']} | {ms} | {speed} | {speed_cudnn} | {peak} | {rate} | {frac} |")
    result["elapsed_s"] = clock.elapsed()
    save()
    return lc.guard_exit_status(result["guards"])


if __name__ == "__main__":
    sys.exit(main())
