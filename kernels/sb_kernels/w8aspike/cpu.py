"""W8ASpike on a CPU in integers: int8 count digits x int8 weight codes, int32 sums, one float scale per group.

The release runs W8ASpike as fake quantization: every forward recomputes ``round(w / s) * s`` in float32
and multiplies float32 activations by it, which on a CPU costs a pass over the float32 weights (4 bytes
each) plus the dequantization itself. Here the same function runs on the integers it is made of:

    counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)                     # one v_th per row m
    y[m, n] = v_th[m] * sum_g scales[n, g] * P[m, n, g] + bias[n]
    P[m, n, g] = sum_{k in group g} counts[m, k] * Q[n, k],    Q = weight_int8 + R (codes past int8)

Every ``P`` is an exact integer; only the scaling rounds (in float32, float64 for float64 ``x``), as on
the Triton path, so the result equals :func:`~sb_kernels.w8aspike.reference.w8aspike_linear_reference`
to float rounding (the bound of ``tests/kernels/test_kernels_w8aspike_cpu.py``: a few units in the last
place of ``v_th * sum_g |s_g P_g|`` per group summed).

How the integers are multiplied:

- Counts past int8 (bursts). A count is ``c = d0 + 256 * r`` with ``d0 = ((c + 128) mod 256) - 128`` in
  int8 (the low digit of :func:`~sb_kernels.w8aspike.reference.split_int8_digits`) and ``r`` non-zero
  only where ``|c| > 127`` (about 1% of counts above 16 in the report, far fewer past 127). The int8
  matmul multiplies ``d0``; the few columns where some row has ``r != 0`` add ``256 * r @ (W * s).T``
  (``W = weight_int8``) in float64, exact for ``|256 r W s| < 2**53``, rounded once into the float32 sum
  (the residual below multiplies the whole counts, so nothing is counted twice).
- Weight codes past int8 (``residual``, CSR): each entry adds ``(R[n, k] * s[n, g]) * c[m, k]`` in the
  scaling precision (as the Triton kernels add theirs), through MKL's sparse matmul on the CSR matrix
  ``R * s``, built once per residual and scales (about 1% of the weights in the release: 0.1 ms for one
  token, 6 ms for 512, on a 4096 x 1536 layer with 1.9% of its codes past int8).
- The int8 products. ``torch._int_mm`` (int8 x int8 -> int32) per group of input columns: on CPUs with
  AVX512-VNNI or AMX it reaches oneDNN's integer GEMM. A group sums at most ``128 * 128 * group`` per
  output, exact in int32 for groups up to :data:`INT32_GROUP_MAX` columns (131071); a wider group (one scale per
  output channel of a very wide layer) is cut into chunks whose int32 sums add in int64. Where
  ``torch._int_mm`` does not run (:func:`int_mm_available` is False: an old torch, a build without it),
  ``matmul="float"`` is the fallback: the same products as a float32 matmul per group, exact while
  ``128 * 128 * group <= 2**24`` (groups up to :data:`FLOAT32_GROUP_MAX` = 1024 columns; wider groups use
  float64, exact below ``2**53``), at the price of a float copy of the group's weights per call.

Why one matmul per group: the scales differ per (output, group), so the group sums cannot be added
before scaling. For a prefill the ``G`` passes of the scaling over ``[M, N]`` sums are done tile by tile
(:func:`_tiles`), so that they stay in cache. Measured on a 2-core AMD EPYC with AVX512-VNNI (torch 2.13,
idle machine, ad-hoc timing): a ``[1, 1024] x [1024, 2816]`` projection took 0.10 ms this way against
0.26 ms in float32, and one token through SpikingBrain-7B's ``gate_proj`` 2.8 ms against 16.5 ms. Whole
models, under load, with the release's fake quantization, bf16 and float32 alongside: docs/performance.md
("W8ASpike on a CPU", ``benchmarks/bench_cpu_w8aspike.py``).
"""

from __future__ import annotations

import math
import warnings
import weakref
from functools import cache
from typing import Literal

import torch

from sb_neurons import spike_count
from sb_neurons.spike import ClampSpec, resolve_clamp
from sb_neurons.validation import check_float_tensor, check_positive

from ..spike_quant import check_rows_finite
from .reference import INT32_MAX, _check_bias, _check_weight_and_scales, _raise_if_flagged, check_residual
from .residual import ResidualCodes

Matmul = Literal["auto", "int_mm", "float"]
MATMULS = ("auto", "int_mm", "float")
# |d0 * code| <= 128 * 128 (a base code of -128 is accepted, though canonical codes stop at -127):
INT32_GROUP_MAX = (2**31 - 1) // (128 * 128)  # 131071 columns sum exactly in int32
FLOAT32_GROUP_MAX = 2**24 // (128 * 128)  # 1024 columns sum exactly in float32 (every partial sum below 2**24)
BURST_COLUMNS_PER_BLOCK = 512  # columns of the burst correction multiplied at once (bounds its float64 copy)


@cache
def int_mm_available() -> bool:
    """Whether ``torch._int_mm`` multiplies int8 CPU tensors here, exactly (probed once, on a small case).

    False on a torch without the op or where it raises for CPU tensors; ``matmul="auto"`` then takes the
    float fallback (see the module docstring)."""
    op = getattr(torch, "_int_mm", None)
    if op is None:
        return False
    a = torch.arange(-64, 64, dtype=torch.int8).reshape(4, 32).repeat(5, 1)  # 20 x 32: past every small-M rule
    b = torch.arange(-128, 128, dtype=torch.int8).reshape(32, 8)
    try:
        got = op(a, b)
    except (RuntimeError, NotImplementedError):
        return False
    return got.dtype == torch.int32 and torch.equal(got.to(torch.int64), a.to(torch.int64) @ b.to(torch.int64))


def resolve_matmul(matmul: object) -> Literal["int_mm", "float"]:
    """The integer-product method ``matmul`` names: ``"int_mm"`` (``torch._int_mm``), ``"float"`` (exact
    float matmuls) or ``"auto"`` (``"int_mm"`` where :func:`int_mm_available`, else ``"float"``).
    ``"int_mm"`` where it does not run raises ``RuntimeError``."""
    if matmul not in MATMULS:
        raise ValueError(f"matmul must be one of {', '.join(map(repr, MATMULS))}, got {matmul!r}")
    if matmul == "auto":
        return "int_mm" if int_mm_available() else "float"
    if matmul == "int_mm" and not int_mm_available():
        raise RuntimeError("w8aspike_linear_cpu: matmul='int_mm' needs torch._int_mm on CPU int8 tensors, which this "
                           f"torch ({torch.__version__}) does not run; use matmul='float' (exact, slower)")
    return matmul


def _group_sums(digits: torch.Tensor, weight: torch.Tensor, group: int, matmul: str):
    """Yield ``(g, P_g)``: ``P_g = digits[g] @ weight[:, group g].T`` exactly, int32 (int64 for groups
    past :data:`INT32_GROUP_MAX`) or an integer-valued float tensor on the float fallback.

    ``digits`` is int8 ``[G, M, group]`` (contiguous per group: oneDNN then reads it without a copy);
    ``weight`` int8 ``[N, K]``, read in place through a transposed view (no copy of the weights)."""
    for g in range(digits.shape[0]):
        left, right = digits[g], weight[:, g * group:(g + 1) * group]
        if matmul == "float":
            dtype = torch.float32 if group <= FLOAT32_GROUP_MAX else torch.float64
            yield g, left.to(dtype) @ right.to(dtype).T
        elif group <= INT32_GROUP_MAX:
            yield g, torch._int_mm(left, right.T)
        else:
            total = None
            for start in range(0, group, INT32_GROUP_MAX):
                part = torch._int_mm(left[:, start:start + INT32_GROUP_MAX].contiguous(),
                                     right[:, start:start + INT32_GROUP_MAX].T).to(torch.int64)
                total = part if total is None else total + part
            yield g, total


TILE_ELEMENTS = 2**18  # outputs per tile: its float32 sums and one group's int32 sums (2 MB) stay in cache
TILE_COLUMNS = 4096


def _tiles(rows: int, cols: int) -> list[tuple[slice, slice]]:
    """Output tiles ``(rows, columns)`` of about :data:`TILE_ELEMENTS` outputs, or one tile when the output is
    that small (a decode step). Why: every group adds its ``[M, N]`` sums into the float sum, and for a
    prefill that is ``G`` passes over ``M x N`` floats; tiled, those passes stay in cache (measured on a
    2-core EPYC: SpikingBrain-7B's gate_proj at 512 tokens, 28 groups)."""
    if rows * cols <= 4 * TILE_ELEMENTS:
        return [(slice(0, rows), slice(0, cols))]
    width = min(cols, TILE_COLUMNS)
    height = max(16, TILE_ELEMENTS // width)
    return [(slice(r, min(r + height, rows)), slice(c, min(c + width, cols)))
            for r in range(0, rows, height) for c in range(0, cols, width)]


def _burst_correction(rest: torch.Tensor, weight: torch.Tensor, scales2d: torch.Tensor, group: int) -> torch.Tensor | None:
    """``256 * rest @ (weight * s).T`` in float64 ``[M, N]`` over the columns where ``rest`` (the high part
    of counts past int8, int64 ``[M, K]``) is non-zero; None when it is zero everywhere."""
    columns = rest.ne(0).any(dim=0).nonzero().flatten()
    if not columns.numel():
        return None
    out = torch.zeros(rest.shape[0], weight.shape[0], dtype=torch.float64)
    for start in range(0, columns.numel(), BURST_COLUMNS_PER_BLOCK):
        block = columns[start:start + BURST_COLUMNS_PER_BLOCK]
        scaled = weight[:, block].to(torch.float64) * scales2d[:, block // group].to(torch.float64)
        out += (rest[:, block] * 256).to(torch.float64) @ scaled.T
    return out


# The CSR matrix R * s of a residual, kept per ResidualCodes object (weakly: it goes with the residual)
# and rebuilt when the scales change (another storage or an in-place update: the version counter).
_SCALED_RESIDUALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scaled_residual(residual: ResidualCodes, scales2d: torch.Tensor, group: int, dtype: torch.dtype) -> torch.Tensor:
    """``R * s`` as a sparse CSR ``[N, K]`` of ``dtype`` (float32, float64 for float64 ``x``)."""
    try:
        key = (scales2d.data_ptr(), scales2d._version, dtype)
    except RuntimeError:  # an inference tensor has no version counter: build it every call
        key = None
    cached = _SCALED_RESIDUALS.get(residual)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    columns = residual.columns.to(torch.int64)
    values = residual.values.to(dtype) * scales2d[residual.rows(), columns // group].to(dtype)
    with warnings.catch_warnings():
        # torch calls its CSR support "beta"; its matmul is MKL's sparse one (20-40x a COO matmul here).
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        # The indices were checked when the ResidualCodes was built: torch's own check is skipped on purpose.
        matrix = torch.sparse_csr_tensor(residual.row_ptr.to(torch.int64), columns, values,
                                         size=(residual.out_features, residual.in_features), check_invariants=False)
    if key is not None:
        _SCALED_RESIDUALS[residual] = (key, matrix)
    return matrix


def w8aspike_linear_cpu(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    residual: ResidualCodes | None = None,
    check: bool = False,
    matmul: Matmul = "auto",
) -> torch.Tensor:
    """W8ASpike linear on CPU tensors with integer products (forward only).

    ``y = v_th * sum_g scales[:, g] * P_g + bias`` with ``P_g = counts_g @ (weight_int8 + R)_g.T`` exact
    integers, ``counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)`` (one threshold per row) and ``R``
    the codes past int8 (``residual``): the function of
    :func:`~sb_kernels.w8aspike.reference.w8aspike_linear_reference`, with only the scaling rounded.

    Args:
        x: activations ``[..., K]`` on the CPU, float16/bfloat16/float32/float64.
        weight_int8: int8 ``[N, K]`` on the CPU (base codes in ``[-127, 127]``; -128 is accepted too).
        scales: float32 ``[N, K // group, 1]`` (``[N, 1, 1]``: one scale per output channel); not scanned
            for NaN / Inf (a NaN scale gives NaN outputs).
        bias: ``[N]`` or None (not scanned either).
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        clamp: ``None`` (counts unbounded, bursts handled exactly), a signed bit width or a ``(low, high)`` range.
        residual: None or the :class:`~sb_kernels.w8aspike.residual.ResidualCodes` of the codes past int8
            (its shape and device are checked; its entries are added exactly, canonical form or not).
        check: ``False``: a row of ``x`` holding NaN or Inf, or whose counts leave int32, gives a NaN
            output row (as the other backends); ``True``: ``ValueError`` / ``OverflowError`` instead.
        matmul: ``"auto"`` (``torch._int_mm`` where it runs, else the float fallback), ``"int_mm"`` or
            ``"float"`` (module docstring).

    Returns:
        ``[..., N]`` in ``x.dtype``, no gradient. Scaling is done in float32 (float64 for float64 ``x``).
    """
    check_float_tensor(x, "x", finite=False)
    k = check_positive(k, "k")
    resolve_clamp(clamp)
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {type(check).__name__}")
    method = resolve_matmul(matmul)
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    for name, tensor in (("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)):
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "cpu":
            raise ValueError(f"w8aspike_linear_cpu: {name} must be a CPU tensor, got one on {tensor.device}")
    # Scales and bias (a layer's stored buffers) are not scanned for NaN / Inf on every call, as on the Triton
    # path: a scan is one more parallel region per call, which a loaded 2-core machine makes cost milliseconds.
    # A NaN scale gives NaN outputs, as a float matmul would.
    cols, width, groups = _check_weight_and_scales(weight_int8, scales, x.shape[-1], check_finite=False)
    bias = _check_bias(bias, cols, check_finite=False)
    # The residual's shape and device are checked, not its canonical form (a host pass over its entries per
    # call): any base + R is multiplied exactly, canonical or not.
    residual = check_residual(residual, weight_int8, canonical=False)
    group = width // groups

    x2d = x.detach().reshape(-1, width)
    rows = x2d.shape[0]
    if rows == 0:
        return x2d.new_empty(0, cols).reshape(*x.shape[:-1], cols)
    rows_finite = torch.isfinite(x2d).all(dim=-1, keepdim=True)
    if check:
        check_rows_finite(0.0 if bool(rows_finite.all()) else math.inf)
    counts, v_th = spike_count(torch.where(rows_finite, x2d, 0.0), k, -1, clamp)
    largest = counts.abs().amax(dim=-1, keepdim=True)
    if check:
        _raise_if_flagged(float(largest.max()))
    usable = rows_finite & (largest <= INT32_MAX)
    # Rows whose counts leave int32 become NaN rows below; zeroed here so that no integer wraps.
    ints = torch.where(usable, counts, 0.0).to(torch.int64)
    low = ((ints + 128) & 255) - 128  # the int8 digit d0; the rest (ints - low) / 256 is non-zero only past 127
    digits = low.to(torch.int8).reshape(rows, groups, group).transpose(0, 1).contiguous()
    compute = v_th.dtype  # float32, float64 for float64 x: the scaling's precision, as the reference
    scales2d = scales.reshape(cols, groups)
    scales_by_group = scales2d.T.to(compute).contiguous()  # [G, N]: one row per group, broadcast over rows
    acc = torch.empty(rows, cols, dtype=compute)
    for row_block, col_block in _tiles(rows, cols):
        tile = torch.zeros(row_block.stop - row_block.start, col_block.stop - col_block.start, dtype=compute)
        for g, sums in _group_sums(digits[:, row_block], weight_int8[col_block], group, method):
            # addcmul_ converts the exact integer sums on the fly (no float copy of P_g): sum_g s_g * P_g.
            tile.addcmul_(sums if sums.dtype in (torch.int32, compute) else sums.to(compute), scales_by_group[g, col_block])
        acc[row_block, col_block] = tile
    extra = _burst_correction((ints - low) >> 8, weight_int8, scales2d, group) if bool((largest > 127).any()) else None
    if extra is not None:
        acc += extra.to(compute)
    if residual is not None:
        # Each entry adds (R * s) * c, rounded in the scaling precision as the Triton kernels add theirs.
        acc += (_scaled_residual(residual, scales2d, group, compute) @ ints.to(compute).T).T
    y = acc * v_th
    if bias is not None:
        y += bias.to(compute)
    return torch.where(usable, y, float("nan")).to(x.dtype).reshape(*x.shape[:-1], cols)


__all__ = ["FLOAT32_GROUP_MAX", "INT32_GROUP_MAX", "MATMULS", "int_mm_available", "resolve_matmul", "w8aspike_linear_cpu"]
