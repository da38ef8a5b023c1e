"""W8ASpike's prefill GEMM with the release's layout (int8 weights, float32 scales per 128 inputs, int8
counts with one v_th per token) at SpikingBrain-7B's shapes, against bf16 ``torch.matmul``.

Timed in one run, GEMM only (counts quantized beforehand): bf16 ``x @ W.T``; ``torch._int_mm``
(cuBLASLt int8 x int8 -> int32, no scaling: the int8 tensor rate the hardware gives these shapes);
the Triton GEMM at its shipped tiles and over a few others; and, where ``nvidia-cutlass-dsl``
imports on an sm_90 GPU, the warp-specialized CuTe DSL kernel (``backend="cutlass"``). Then the whole
``w8aspike_linear`` call on each backend, with bursts past 127 in every row.

Correctness first: every GEMM's output against the float64 value of ``v_th * sum_g s_g P_g + bias``
from the same counts (``err/tol <= 1`` passes: float32 scaling, then bf16 rounding), and the whole call
with bursts likewise. Figures are ratios to the bf16 time of the same shape in the same run.
"""

from __future__ import annotations

import functools
import os

import torch

from _common import device_name, print_table, time_ms, write_json
from bench_w8aspike import LAYERS, error_over_tolerance, make_layer
from sb_kernels import w8aspike_linear
from sb_kernels.spike_quant import quantize_rows
from sb_kernels.w8aspike import dequantize_weight, hopper
from sb_kernels.w8aspike.gemm import _launch_gemm
from sb_kernels.w8aspike.tiles import _tile_config

ROWS = [int(m) for m in os.environ.get("BENCH_M", "4096,16384").split(",")]
TRITON_TILES = [  # (BM, BN, num_warps, num_stages), BK = 128; BENCH_TILES=shipped times the first alone
    (128, 64, 4, 4), (128, 128, 8, 4), (128, 128, 4, 4), (256, 128, 8, 3), (128, 256, 8, 3), (64, 128, 4, 4),
][: 1 if os.environ.get("BENCH_TILES") == "shipped" else None]


def cutlass_runs() -> bool:
    return hopper.cutlass_available() and torch.cuda.get_device_capability()[0] == 9


@functools.cache  # one class each: compiled kernels are cached by class, so new classes would recompile per shape
def profile_variants() -> dict[str, type]:
    """Where the CuTe kernel's cycles go: the same kernel with its rescale replaced (only timed).
    "no rescale": MMAs, pipeline and epilogue alone (outputs wrong), the ceiling of this tiling;
    "float bias": ``float(P)`` read from the bits of ``P + 0x4B400000`` minus ``1.5 * 2**23`` (exact for
    ``|P| < 2**22``) instead of a conversion, the variant the kernel's docstring reports as slower."""
    import cutlass
    import cutlass.cute as cute

    class NoRescale(hopper.HopperW8ASpikeGemm):
        def rescale(self, result, sums, sS, index, tCcD):
            pass

    class FloatBias(hopper.HopperW8ASpikeGemm):
        def rescale(self, result, sums, sS, index, tCcD):
            for i in range(cute.size(result)):
                exact = (sums[i] + cutlass.Int32(0x4B400000)).bitcast(cutlass.Float32) - cutlass.Float32(12582912.0)
                result[i] = result[i] + exact * sS[(tCcD[i][1], 0, index)]

    return {"no rescale (MMA ceiling)": NoRescale, "float-bias rescale": FloatBias}


def gemm_rows(name: str, m: int) -> list[dict]:
    n, k = LAYERS[name]
    w8q, scales, bias = make_layer(n, k, 128)
    s2d = scales.reshape(n, -1).contiguous()
    s_gn = s2d.T.contiguous()
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    codes = quantize_rows(x, 3.0, None, torch.int8)  # randn: no count past 127, the GEMM is the answer
    assert float(codes.row_max.max()) <= 127
    w_bf16 = dequantize_weight(w8q, scales, torch.bfloat16)
    t_bf16 = time_ms(lambda: torch.matmul(x, w_bf16.T))
    t_int = time_ms(lambda: torch._int_mm(codes.counts, w8q.T))
    flops = 2 * m * n * k
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    rows = []

    def record(kernel: str, config: str, fn) -> None:
        out.fill_(float("nan"))
        fn()
        err = error_over_tolerance(x, codes.v_th, w8q, scales, bias, out)
        t = time_ms(fn)
        rows.append({"layer": name, "M": m, "N": n, "K": k, "kernel": kernel, "config": config, "err_over_tol": err,
                     "ms": t, "bf16_over_ours": t_bf16 / t, "int_mm_over_ours": t_int / t,
                     "TOPS": flops / (t * 1e-3) / 1e12, "ms_bf16": t_bf16, "ms_int_mm": t_int})

    shipped = _tile_config(m, n, 128, True)
    for bm, bn, warps, stages in TRITON_TILES:
        cfg = dict(BM=bm, BN=bn, BK=128, GROUP_M=8, num_warps=warps, num_stages=stages)
        label = f"{bm}x{bn} w{warps} s{stages}" + (" (shipped)" if all(shipped[key] == cfg[key] for key in cfg) else "")
        record("triton", label, lambda cfg=cfg: _launch_gemm(codes.counts.unsqueeze(0), w8q, codes.v_th, s2d, bias, out, config=cfg))
    if cutlass_runs():
        record("cutlass", "128x128, 1+2 warp groups", lambda: hopper.hopper_w8a_gemm(codes.counts, w8q, codes.v_th, s_gn, bias, out))
        if os.environ.get("BENCH_PROFILE", "1") != "0":
            for label, cls in profile_variants().items():
                record(f"cutlass, {label}", "profile: outputs not used", lambda cls=cls: hopper.hopper_w8a_gemm(
                    codes.counts, w8q, codes.v_th, s_gn, bias, out, kernel_class=cls))
                if label.startswith("no rescale"):
                    rows[-1]["err_over_tol"] = float("nan")  # the rescale skipped: nothing to check
    for row in rows:
        row["bf16_TOPS"] = flops / (t_bf16 * 1e-3) / 1e12
        row["int_mm_TOPS"] = flops / (t_int * 1e-3) / 1e12
    return rows


def whole_call_rows(name: str, m: int) -> list[dict]:
    n, k = LAYERS[name]
    w8q, scales, bias = make_layer(n, k, 128)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    x[:, ::501] *= 80  # bursts past 127 in every row: the exact redo of wide rows runs too
    w_bf16 = dequantize_weight(w8q, scales, torch.bfloat16)
    t_bf16 = time_ms(lambda: torch.nn.functional.linear(x, w_bf16, bias))
    v_th = quantize_rows(x, 3.0, None, torch.int8).v_th
    rows = []
    for backend in ("triton", "cutlass") if cutlass_runs() else ("triton",):
        y = w8aspike_linear(x, w8q, scales, bias, backend=backend)
        t = time_ms(lambda backend=backend: w8aspike_linear(x, w8q, scales, bias, backend=backend))
        rows.append({"layer": name, "M": m, "backend": backend, "err_over_tol": error_over_tolerance(x, v_th, w8q, scales, bias, y),
                     "ms": t, "ms_bf16_linear": t_bf16, "bf16_over_ours": t_bf16 / t})
    return rows


def main() -> None:
    torch.manual_seed(0)
    print(f"device: {device_name()}; cutlass DSL: {'yes' if cutlass_runs() else 'no'}", flush=True)
    gemms, calls = [], []
    for m in ROWS:
        for name in LAYERS:
            gemms += gemm_rows(name, m)
            for row in gemms[-(len(TRITON_TILES) + 3):]:
                print({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()}, flush=True)
            torch.cuda.empty_cache()
    for name in LAYERS:
        calls += whole_call_rows(name, ROWS[0])
    print_table("W8ASpike GEMM, group 128 (bf16 time / ours, _int_mm time / ours; err/tol <= 1 passes)", gemms,
                ["layer", "M", "kernel", "config", "err_over_tol", "ms", "bf16_over_ours", "int_mm_over_ours", "TOPS",
                 "bf16_TOPS", "int_mm_TOPS"])
    print_table("w8aspike_linear, bursts in every row (bf16 F.linear time / ours)", calls, list(calls[0]))
    write_json("w8aspike_gemm", {"device": device_name(), "gemm": gemms, "calls": calls})


if __name__ == "__main__":
    main()
