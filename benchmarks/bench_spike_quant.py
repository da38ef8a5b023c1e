"""Fused spike quantization on the GPU: correctness at full size, then achieved bandwidth.

Bytes counted: x read once, counts written once (1 byte for the int8 digit path that the W8ASpike GEMM
reads, 4 bytes for the public int32 counts), plus v_th and the row maxima. Ratio: achieved bandwidth over
a device-to-device copy's, measured in the same run. Also the time ratio against the PyTorch reference
(``sb_neurons.spike_count``), and sweeps of warps per row and (with statistics) rows per program. Every
variant of a shape is compiled before any is timed, then all are timed in interleaved rounds.
"""

from __future__ import annotations

import statistics

import torch

from _common import copy_bandwidth, device_name, kernel_resources, print_table, time_ms, write_json
from sb_kernels import spike_count_rows
from sb_kernels.spike_quant import quantize_rows
from sb_neurons import spike_count

SHAPES = [(32768, 3584), (32768, 18944), (4096, 3584), (16, 3584)]
DTYPES = [torch.bfloat16, torch.float32]
EXTRA = [(32768, 3584, torch.float16)]  # float16 takes bfloat16's path but for the conversion: one shape
WARPS = (2, 4, 8, 16)
STATS_ROWS = (1, 4, 16, 64)  # rows per program with statistics (one histogram atomic per program)


def check(rows: int, width: int, dtype: torch.dtype) -> dict:
    x = (torch.randn(rows, width, device="cuda") * 2).to(dtype)
    x[:, :: 997] *= 60  # bursts past 127
    counts, v_th = spike_count_rows(x, 3.0, backend="triton")
    ref_counts, ref_v_th = spike_count(x.double(), 3.0)
    exact = torch.equal(counts.double(), torch.round(x.double() / v_th.double()))  # x/v_th exact in fp64
    same_as_fp32 = torch.equal(counts.float(), torch.round(x.float() / v_th))
    vth_rel = float(((v_th.double() - ref_v_th) / ref_v_th).abs().max())
    return {"shape": f"{rows}x{width}", "dtype": str(dtype).removeprefix("torch."), "counts_exact": bool(same_as_fp32),
            "counts_match_fp64_division": bool(exact), "v_th_max_rel_err": vth_rel, "max_count": int(counts.abs().max())}


def timed(variants: dict, rounds: int = 3, repeat: int = 10) -> dict:
    """Median time of each variant: all compiled and run once first (a compile leaves the GPU idle and
    its clocks low for the next timings), then timed in ``rounds`` interleaved rounds, median of rounds."""
    for fn in variants.values():
        fn()
    torch.cuda.synchronize()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(time_ms(fn, warmup=2, repeat=repeat))
    return {name: statistics.median(t) for name, t in times.items()}


def bench(rows: int, width: int, dtype: torch.dtype, copy_bw: float) -> dict:
    x = (torch.randn(rows, width, device="cuda") * 2).to(dtype)
    elem = x.element_size()
    hist = torch.zeros(128, dtype=torch.int32, device="cuda")
    large = rows >= 4096
    variants = {
        "int8": lambda: quantize_rows(x, 3.0, None, torch.int8),
        "int32": lambda: quantize_rows(x, 3.0, None, torch.int32),
        "stats": lambda: quantize_rows(x, 3.0, None, torch.int8, hist),
        "ref": lambda: spike_count(x, 3.0),
    }
    for w in WARPS if large else ():
        variants[f"w{w}"] = lambda w=w: quantize_rows(x, 3.0, None, torch.int8, num_warps=w)
    for r in STATS_ROWS if large and dtype == torch.bfloat16 else ():
        variants[f"r{r}"] = lambda r=r: quantize_rows(x, 3.0, None, torch.int8, hist, rows_per_program=r)
    t = timed(variants)
    t_int8, t_int32, t_stats, t_ref = t["int8"], t["int32"], t["stats"], t["ref"]
    sweep = {w: t[f"w{w}"] for w in WARPS if f"w{w}" in t}
    stats_sweep = {r: t[f"r{r}"] for r in STATS_ROWS if f"r{r}" in t}
    extra = rows * 8  # v_th and row max
    bytes_int8 = rows * width * (elem + 1) + extra
    bytes_int32 = rows * width * (elem + 4) + extra
    bw8, bw32, bws = bytes_int8 / (t_int8 * 1e-3), bytes_int32 / (t_int32 * 1e-3), bytes_int8 / (t_stats * 1e-3)
    return {
        "shape": f"{rows}x{width}", "dtype": str(dtype).removeprefix("torch."),
        "ms_int8": t_int8, "ms_int32": t_int32, "ms_int8_stats": t_stats, "ms_torch_ref": t_ref,
        "bw_int8_vs_copy": bw8 / copy_bw, "bw_int32_vs_copy": bw32 / copy_bw, "bw_stats_vs_copy": bws / copy_bw,
        "speedup_vs_torch_ref": t_ref / t_int8, "GBps_int8": bw8 / 1e9,
        **{f"bw_int8_vs_copy_w{w}": bytes_int8 / (t * 1e-3) / copy_bw for w, t in sweep.items()},
        **{f"bw_stats_vs_copy_r{r}": bytes_int8 / (t * 1e-3) / copy_bw for r, t in stats_sweep.items()},
    }


def main() -> None:
    torch.manual_seed(0)
    copy_bw = copy_bandwidth(1 << 30)
    checks = [check(r, w, d) for (r, w) in SHAPES[:2] + SHAPES[3:] for d in DTYPES]
    rows = [bench(r, w, d, copy_bw) for (r, w) in SHAPES for d in DTYPES] + [bench(r, w, d, copy_bw) for (r, w, d) in EXTRA]
    print(f"device: {device_name()}; copy bandwidth {copy_bw / 1e9:.0f} GB/s (read + write)")
    print_table("spike quantization: correctness", checks, list(checks[0]))
    print_table("spike quantization: bandwidth vs copy (same run)", rows,
                ["shape", "dtype", "ms_int8", "bw_int8_vs_copy", "bw_int32_vs_copy", "bw_stats_vs_copy", "speedup_vs_torch_ref",
                 *[f"bw_int8_vs_copy_w{w}" for w in WARPS]])
    print_table("spike quantization with statistics: rows per program (bfloat16)", [r for r in rows if "bw_stats_vs_copy_r1" in r],
                ["shape", "dtype", "bw_stats_vs_copy", *[f"bw_stats_vs_copy_r{r}" for r in STATS_ROWS]])
    resources = kernel_resources()
    print_table("compiled kernels (ptxas)", resources, ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_B", "constexprs"])
    write_json("spike_quant", {"device": device_name(), "copy_GBps": copy_bw / 1e9, "checks": checks, "rows": rows, "resources": resources})


if __name__ == "__main__":
    main()
