"""Sequence-parallel prefill (issue 21): time to first token on N ranks against one, under torchrun.

    torchrun --nproc-per-node 8 benchmarks/sequence_parallel.py --length 512k,1m --config 7b
    torchrun --nproc-per-node 2 benchmarks/sequence_parallel.py --backend gloo --device cpu --config tiny --length 4096 --check

Each rank holds the model (random bf16 weights of the released 7B config, or a tiny one) and runs
:func:`sb_layers.models.spikingbrain.sequence_parallel_prefill` on the whole prompt. Measured per length:
the median wall time of the sequence-parallel prefill (all ranks synchronized), and, as the baseline in
the same run, rank 0 alone prefilling the same prompt with the model's ordinary forward
(``prefill_chunk_size`` pieces, ``logits_to_keep=1``), unless ``--no-baseline`` (a length one device
cannot hold). Figures: speedup = baseline / parallel, scaling efficiency = speedup / ranks. ``--check``
compares the last logits and the cache with the single-device prefill (relative errors in the JSON).
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _longctx as lc  # noqa: E402

from sb_layers.models.spikingbrain import SpikingBrainCache, sequence_parallel_prefill  # noqa: E402
from sb_layers.kv_cache import RollingKVCache  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", default="512k", help="prompt lengths, comma-separated (k = 1024, m = 1024k); default 512k")
    parser.add_argument("--batch", type=int, default=1, help="prompts per batch (default 1)")
    parser.add_argument("--config", choices=("7b", "tiny"), default="7b", help="model shape (default 7b, random weights)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bfloat16", help="weights and activations (default bfloat16)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None, help="default: nccl on cuda, gloo on cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per length (default 3, after one warm-up)")
    parser.add_argument("--prefill-chunk-size", type=int, default=32768, help="pieces of the single-device baseline (default 32768)")
    parser.add_argument("--swa-query-chunk-size", type=int, default=4096, help="SWA query blocks (default 4096)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the single-device baseline (lengths one device cannot hold)")
    parser.add_argument("--check", action="store_true", help="compare logits and cache with the single-device prefill")
    parser.add_argument("--out", default="benchmarks/results/sequence_parallel.json", help="JSON output path")
    args = parser.parse_args(argv)
    try:
        args.lengths = [_parse_length(item) for item in args.length.split(",")]
    except ValueError:
        parser.error(f"--length: expected comma-separated positive lengths such as 4096,512k,1m, got {args.length!r}")
    for name in ("batch", "repeat", "prefill_chunk_size", "swa_query_chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.backend = args.backend or ("nccl" if args.device == "cuda" else "gloo")
    if args.backend == "nccl" and args.device != "cuda":
        parser.error("--backend nccl needs --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --backend gloo for a smoke run)")
    if args.check and args.no_baseline:
        parser.error("--check compares with the single-device prefill, which --no-baseline skips")
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        parser.error("run under torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR): torchrun --nproc-per-node N benchmarks/sequence_parallel.py ...")
    world = int(os.environ["WORLD_SIZE"])
    too_short = [n for n in args.lengths if n < world]
    if too_short:
        parser.error(f"--length: every length needs at least one position per rank ({world} ranks), got {too_short}")
    return args


def _parse_length(item: str) -> int:
    item = item.strip().lower()
    scale = {"k": 1024, "m": 1024**2}.get(item[-1:], 1)
    value = int(item[:-1] if scale > 1 else item) * scale
    if value < 1:
        raise ValueError(item)
    return value


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _cache_errors(mine: SpikingBrainCache, ref: SpikingBrainCache) -> dict[str, float]:
    errors = {}
    for index, (a, b) in enumerate(zip(mine.states, ref.states)):
        if isinstance(b, RollingKVCache):
            a.sort(), b.sort()
            errors[f"layer{index}.keys"] = _relative(a.keys, b.keys)
            errors[f"layer{index}.values"] = _relative(a.values, b.values)
        else:
            errors[f"layer{index}.state"] = _relative(a.recurrent, b.recurrent)
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    dtype = DTYPES[args.dtype]
    config = lc.spikingbrain_config(args.config == "tiny", args.prefill_chunk_size, args.swa_query_chunk_size)
    torch.manual_seed(0)  # the same random weights on every rank
    model = lc.build_spikingbrain(config, device, dtype)
    rows, result = [], {"device": lc.device_label(device), "ranks": world, "backend": args.backend, "config": args.config,
                        "dtype": args.dtype, "utc": lc.utc_now(), "baseline": "rank 0 alone: model forward, prefill in pieces", "lengths": {}}
    for length in args.lengths:
        ids = torch.randint(3, config.vocab_size, (args.batch, length), generator=torch.Generator().manual_seed(length)).to(device)

        def parallel():
            return sequence_parallel_prefill(model, ids, cache_on="rank0")

        parallel()  # warm-up (kernels compile and autotune)
        dist.barrier()
        lc.reset_peak(device)
        parallel_ms, runs = lc.wall_ms(lambda: (parallel(), dist.barrier()), device, args.repeat)
        entry = {"parallel_ms": parallel_ms, "parallel_runs_ms": runs, "parallel_peak_gib": lc.peak_gib(device)}
        if not args.no_baseline:
            if rank == 0:
                with torch.no_grad():
                    def single():
                        cache = SpikingBrainCache(config.num_hidden_layers)
                        return model(ids, cache=cache, use_cache=True, logits_to_keep=1).logits, cache

                    single()
                    lc.reset_peak(device)
                    entry["single_ms"], entry["single_runs_ms"] = lc.wall_ms(single, device, args.repeat)
                    entry["single_peak_gib"] = lc.peak_gib(device)
                    entry["speedup"] = entry["single_ms"] / parallel_ms
                    entry["scaling_efficiency"] = entry["speedup"] / world
                    if args.check:
                        ref_logits, ref_cache = single()
                        logits, cache = parallel()
                        entry["check"] = {"last_logits": _relative(logits, ref_logits), **_cache_errors(cache, ref_cache)}
            if args.check and rank != 0:
                parallel()  # the other ranks join rank 0's checked run
            dist.barrier()
        result["lengths"][str(length)] = entry
        rows.append((length, entry))
        lc.release()
    if rank == 0:
        print(f"sequence-parallel prefill, {world} ranks ({args.backend}), {result['device']}, {args.config} {args.dtype}")
        print(f"{'length':>10} {'parallel ms':>12} {'single ms':>10} {'speedup':>8} {'efficiency':>10} {'max check err':>13}")
        for length, entry in rows:
            check = max(entry["check"].values()) if "check" in entry else float("nan")
            print(f"{length:>10} {entry['parallel_ms']:>12.1f} {entry.get('single_ms', float('nan')):>10.1f} "
                  f"{entry.get('speedup', float('nan')):>8.2f} {entry.get('scaling_efficiency', float('nan')):>10.2f} {check:>13.2e}")
        lc.write_json(args.out, result)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
