"""W8ASpike linear: int8 spike counts x int8 weights on tensor cores, int32 accumulation.

Reference semantics (computed in float, :func:`w8aspike_linear_reference`):

    counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)           # one threshold per token row
    y = (counts * v_th) @ (weight_int8 * scales).T + bias             # scales per group of K

``scales`` is float32 ``[N, K // group, 1]``: group 128 as the release, or one group of ``K``
(``[N, 1, 1]``) for per-output-channel scales. The Triton path computes, per row ``m`` and column ``n``,

    y[m, n] = v_th[m] * sum_g scales[n, g] * P[m, n, g] + bias[n],    P[m, n, g] = sum_{k in g} c[m, k] W[n, k]

where every ``P`` is an exact integer sum of int8 x int8 products (tensor cores, int32 accumulation);
only the scaling is rounded (float32, then cast to ``x.dtype``).

Counts past int8. Counts are unbounded (bursts far past 127). Each count is split into int8 digits,
``c = d0 + 256 d1 + 65536 d2 + ...`` with ``d_i`` in ``[-128, 127]``. The hot GEMM multiplies ``d0``
only (one byte per count) while every row's ``max |count|`` is recorded; rows whose counts exceed 127
are then recomputed exactly on the device (same ``v_th``, same rounding, digits split in registers,
``P = sum_i 256^i P_i`` summed in int64 and rounded once) and overwritten. Nothing is read back to the
host: the call is asynchronous and can be captured in a CUDA graph.

- One token (decode, ``M = 1``): one launch. K is split into slices of whole weight groups (split-K:
  enough programs for every SM even on 512-wide layers); each program computes the row's ``v_th``
  itself, quantizes its K tiles on the fly (a ``[BK]`` vector: a few IEEE divisions per thread and
  tile) into row 0 of the int8 tile for ``tl.dot``, and redoes its slice with all digits only when the
  slice exceeds 127 (a uniform branch after the loop): the hot loop stays int8. The last program of a
  column block to arrive adds the slices' float32 partial sums in slice order (deterministic). On an
  H100 (CUDA graphs) split-K took q/o from 0.96x to 1.20x bf16, k/v from 0.72x to 1.17x and the down
  projection (before: quantize + GEMM, 1.01x) to 1.44x. Splitting every count into digits *inside* the
  loop, tried before, streamed the weights 1.3-2x slower than int8 counts; quantizing a ``[16, BK]``
  tile per program for up to 16 rows was 2-3.3x slower than the two-pass path, its divisions and
  per-tile reductions sitting on the loop's critical path.
- Several rows (or one token with per-channel scales and ``K > UNSPLIT_MAX_K``): the quantization kernel (:mod:`sb_kernels.spike_quant`)
  writes ``d0`` and the row maxima, the GEMM runs on ``d0``, a one-program kernel lists the rows past
  127 on the device (past 16 rows; up to 16 the next kernel reads the maxima itself), and a persistent
  kernel (one program per SM) recomputes exactly those rows; with none, it returns at once.

Weight codes past int8. The release's weight codes ``round(w / s)`` are not clamped, and about 1% of its
codes lie outside ``[-127, 127]``. They travel as int8 base codes (clamped to ``±127``) plus a sparse
residual (:class:`~sb_kernels.w8aspike.residual.ResidualCodes`, CSR over the output rows): the tensor
cores multiply the base codes, and each residual entry adds ``scales[n, g] * (R[n, k] * c[m, k])`` (an
exact integer times its scale) to the float32 sum before ``v_th`` and the bias, in every Triton path: the
decode kernel (its SPLITS programs share a column block's entries), the GEMM's epilogue (on ``d0``) and
the exact redo of wide rows (on the recomputed counts).

Errors without a host read. A row of ``x`` holding NaN or Inf gives a NaN output row, as in a float
matmul, and so does a row whose counts leave int32 (possible only with ``v_th`` clamped at 1e4 and
``|x| >= 2**31 * 1e4``); the other rows are unaffected. ``check=True`` reads the row maxima back once
(one device-to-host synchronization) and raises ``ValueError`` / ``OverflowError`` instead.

Modules: :mod:`~sb_kernels.w8aspike.reference` (the PyTorch reference, checks, digit split),
:mod:`~sb_kernels.w8aspike.gemm` (several rows: quantize, GEMM, exact redo of wide rows),
:mod:`~sb_kernels.w8aspike.decode` (one token, one launch, split-K), :mod:`~sb_kernels.w8aspike.hopper`
(the CuTe DSL GEMM of ``backend="cutlass"``, optional), :mod:`~sb_kernels.w8aspike.tiles`
(tile and split heuristics), :mod:`~sb_kernels.w8aspike.accumulate` (device functions they share); the
op itself, :func:`w8aspike_linear`, picks among them here.
"""

from __future__ import annotations

from typing import Literal

import torch

from sb_neurons.spike import ClampSpec, resolve_clamp
from sb_neurons.validation import check_float_tensor, check_positive, check_same_device

from ..dispatch import Backend, resolve_backend, sm_count
from ..spike_quant import TRITON_INPUT_DTYPES
from . import decode
from .decode import _arrival_counters, _linear_fused
from .gemm import _launch_gemm, _linear_two_pass, int8_matmul_int32
from .reference import (
    MAX_K,
    check_residual,
    _check_bias,
    _check_weight_and_scales,
    _raise_if_flagged,
    _torch_linear,
    dequantize_weight,
    split_int8_digits,
    w8aspike_linear_reference,
)
from .residual import ResidualCodes, code_statistics, split_weight_codes, weight_codes
from .tiles import INTERPRETER_SMS, _decode_config, _takes_one_launch, _tile_config


def w8aspike_linear(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    backend: Backend | Literal["cutlass"] = "auto",
    check: bool = False,
    residual: ResidualCodes | None = None,
) -> torch.Tensor:
    """Spike-coded linear layer with int8 weights (W8ASpike), forward only.

    ``y = (counts * v_th) @ ((weight_int8 + R) * scales).T + bias`` with ``counts, v_th = spike_count(x, k)``,
    one threshold per row, and ``R`` the weight codes past int8 (``residual``; none when None). On the Triton backend every integer product is exact, for counts of any size
    (bursts far past 127 included), and only the float32 scaling rounds. The Triton call never
    synchronizes with the host (unless ``check=True``): it can be captured in a CUDA graph.

    Args:
        x: activations ``[..., K]``, float16/bfloat16/float32 (float64 on the torch backend).
        weight_int8: int8 ``[N, K]``.
        scales: float32 ``[N, K // group, 1]`` (``[N, 1, 1]`` for per-output-channel scales).
        bias: ``[N]`` or None.
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        clamp: ``None`` (counts unbounded and handled exactly), a signed bit width or a ``(low, high)`` range.
        backend: ``"torch"``, ``"triton"``, ``"auto"`` or ``"cutlass"``. The Triton path needs ``K``
            divisible by 32 (at most 131071) and the group size divisible by 32. ``"cutlass"`` (sm_90 GPUs,
            extra ``gpu``): the Triton path with its several-row GEMM replaced by the warp-specialized
            CuTe DSL kernel of :mod:`~sb_kernels.w8aspike.hopper` (groups of 128, ``N % 128 == 0``);
            one-token calls keep the Triton decode kernel.
        check: ``False`` (default): a row of ``x`` holding NaN or Inf gives a NaN output row, as in a
            float matmul, and so does a row whose counts leave int32 (only with ``v_th`` clamped at
            1e4, ``|x| >= 2**31 * 1e4``); other rows are unaffected, and nothing is read back.
            ``True``: raise ``ValueError`` (NaN/Inf) or ``OverflowError`` (counts past int32) instead,
            at the price of one device-to-host read per call.
        residual: None, or the :class:`~sb_kernels.w8aspike.residual.ResidualCodes` of the codes past
            int8 (:func:`~sb_kernels.w8aspike.residual.split_weight_codes` makes both parts from any
            integer codes). The torch backend checks its canonical form; the Triton backend only its
            shape and device (no host read). ``"cutlass"`` refuses it (its epilogue has no residual).

    Returns:
        ``[..., N]`` in ``x.dtype``. No gradient flows (inference kernel).
    """
    # The kernel path reads nothing back: finiteness of x is flagged per row by the kernels, and scales
    # and bias (a layer's calibrated buffers) are not re-checked on every call; the torch path checks them.
    check_float_tensor(x, "x", finite=False)
    k = check_positive(k, "k")
    bounds = resolve_clamp(clamp)
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {type(check).__name__}")
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    gemm = "triton"
    if backend == "cutlass":
        _check_cutlass(x, weight_int8, scales)
        backend, gemm = "triton", "cutlass"
    chosen = resolve_backend(backend, x, weight_int8, scales, op="w8aspike_linear")
    check_same_device([("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)])
    cols, width, groups = _check_weight_and_scales(weight_int8, scales, x.shape[-1], check_finite=chosen == "torch")
    bias = _check_bias(bias, cols, check_finite=chosen == "torch")
    residual = check_residual(residual, weight_int8, canonical=chosen == "torch")
    if chosen == "torch":
        return _torch_linear(x, weight_int8, scales, bias, k, clamp, check, residual)
    if residual is not None and gemm == "cutlass" and not _takes_one_launch(x.numel() // width, width, groups):
        raise ValueError("w8aspike_linear: backend='cutlass' does not take weight codes past int8 (residual); "
                         "use backend='triton', whose kernels apply them exactly")
    if x.dtype not in TRITON_INPUT_DTYPES:
        raise TypeError(f"w8aspike_linear: the triton backend takes float16, bfloat16 or float32 x, got {x.dtype}")
    group = width // groups
    if width % 32 or group % 32 or width > MAX_K:
        raise ValueError(
            f"w8aspike_linear: the triton backend needs K and the group size divisible by 32 and K <= {MAX_K}, "
            f"got K={width}, group={group}"
        )

    x2d = x.detach().reshape(-1, width)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    rows = x2d.shape[0]
    out = torch.empty(rows, cols, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out.reshape(*x.shape[:-1], cols)
    weight = weight_int8.contiguous()
    scales2d = scales.reshape(cols, groups).contiguous()
    if _takes_one_launch(rows, width, groups):
        _, row_max = _linear_fused(x2d, weight, scales2d, bias, k, bounds, out, residual=residual)
    else:
        _, row_max = _linear_two_pass(x2d, weight, scales2d, bias, k, bounds, out, gemm=gemm, residual=residual)
    if check:
        _raise_if_flagged(float(row_max.max()))
    return out.reshape(*x.shape[:-1], cols)


def _check_cutlass(x: torch.Tensor, weight_int8: torch.Tensor, scales: torch.Tensor) -> None:
    """Why ``backend="cutlass"`` cannot run this call, as a clear error (nothing falls back silently)."""
    from . import hopper  # imported on first use: the CuTe DSL takes half a second to import
    if not hopper.cutlass_available():
        raise RuntimeError("w8aspike_linear: backend='cutlass' needs NVIDIA's CuTe DSL (nvidia-cutlass-dsl), which is "
                           "not importable: pip install 'spikingbrain[gpu]'")
    if not (isinstance(x, torch.Tensor) and x.is_cuda):
        raise RuntimeError("w8aspike_linear: backend='cutlass' needs CUDA tensors on an sm_90 (Hopper) GPU, "
                           f"got x on {getattr(x, 'device', type(x).__name__)}")
    if torch.cuda.get_device_capability(x.device)[0] != 9:
        raise RuntimeError(f"w8aspike_linear: backend='cutlass' needs an sm_90 (Hopper) GPU, got "
                           f"{torch.cuda.get_device_name(x.device)} (sm_{''.join(map(str, torch.cuda.get_device_capability(x.device)))})")
    cols, width = weight_int8.shape
    groups = scales.shape[1] if scales.ndim == 3 else 0
    if groups < 1 or not hopper.supports(cols, width, width // groups):
        raise ValueError(f"w8aspike_linear: backend='cutlass' needs groups of {hopper.GROUP} inputs and N % {hopper.TILE_N} == 0, "
                         f"got N={cols}, K={width}, {groups} group(s)")


__all__ = [
    "ResidualCodes",
    "code_statistics",
    "dequantize_weight",
    "int8_matmul_int32",
    "split_int8_digits",
    "split_weight_codes",
    "w8aspike_linear",
    "w8aspike_linear_reference",
    "weight_codes",
]
