"""W8ASpike's PyTorch reference, its argument checks and the int8 digit split of counts.

:func:`w8aspike_linear_reference` is the function every path of :func:`sb_kernels.w8aspike_linear`
computes: ``(counts * v_th) @ (weight_int8 * scales).T + bias`` with ``counts, v_th =
sb_neurons.spike_count(x, k, -1, clamp)``. ``_torch_linear`` is the same with the kernels' conventions
for bad rows (the ``backend="torch"`` path of ``w8aspike_linear``).
"""

from __future__ import annotations

import math

import torch

from sb_neurons import spike_count
from sb_neurons.spike import ClampSpec, resolve_clamp
from sb_neurons.validation import check_float_tensor, check_positive, check_same_device, check_tensor

from ..spike_quant import check_rows_finite
from .residual import ResidualCodes, weight_codes

INT8_MAX = 127
INT32_MAX = 2**31 - 1
MAX_K = 2**17 - 1  # d0 x int8 products summed over K stay in int32: 128 * 128 * K < 2**31


def split_int8_digits(counts: torch.Tensor) -> torch.Tensor:
    """Integer ``counts`` as int8 digits ``[n_digits, *counts.shape]`` with ``counts = sum_i 256^i d_i``.

    Each digit is in ``[-128, 127]``; ``n_digits`` is the fewest that represent every count (at least 1).
    """
    check_tensor(counts, "counts")
    if counts.is_floating_point() or counts.dtype == torch.bool:
        raise TypeError(f"counts must have an integer dtype, got {counts.dtype}")
    rest = counts.to(torch.int64)
    digits = []
    while True:
        low = ((rest + 128) & 255) - 128
        digits.append(low.to(torch.int8))
        rest = (rest - low) >> 8
        if not bool(rest.any()):
            break
    return torch.stack(digits)


def _check_weight(weight_int8: object, in_features: int | None, input_name: str = "x") -> tuple[int, int]:
    weight = check_tensor(weight_int8, "weight_int8")
    if weight.dtype != torch.int8 or weight.ndim != 2:
        raise TypeError(f"weight_int8 must be an int8 tensor [N, K], got {weight.dtype} of shape {tuple(weight.shape)}")
    if in_features is not None and weight.shape[1] != in_features:
        raise ValueError(f"{input_name}'s last dimension is {in_features}, but weight_int8 is [N, K] = {tuple(weight.shape)}: "
                         f"{input_name} must be [..., {weight.shape[1]}]")
    return weight.shape[0], weight.shape[1]


def _check_weight_and_scales(
    weight_int8: object, scales: object, in_features: int | None = None, check_finite: bool = True
) -> tuple[int, int, int]:
    cols, width = _check_weight(weight_int8, in_features)
    s = check_tensor(scales, "scales")
    if s.dtype != torch.float32 or s.ndim != 3 or s.shape[0] != cols or s.shape[2] != 1 or s.shape[1] < 1:
        raise ValueError(f"scales must be float32 [N, K // group, 1] with N = {cols}, got {s.dtype} {tuple(s.shape)}")
    groups = s.shape[1]
    if width % groups:
        raise ValueError(f"scales has {groups} groups, which do not divide K = {width}")
    if check_finite and not bool(torch.isfinite(s).all()):
        raise ValueError("scales contains NaN or Inf")
    return cols, width, groups


def _check_bias(bias: object, cols: int, check_finite: bool = True) -> torch.Tensor | None:
    if bias is None:
        return None
    b = check_float_tensor(bias, "bias", finite=check_finite)
    if b.shape != (cols,):
        raise ValueError(f"bias must have shape ({cols},), got {tuple(b.shape)}")
    return b


def check_residual(residual: object, weight_int8: torch.Tensor, canonical: bool = True) -> ResidualCodes | None:
    """``residual`` (None or a :class:`ResidualCodes`) checked against ``weight_int8`` ``[N, K]``: its shape
    and device, and with ``canonical`` its canonical form (a host read; the kernel path skips it)."""
    if residual is None:
        return None
    if not isinstance(residual, ResidualCodes):
        raise TypeError(f"residual must be None or a ResidualCodes, got {type(residual).__name__}")
    if canonical:
        residual.check_against(weight_int8)
    elif (residual.out_features, residual.in_features) != tuple(weight_int8.shape) or residual.device != weight_int8.device:
        raise ValueError(f"residual is for [N, K] = [{residual.out_features}, {residual.in_features}] on {residual.device}, "
                         f"but weight_int8 is {list(weight_int8.shape)} on {weight_int8.device}")
    return residual if residual.nnz else None


def dequantize_weight(
    weight_int8: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32, residual: ResidualCodes | None = None
) -> torch.Tensor:
    """``(weight_int8 + R) * scales`` per group, as ``dtype`` ``[N, K]``: the release's ``round(w / s) * s``
    (what its simulated path multiplies by), computed in float32 (every code times its scale, rounded once)."""
    cols, width, groups = _check_weight_and_scales(weight_int8, scales)
    residual = check_residual(residual, weight_int8)
    grouped = weight_codes(weight_int8, residual).reshape(cols, groups, width // groups).to(torch.float32) * scales
    return grouped.reshape(cols, width).to(dtype)


def _scaled_matmul(counts, v_th, weight_int8, scales, bias, residual=None):
    """``(counts * v_th) @ (weight_int8 * scales).T + bias`` in ``v_th``'s dtype.

    The left factor is made contiguous first: the matmul's summation order follows its strides, so any
    layout of ``x`` gives, to the bit, its contiguous copy's result."""
    compute = v_th.dtype
    weight = dequantize_weight(weight_int8, scales, torch.float32, residual).to(compute)
    y = (counts * v_th).contiguous() @ weight.T
    if bias is not None:
        y = y + bias.to(compute)
    return y.detach()


def w8aspike_linear_reference(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    residual: ResidualCodes | None = None,
) -> torch.Tensor:
    """``(counts * v_th) @ ((weight_int8 + R) * scales).T + bias`` in float32 (float64 for float64 ``x``),
    cast to ``x.dtype``; ``counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)`` (``x`` finite), ``R``
    the codes past int8 (``residual``, :mod:`~sb_kernels.w8aspike.residual`; None: none).

    Arguments as :func:`w8aspike_linear`, checked the same way (all on one device; ``scales`` and ``bias``
    finite). Any layout of ``x`` gives its contiguous copy's result, to the bit."""
    check_same_device([("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)])  # before values are read
    check_float_tensor(x, "x")
    k = check_positive(k, "k")
    resolve_clamp(clamp)
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    cols, _, _ = _check_weight_and_scales(weight_int8, scales, x.shape[-1])
    bias = _check_bias(bias, cols)
    residual = check_residual(residual, weight_int8)
    counts, v_th = spike_count(x, k, -1, clamp)
    return _scaled_matmul(counts, v_th, weight_int8, scales, bias, residual).to(x.dtype)


def _torch_linear(x, weight_int8, scales, bias, k, clamp, check, residual=None) -> torch.Tensor:
    """The reference with the kernel's conventions for bad rows: NaN rows, or errors with ``check``."""
    rows_finite = torch.isfinite(x).all(dim=-1, keepdim=True)
    if check:
        check_rows_finite(0.0 if bool(rows_finite.all()) else math.inf)
    counts, v_th = spike_count(torch.where(rows_finite, x, 0.0), k, -1, clamp)
    largest = counts.abs().amax(dim=-1, keepdim=True)
    if check and largest.numel():
        _raise_if_flagged(float(largest.max()))
    y = _scaled_matmul(counts, v_th, weight_int8, scales, bias, residual).to(x.dtype)
    return torch.where(rows_finite & (largest <= INT32_MAX), y, float("nan"))


def _raise_if_flagged(largest: float) -> None:
    """Errors flagged in the largest row maximum: a non-finite row (``inf``), counts beyond int32."""
    check_rows_finite(largest)
    if largest > INT32_MAX:
        raise OverflowError(f"a spike count reaches {largest:.3g}, beyond int32; pass clamp= to bound counts")
