"""Shared helpers of the GPU benchmarks: timing (CUDA events, median), device name, table and JSON output.

Every figure a benchmark reports is a ratio against a baseline timed in the same process on the same
device; absolute times are recorded alongside in the JSON.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

import torch


def device_name() -> str:
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"


def time_ms(fn: Callable[[], object], warmup: int = 5, repeat: int = 30, flush_l2: bool = True) -> float:
    """Median time of ``fn`` in milliseconds (CUDA events), with the L2 cache flushed before each run."""
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda") if flush_l2 else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(num_bytes: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written) over ``num_bytes`` per buffer."""
    src = torch.randn(num_bytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


def write_json(name: str, payload: dict) -> Path:
    out_dir = Path(os.environ.get("OUT", "benchmarks/results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def kernel_resources() -> list[dict]:
    """Registers, spills and shared memory of every compiled sb_kernels kernel (ptxas' report, per
    specialization): the first thing to read when a kernel misses its floor."""
    from sb_kernels import neuron, spike_quant, w8aspike

    rows = []
    for module in (spike_quant, w8aspike, neuron):
        for name in dir(module):
            lazy = getattr(module, name)
            compiled = getattr(lazy, "_compiled", None)
            if compiled is None:
                continue
            for caches in compiled.device_caches.values():
                for kernel in caches[0].values():
                    try:
                        kernel._init_handles()
                    except Exception:  # noqa: BLE001 - a report, not a check
                        pass
                    meta = kernel.metadata
                    consts = {k: v for k, v in getattr(kernel.src, "constants", {}).items() if not isinstance(v, str)}
                    rows.append({"kernel": name, "num_warps": meta.num_warps, "num_stages": meta.num_stages,
                                 "regs": getattr(kernel, "n_regs", None), "spills": getattr(kernel, "n_spills", None),
                                 "shared_B": meta.shared, "constexprs": str(sorted((str(k), v) for k, v in consts.items()))[:160]})
    return rows


def graph_time_ms(fn: Callable[[], object], repeat: int = 30) -> float:
    """Median time of one replay of a CUDA graph holding ``fn`` (launch overhead removed: the GPU time
    a serving loop that captures its decode step would see). ``fn`` must not synchronize."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return time_ms(graph.replay, repeat=repeat)


def sweep_rows(
    configs: list[dict], keys: tuple[str, ...], shipped: dict, fixed: dict, measure: Callable[[dict], dict]
) -> list[dict]:
    """One row per launch configuration of a sweep: ``fixed`` fields, the configuration named by its
    ``keys`` values, whether it is the ``shipped`` one, and the fields ``measure(config)`` returns. A
    configuration that fails (e.g. out of shared memory) is recorded with its error, not hidden."""
    rows = []
    for config in configs:
        row = {**fixed, "config": "/".join(str(config[key]) for key in keys), "shipped": config == shipped}
        try:
            row.update(measure(config))
        except Exception as err:  # noqa: BLE001 - a sweep reports every configuration
            row["error"] = repr(err)[:120]
        rows.append(row)
    return rows
