"""W8ASpike GEMM at SpikingBrain-7B shapes: correctness against a float64 reference, then time ratios.

Baselines timed in the same run: bf16 ``torch.matmul`` (x @ W.T), ``torch._int_mm`` (int8 x int8 ->
int32, no quantization, no scaling; cuBLASLt needs M > 16), and the release's simulated path
(activation fake quantization in PyTorch, then a bf16 matmul with dequantized weights).
Ours: the whole ``w8aspike_linear`` call (decode: one fused launch; prefill: quantization kernel, int8
GEMM, device-side exact redo of rows past 127), with group-128 or per-channel scales, and the GEMM alone
on pre-quantized counts. Decode sizes are also timed inside CUDA graphs (both sides captured; the call
reads nothing back, so the whole call is captured), fused against the two-pass path, and over a sweep
of the fused kernel's tiles and split-K factors. The cost of exact bursts (counts past 127) is measured with outliers in 1%
of the rows (prefill) and in the one decode row.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from _common import device_name, graph_time_ms, kernel_resources, print_table, rel_err, sweep_rows, time_ms, write_json
from sb_kernels import int8_matmul_int32, w8aspike_linear, w8aspike_linear_reference
from sb_kernels.dispatch import sm_count
from sb_kernels.spike_quant import quantize_rows
from sb_kernels.w8aspike import dequantize_weight
from sb_kernels.w8aspike.decode import _linear_fused
from sb_kernels.w8aspike.gemm import _launch_gemm, _linear_two_pass
from sb_kernels.w8aspike.tiles import _decode_config, _takes_one_launch, _tile_config
from sb_neurons import spike_quantize as simulated_spike_quantize

HIDDEN, KV, INTER = 3584, 512, 18944
LAYERS = {"q/o": (HIDDEN, HIDDEN), "k/v": (KV, HIDDEN), "gate/up": (INTER, HIDDEN), "down": (HIDDEN, INTER)}
TOKENS = [int(t) for t in os.environ.get("BENCH_TOKENS", "1,16,4096,32768").split(",")]
DECODE_ROWS = 16  # decode-sized calls: also timed inside CUDA graphs (launch-bound otherwise)


def make_layer(n: int, k: int, group: int | None):
    w = torch.randn(n, k, device="cuda") * 0.02
    groups = 1 if group is None else k // group
    scales = (w.reshape(n, groups, -1).abs().amax(-1, keepdim=True) / 127).clamp_min(1e-8)
    w8q = torch.round(w.reshape(n, groups, -1) / scales).clamp(-127, 127).reshape(n, k).to(torch.int8)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16) * 0.1
    return w8q, scales.float(), bias


def exact_form_error(x, w8q, scales, bias, out) -> float:
    """Largest |out - exact| / tolerance of the dispatched call's output (see :func:`error_over_tolerance`)."""
    n, k = w8q.shape
    x2d = x.reshape(-1, k)
    again = torch.empty_like(out)
    path = _linear_fused if _takes_one_launch(x2d.shape[0], k, scales.shape[1]) else _linear_two_pass
    v_th, _ = path(x2d, w8q, scales.reshape(n, -1).contiguous(), bias, 3.0, None, again)
    assert torch.equal(again, out)
    return error_over_tolerance(x2d, v_th, w8q, scales, bias, out)


def error_over_tolerance(x2d, v_th, w8q, scales, bias, out) -> float:
    """Largest |out - exact| / tolerance, where exact is ``v_th * sum_g s_g P_g + bias`` in float64 from
    the counts ``round(x / v_th)`` of the kernels' own v_th (exact integers); <= 1 passes."""
    n, k = w8q.shape
    rows = slice(0, 32)  # rows are independent; 32 of them keep the float64 products small
    x2d, v_th, out = x2d[rows], v_th[rows], out[rows]
    counts = torch.round(x2d.float() / v_th[:, None]).double()
    groups = scales.shape[1]
    p = torch.einsum("mgk,ngk->mng", counts.reshape(-1, groups, k // groups), w8q.double().reshape(n, groups, -1))
    s = scales.double().reshape(1, n, groups)
    y = v_th.double()[:, None] * (p * s).sum(-1) + bias.double()
    mag = v_th.double()[:, None] * (p * s).abs().sum(-1) + bias.double().abs()
    tol = mag * (groups + 4) * 2**-24 + y.abs() * 2**-8 + 1e-30  # float32 scaling, then bf16 rounding
    return float(((out.double() - y).abs() / tol).max())


def checks() -> list[dict]:
    out = []
    for name in ("q/o", "k/v", "gate/up", "down"):
        n, k = LAYERS[name]
        for group in (128, None):
            w8q, scales, bias = make_layer(n, k, group)
            for m in (1, 16, 17, 4096):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                x[:, ::501] *= 80  # bursts past 127 in every row
                y = w8aspike_linear(x, w8q, scales, bias, backend="triton")
                ref = w8aspike_linear_reference(x.double(), w8q, scales, bias.double())
                out.append({"layer": name, "group": group or "channel", "M": m, "rel_err_vs_fp64": rel_err(y, ref),
                            "rel_err_bf16_rounding": rel_err(ref.to(torch.bfloat16), ref),
                            "exact_form_err_over_tol": exact_form_error(x, w8q, scales, bias, y)})
    c = torch.randint(-3000, 3000, (64, HIDDEN), device="cuda", dtype=torch.int32)
    c[:, 7:] //= 100
    w8q, _, _ = make_layer(HIDDEN, HIDDEN, 128)
    exact = torch.equal(int8_matmul_int32(c, w8q, backend="triton").long(), (c.double() @ w8q.double().T).long())
    out.append({"layer": "int8_matmul_int32 (bursts to 3000)", "group": "-", "M": 64, "rel_err_vs_fp64": 0.0 if exact else float("nan"),
                "rel_err_bf16_rounding": "exact" if exact else "MISMATCH", "exact_form_err_over_tol": 0.0 if exact else float("nan")})
    return out


def bench_one(name: str, m: int) -> dict:
    n, k = LAYERS[name]
    w8q, scales, bias = make_layer(n, k, 128)
    w8c, scales_c, _ = make_layer(n, k, None)
    w_bf16 = dequantize_weight(w8q, scales, torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    row = {"layer": name, "M": m, "N": n, "K": k}
    row["ms_bf16"] = t_bf16 = time_ms(lambda: torch.matmul(x, w_bf16.T))
    a8 = torch.randint(-8, 8, (m, k), device="cuda", dtype=torch.int8)
    if m > 16:
        row["ms_int_mm"] = time_ms(lambda: torch._int_mm(a8, w8q.T))
    row["ms_simulated"] = t_sim = time_ms(lambda: F.linear(simulated_spike_quantize(x, 3.0), w_bf16, bias))
    ours = lambda: w8aspike_linear(x, w8q, scales, bias, backend="triton")  # noqa: E731
    ours_c = lambda: w8aspike_linear(x, w8c, scales_c, bias, backend="triton")  # noqa: E731
    row["ms_ours_g128"] = t_ours = time_ms(ours)
    row["ms_ours_channel"] = t_chan = time_ms(ours_c)
    codes = quantize_rows(x, 3.0, None, torch.int8)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    s2d = scales.reshape(n, -1).contiguous()
    gemm = lambda: _launch_gemm(codes.counts.unsqueeze(0), w8q, codes.v_th, s2d, bias, out)  # noqa: E731
    row["ms_gemm_only_g128"] = t_gemm = time_ms(gemm)
    row["bf16_over_ours_g128"] = t_bf16 / t_ours
    row["bf16_over_ours_channel"] = t_bf16 / t_chan
    row["bf16_over_gemm_only_g128"] = t_bf16 / t_gemm
    row["simulated_over_ours_g128"] = t_sim / t_ours
    if "ms_int_mm" in row:
        row["int_mm_over_gemm_only"] = row["ms_int_mm"] / t_gemm
    if m <= DECODE_ROWS:
        # Decode is launch-bound: both sides captured in CUDA graphs give the GPU time alone.
        g_bf16 = graph_time_ms(lambda: torch.matmul(x, w_bf16.T))
        g_ours, g_chan = graph_time_ms(ours), graph_time_ms(ours_c)
        two = lambda: _linear_two_pass(x, w8q, s2d, bias, 3.0, None, out)  # noqa: E731
        g_two, g_gemm = graph_time_ms(two), graph_time_ms(gemm)
        row.update(graph_ms_bf16=g_bf16, graph_ms_ours_g128=g_ours, graph_bf16_over_ours_g128=g_bf16 / g_ours,
                   graph_ms_ours_channel=g_chan, graph_bf16_over_ours_channel=g_bf16 / g_chan,
                   graph_ms_two_pass_g128=g_two, graph_bf16_over_two_pass=g_bf16 / g_two,
                   graph_ms_gemm=g_gemm, graph_bf16_over_gemm=g_bf16 / g_gemm,
                   weight_TBps_ours=n * k / (g_ours * 1e-3) / 1e12)
    return row


def fused_vs_two_pass() -> list[dict]:
    """Graph time of the fused one-token kernel and of the multi-row path on one token."""
    rows = []
    for name in LAYERS:
        n, k = LAYERS[name]
        w8q, scales, bias = make_layer(n, k, 128)
        s2d = scales.reshape(n, -1).contiguous()
        w_bf16 = dequantize_weight(w8q, scales, torch.bfloat16)
        for m in (1,):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            g_bf16 = graph_time_ms(lambda: torch.matmul(x, w_bf16.T))
            g_fused = graph_time_ms(lambda: _linear_fused(x, w8q, s2d, bias, 3.0, None, out))
            g_two = graph_time_ms(lambda: _linear_two_pass(x, w8q, s2d, bias, 3.0, None, out))
            rows.append({"layer": name, "M": m, "graph_ms_bf16": g_bf16, "bf16_over_fused": g_bf16 / g_fused,
                         "bf16_over_two_pass": g_bf16 / g_two, "two_pass_over_fused": g_two / g_fused})
            print(rows[-1], flush=True)
    return rows


def burst_cost() -> list[dict]:
    out = []
    n, k = LAYERS["gate/up"]
    w8q, scales, bias = make_layer(n, k, 128)
    x = torch.randn(4096, k, device="cuda", dtype=torch.bfloat16)
    clean = time_ms(lambda: w8aspike_linear(x, w8q, scales, bias, backend="triton"))
    burst = x.clone()
    burst[::100, 11] = 500.0  # 1% of rows hold one count far past 127
    with_bursts = time_ms(lambda: w8aspike_linear(burst, w8q, scales, bias, backend="triton"))
    out.append({"layer": "gate/up", "M": 4096, "rows_with_bursts": "1%", "ms_clean": clean, "ms_bursts": with_bursts,
                "burst_over_clean": with_bursts / clean})
    for name in ("q/o", "gate/up"):
        n, k = LAYERS[name]
        w8q, scales, bias = make_layer(n, k, 128)
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        clean = graph_time_ms(lambda: w8aspike_linear(x, w8q, scales, bias, backend="triton"))
        burst = x.clone()
        burst[0, 11] = 500.0
        with_bursts = graph_time_ms(lambda: w8aspike_linear(burst, w8q, scales, bias, backend="triton"))
        out.append({"layer": name, "M": 1, "rows_with_bursts": "1 of 1 (graph)", "ms_clean": clean, "ms_bursts": with_bursts,
                    "burst_over_clean": with_bursts / clean})
    return out


SWEEP_FUSED = [
    dict(BN=16, BK=128, num_warps=4, num_stages=6, SPLITS=1),
    *(dict(BN=16, BK=128, num_warps=4, num_stages=6, SPLITS=splits) for splits in (4, 7)),
    *(dict(BN=32, BK=128, num_warps=4, num_stages=6, SPLITS=splits) for splits in (1, 2, 4)),
    *(dict(BN=64, BK=128, num_warps=4, num_stages=4, SPLITS=splits) for splits in (1, 2, 4, 7)),
    *(dict(BN=128, BK=128, num_warps=4, num_stages=4, SPLITS=splits) for splits in (1, 2, 4, 7, 14)),
    *(dict(BN=128, BK=128, num_warps=8, num_stages=3, SPLITS=splits) for splits in (4, 7)),
]


def sweep_fused(name: str, m: int) -> list[dict]:
    """Graph time of the fused decode kernel over tile shapes and split-K factors (the shipped one
    marked), vs bf16; each output checked against the exact integer form (bursts past 127 in the row)."""
    n, k = LAYERS[name]
    w8q, scales, bias = make_layer(n, k, 128)
    s2d = scales.reshape(n, -1).contiguous()
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    x[:, ::997] *= 80  # some slices redo their counts exactly, others do not
    clean = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w_bf16 = dequantize_weight(w8q, scales, torch.bfloat16)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    g_bf16 = graph_time_ms(lambda: torch.matmul(clean, w_bf16.T))

    def measure(cfg: dict) -> dict:
        v_th, _ = _linear_fused(x, w8q, s2d, bias, 3.0, None, out, config=cfg)
        err = error_over_tolerance(x, v_th, w8q, scales, bias, out)
        g = graph_time_ms(lambda: _linear_fused(clean, w8q, s2d, bias, 3.0, None, out, config=cfg))
        return dict(exact_form_err_over_tol=err, graph_ms=g, graph_bf16_over_fused=g_bf16 / g,
                    weight_TBps=n * k / (g * 1e-3) / 1e12, bf16_weight_TBps=2 * n * k / (g_bf16 * 1e-3) / 1e12)

    shipped = _decode_config(n, 128, k // 128, sm_count(x.device, 0), True)
    return sweep_rows(SWEEP_FUSED, ("BN", "BK", "num_warps", "num_stages", "SPLITS"), shipped,
                      {"layer": name, "M": m}, measure)


SWEEP_LARGE = [
    dict(BM=128, BN=256, BK=128, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=128, BK=128, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BM=128, BN=128, BK=128, GROUP_M=8, num_warps=8, num_stages=5),
    dict(BM=256, BN=128, BK=128, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=256, BK=128, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BM=128, BN=128, BK=64, GROUP_M=8, num_warps=8, num_stages=6),
    dict(BM=128, BN=64, BK=128, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=128, BN=64, BK=128, GROUP_M=8, num_warps=4, num_stages=3),
    dict(BM=256, BN=64, BK=128, GROUP_M=8, num_warps=8, num_stages=3),
]
SWEEP_DECODE = [
    dict(BM=16, BN=128, BK=64, GROUP_M=1, num_warps=4, num_stages=6),
    dict(BM=16, BN=32, BK=128, GROUP_M=1, num_warps=2, num_stages=8),
    dict(BM=16, BN=32, BK=128, GROUP_M=1, num_warps=4, num_stages=6),
    dict(BM=16, BN=64, BK=128, GROUP_M=1, num_warps=4, num_stages=4),
    dict(BM=16, BN=16, BK=128, GROUP_M=1, num_warps=2, num_stages=8),
    dict(BM=16, BN=32, BK=64, GROUP_M=1, num_warps=2, num_stages=8),
    dict(BM=16, BN=64, BK=64, GROUP_M=1, num_warps=4, num_stages=6),
]


def sweep(name: str, m: int, group: int | None) -> list[dict]:
    """GEMM-only time of several tile shapes on one layer (the shipped choice marked), vs bf16 (prefill)."""
    n, k = LAYERS[name]
    w8, scales, bias = make_layer(n, k, group)
    s2d = scales.reshape(n, -1).contiguous()
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w_bf16 = dequantize_weight(w8, scales, torch.bfloat16)
    t_bf16 = time_ms(lambda: torch.matmul(x, w_bf16.T))
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    # Decode sizes: each tile shape also timed inside a CUDA graph (the GPU time alone).
    codes = quantize_rows(x, 3.0, None, torch.int8)
    g_bf16 = graph_time_ms(lambda: torch.matmul(x, w_bf16.T)) if m <= DECODE_ROWS else None

    def measure(cfg: dict) -> dict:
        gemm = lambda: _launch_gemm(codes.counts.unsqueeze(0), w8, codes.v_th, s2d, bias, out, config=cfg)  # noqa: E731
        t = time_ms(gemm)
        fields = dict(ms=t, bf16_over_gemm=t_bf16 / t, TOPS=2 * m * n * k / (t * 1e-3) / 1e12)
        if g_bf16 is not None:
            g = graph_time_ms(gemm)
            fields.update(graph_ms=g, graph_bf16_over_gemm=g_bf16 / g, weight_TBps=n * k / (g * 1e-3) / 1e12)
        return fields

    return sweep_rows(SWEEP_DECODE if m <= DECODE_ROWS else SWEEP_LARGE, ("BM", "BN", "BK", "num_warps", "num_stages"),
                      _tile_config(m, n, group or k, True, group is None),
                      {"layer": name, "M": m, "group": group or "channel", "counts": "int8"}, measure)


def main() -> None:
    torch.manual_seed(0)
    check_rows = checks()
    print(f"device: {device_name()}")
    print_table("W8ASpike: correctness (bf16 output vs float64 reference; exact integer form, <= 1 passes)", check_rows, list(check_rows[0]))
    rows = []
    for m in TOKENS:
        for name in LAYERS:
            rows.append(bench_one(name, m))
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)  # progress
            torch.cuda.empty_cache()
    crossover = fused_vs_two_pass()
    burst = burst_cost()
    sweeps = []
    if os.environ.get("BENCH_SWEEP", "1") != "0":
        for name in LAYERS:
            for m in (1,):
                sweeps += sweep_fused(name, m)
                print(sweeps[-1], flush=True)  # progress
    large = []
    if os.environ.get("BENCH_SWEEP_LARGE", "0") == "1":
        for name, m, group in (("gate/up", 4096, 128), ("gate/up", 4096, None)):
            large += sweep(name, m, group)
    resources = kernel_resources()
    print_table("W8ASpike: time ratios (baseline time / ours; > 1 means ours is faster)", rows,
                ["layer", "M", "ms_bf16", "bf16_over_ours_g128", "bf16_over_ours_channel", "bf16_over_gemm_only_g128",
                 "simulated_over_ours_g128", "int_mm_over_gemm_only"])
    decode = [r for r in rows if r["M"] <= DECODE_ROWS]
    print_table("W8ASpike decode in CUDA graphs (GPU time; bf16 graph time / ours, whole call captured)", decode,
                ["layer", "M", "graph_ms_bf16", "graph_ms_ours_g128", "graph_bf16_over_ours_g128", "graph_bf16_over_ours_channel",
                 "graph_bf16_over_two_pass", "graph_bf16_over_gemm", "weight_TBps_ours"])
    print_table("W8ASpike decode: fused kernel vs two-pass path (graphs)", crossover, list(crossover[0]))
    print_table("W8ASpike: cost of exact bursts", burst, list(burst[0]))
    if sweeps:
        print_table("W8ASpike: fused decode kernel tile sweep (graphs; bf16 time / ours)", sweeps,
                    ["layer", "M", "config", "shipped", "exact_form_err_over_tol", "graph_ms", "graph_bf16_over_fused", "weight_TBps",
                     "bf16_weight_TBps", "error"])
    if large:
        print_table("W8ASpike: tile sweep, GEMM only (bf16 time / ours)", large,
                    ["layer", "M", "group", "counts", "config", "shipped", "ms", "bf16_over_gemm", "TOPS", "error"])
    print_table("compiled kernels (ptxas)", resources, ["kernel", "num_warps", "num_stages", "regs", "spills", "shared_B", "constexprs"])
    write_json("w8aspike", {"device": device_name(), "checks": check_rows, "rows": rows, "crossover": crossover,
                            "bursts": burst, "sweeps": sweeps, "large_sweeps": large, "resources": resources})


if __name__ == "__main__":
    main()
