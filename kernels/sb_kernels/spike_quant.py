"""Fused adaptive-threshold spike counting per row, :func:`spike_count_rows`: ``x -> (counts, v_th)`` reading
``x`` once (:func:`sb_neurons.spike_quantize` returns the values ``counts * v_th``, this op the counts).

Per row of the last dimension (one token), the same rule as :func:`sb_neurons.spike_count`:

    v_th   = clamp(mean(|x|) / k, 1e-5, 1e4)             float32
    counts = round(x.float() / v_th)                      IEEE division, round half to even
    counts = clamp(counts, low, high)                     only when ``clamp`` is given

Exactness. The kernel computes the correctly rounded quotient ``RN(x / v_th)`` without a division per
element: with ``inv = RN(1 / v_th)`` (one IEEE division per row), ``q = RN(x * inv)`` is within one ulp of
``x / v_th``, the remainder ``x - q * v_th`` is exact in one fused multiply-add and ``RN(q + rem * inv)`` is
``RN(x / v_th)`` (Markstein's theorem; float32 throughout, no underflow where it matters: a quotient
below 1/2 gives count 0 either way). Triton's interpreter divides instead: up to Triton 3.6 it rounds an
fma twice, which moves quotients on a rounding tie (see :func:`sb_kernels.device.quotient_rn`). It then rounds half to even (CUDA's ``cvt.rni``; in Triton's
interpreter an equivalent add-and-subtract of 2**23), so given the same ``v_th`` its counts equal
``torch.round(x.float() / v_th)`` bit for bit. The sum inside ``mean(|x|)``
is taken in a different order than PyTorch's, so ``v_th`` may differ from the reference in its last
bits; tests check counts against ``torch.round(x.float() / v_th_kernel)`` exactly and ``v_th`` against
the reference within float32 rounding.

Counts are unbounded integers (``|count| <= k * D + 1/2`` while ``v_th`` is not clamped at 1e4; bursts
far past 127 happen). They are returned as ``int32`` by default; ``counts_dtype=torch.int16`` or
``torch.int8`` is accepted and checked: a count outside that dtype's range is a ``ValueError``,
never a silent wrap. Counts beyond int32 (only with ``v_th`` clamped at 1e4 and ``|x| > 2**31 * 1e4``)
are an ``OverflowError``.

Statistics (``return_stats=True``) are gathered in the same pass: a histogram of ``|count|`` (per
element, i.e. the ternary coding's spikes per channel), from which :class:`sb_neurons.SpikeStats`
follows exactly; bins past the kernel's last are completed from the few rows that reach them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sb_neurons import SpikeStats, spike_count
from sb_neurons.validation import check_float_tensor, check_positive
from sb_neurons.spike import V_TH_MAX, ClampSpec, resolve_clamp

from .device import quotient_rn, round_half_even
from .dispatch import Backend, lazy_jit, resolve_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = libdevice = None

STATS_BINS = 128  # histogram bins gathered in the kernel: |count| in [0, 126] exact, 127 = "127 or more"
SINGLE_PASS_MAX = 16384  # rows up to this length are held in registers and read once
CHUNK = 4096  # chunk of a longer row (two passes over it, the second mostly from L2)
# With statistics: rows per program, hence per atomic add of its histogram (H100, bfloat16 rows of 3584:
# 0.24 of copy with 1 row, 0.29 with 4 or 16; tl.histogram's own work, not the atomics, bounds the rest).
STATS_ROWS_PER_PROGRAM = 16
COUNTS_DTYPES = (torch.int8, torch.int16, torch.int32)
TRITON_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class QuantizedSpikes(NamedTuple):
    """``counts`` (integer dtype, ``x``'s shape) and ``v_th`` (float32, ``[..., 1]``)."""

    counts: torch.Tensor
    v_th: torch.Tensor


class QuantizedSpikesWithStats(NamedTuple):
    """As :class:`QuantizedSpikes`, plus the ternary-coding :class:`sb_neurons.SpikeStats` of the counts."""

    counts: torch.Tensor
    v_th: torch.Tensor
    stats: SpikeStats


class RowCodes(NamedTuple):
    """Raw kernel output for a 2-d input ``[M, D]``: counts (possibly wrapped to ``counts.dtype``),
    ``v_th [M]`` float32, ``row_max [M]`` float32 (max ``|count|`` of each row, before any wrap;
    ``inf`` for a row holding NaN or Inf, so that callers need no separate pass over ``x``)."""

    counts: torch.Tensor
    v_th: torch.Tensor
    row_max: torch.Tensor


if tl is not None:

    @lazy_jit
    def _spike_quant_kernel(
        x_ptr, counts_ptr, vth_ptr, rowmax_ptr, hist_ptr,
        M, D, width, stride_x, stride_c, k, clamp_low, clamp_high,
        BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr, CLAMP: tl.constexpr,
        STATS: tl.constexpr, NBINS: tl.constexpr, ROWS: tl.constexpr, COMPILED: tl.constexpr,
    ):
        offs = tl.arange(0, BLOCK)
        hist = tl.zeros([NBINS], dtype=tl.int32)
        first_row = tl.program_id(0).to(tl.int64) * ROWS
        # ROWS rows per program, one after the other: with statistics, the program's histogram is
        # added to the global one once per ROWS rows (one atomic per bin and row contends on 128 words).
        for i in range(ROWS):
            row = first_row + i
            if row < M:
                x_row = x_ptr + row * stride_x
                c_row = counts_ptr + row * stride_c
                if SINGLE_PASS:
                    mask = offs < D
                    x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
                    abs_sum = tl.sum(tl.abs(x), axis=0)
                else:
                    acc = tl.zeros([BLOCK], dtype=tl.float32)
                    for start in range(0, D, BLOCK):
                        m = start + offs < D
                        acc += tl.abs(tl.load(x_row + start + offs, mask=m, other=0.0).to(tl.float32))
                    abs_sum = tl.sum(acc, axis=0)

                # A NaN or Inf anywhere in the row makes abs_sum non-finite; flagged through row_max below.
                row_is_finite = abs_sum * 0.0 == 0.0
                # width: D as a float32 argument (exact below 2**24). D itself stays an integer that Triton
                # may specialize (divisibility by 16 lets masked loads vectorize; D = 1 becomes a constant).
                mean_abs = tl.math.div_rn(abs_sum, width)
                v_th = tl.minimum(tl.maximum(tl.math.div_rn(mean_abs, k), 1e-5), 1e4)
                tl.store(vth_ptr + row, v_th)
                # x / v_th correctly rounded (quotient_rn: no division per element when compiled), capped
                # at 2**40 (such counts are far beyond int32 and rejected from row_max).
                inv = tl.math.div_rn(1.0, v_th)

                top = 0.0
                if SINGLE_PASS:
                    n_chunks = 1
                else:
                    n_chunks = tl.cdiv(D, BLOCK)
                for chunk in range(n_chunks):
                    start = chunk * BLOCK
                    m = start + offs < D
                    if SINGLE_PASS:
                        xc = x
                    else:
                        xc = tl.load(x_row + start + offs, mask=m, other=0.0).to(tl.float32)
                    y = quotient_rn(xc, v_th, inv, COMPILED)
                    if CLAMP:
                        # Rounding is monotone and fixes the integer bounds: clamping before it is the same.
                        y = tl.minimum(tl.maximum(y, clamp_low), clamp_high)
                    # Masked lanes hold x = 0, hence y = 0: they change no maximum.
                    top = tl.maximum(top, tl.max(tl.abs(y), axis=0))
                    if COMPILED:
                        # cvt.rni: round half to even and convert in one instruction, saturating past int32
                        # (such rows are rejected from row_max).
                        ci = libdevice.float2int_rn(y)
                    else:
                        r = round_half_even(y, False)
                        # Past int32 the conversion is undefined: saturate as cvt.rni does.
                        ci = tl.minimum(tl.maximum(r, -2147483648.0), 2147483520.0).to(tl.int32)
                        ci = tl.where(r >= 2147483648.0, 2147483647, ci)
                    tl.store(c_row + start + offs, ci.to(counts_ptr.dtype.element_ty), mask=m)
                    if STATS:
                        # max(ci, -NBINS) first: |INT_MIN| does not exist in int32.
                        bins = tl.minimum(tl.abs(tl.maximum(ci, -NBINS)), NBINS - 1)
                        hist += tl.histogram(bins, NBINS)
                        padded = BLOCK - tl.sum(m.to(tl.int32), axis=0)
                        hist -= tl.where(tl.arange(0, NBINS) == 0, padded, 0)
                # max |count| = round(max |y|): rounding is monotone and odd. Capped at 2**40 (a quotient that
                # overflowed float32 is a count past int32, not a non-finite input).
                if COMPILED:
                    top = libdevice.rint(top)
                else:
                    top = tl.where(top < 8388608.0, (top + 8388608.0) - 8388608.0, top)
                top = tl.minimum(top, 1099511627776.0)
                tl.store(rowmax_ptr + row, tl.where(row_is_finite, top, float("inf")))
        if STATS:
            tl.atomic_add(hist_ptr + tl.arange(0, NBINS), hist)


def quantize_rows(
    x2d: torch.Tensor,
    k: float,
    bounds: tuple[int, int] | None,
    counts_dtype: torch.dtype,
    histogram: torch.Tensor | None = None,
    num_warps: int | None = None,
    rows_per_program: int | None = None,
) -> RowCodes:
    """Launch the kernel on a 2-d ``[M, D]`` tensor whose rows are contiguous (no checks).

    ``counts_dtype`` narrower than int32 stores the low bits of each count (two's-complement wrap):
    callers check ``row_max`` or split counts into int8 digits themselves. ``histogram`` (int32
    ``[STATS_BINS]``, zeroed) receives the histogram of ``min(|count|, STATS_BINS - 1)``. ``num_warps``
    (warps per program) and ``rows_per_program`` override the launch configuration (benchmark sweeps);
    neither changes any result.
    """
    rows, width = x2d.shape
    counts = torch.empty((rows, width), dtype=counts_dtype, device=x2d.device)
    v_th = torch.empty(rows, dtype=torch.float32, device=x2d.device)
    row_max = torch.empty(rows, dtype=torch.float32, device=x2d.device)
    if rows == 0:
        return RowCodes(counts, v_th, row_max)
    single = width <= SINGLE_PASS_MAX
    block = triton.next_power_of_2(width) if single else CHUNK
    # H100 sweeps (benchmarks/bench_spike_quant.py): 4 warps per 4096-wide row keep more rows in flight;
    # the chunked path over long rows wants 16 (bfloat16 rows of 18944: 0.87 of copy, 0.77 with 8 warps).
    if num_warps is None:
        if single:
            num_warps = 4 if block <= 4096 else (8 if block <= 8192 else 16)
        else:
            num_warps = 16
    stats = histogram is not None
    if rows_per_program is None:
        rows_per_program = STATS_ROWS_PER_PROGRAM if stats else 1
    low, high = (0.0, 0.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    hist = histogram if stats else v_th  # an unused pointer when STATS is off
    _spike_quant_kernel[(triton.cdiv(rows, rows_per_program),)](
        x2d, counts, v_th, row_max, hist,
        rows, width, float(width), x2d.stride(0), counts.stride(0), float(k), low, high,
        BLOCK=block, SINGLE_PASS=single, CLAMP=bounds is not None,
        STATS=stats, NBINS=STATS_BINS, ROWS=rows_per_program, COMPILED=x2d.is_cuda,
        num_warps=num_warps,
    )
    return RowCodes(counts, v_th, row_max)


def _check_counts_dtype(counts_dtype: object) -> torch.dtype:
    if counts_dtype not in COUNTS_DTYPES:
        raise TypeError(f"counts_dtype must be one of torch.int8, torch.int16, torch.int32; got {counts_dtype!r}")
    return counts_dtype  # type: ignore[return-value]


def check_rows_finite(largest: float) -> None:
    """Raise the error of a non-finite input, flagged by the kernel as an infinite row maximum."""
    if math.isinf(largest) or math.isnan(largest):
        raise ValueError("x contains NaN or Inf; spike coding needs finite values")


def _check_range(row_max: torch.Tensor, counts_dtype: torch.dtype, clamped: bool = False) -> None:
    largest = float(row_max.max()) if row_max.numel() else 0.0
    check_rows_finite(largest)
    if clamped and counts_dtype == torch.int32:
        return  # clamp bounds lie in int32 (float32 row maxima may read 2**31 for 2**31 - 1)
    if largest > 2**31 - 1:
        raise OverflowError(
            f"a spike count reaches {largest:.3g}, beyond int32 (v_th is clamped at {V_TH_MAX:g}); pass clamp= to bound counts"
        )
    info = torch.iinfo(counts_dtype)
    # row_max is max |count|; the negative side has one more value, which this check forgoes.
    if largest > info.max:
        raise ValueError(
            f"counts reach |count| = {int(largest)}, outside counts_dtype={counts_dtype} "
            f"(max {info.max}); use a wider counts_dtype or pass clamp="
        )


def _stats_from_histogram(hist: torch.Tensor, counts: torch.Tensor, row_max: torch.Tensor) -> SpikeStats:
    """Exact ternary :class:`SpikeStats` from the kernel's clipped histogram, completing the last bin
    from the rows whose ``max |count|`` reaches it."""
    full = hist.to(torch.int64).cpu()
    top = STATS_BINS - 1
    tall_rows = (row_max >= top).nonzero().flatten()
    if tall_rows.numel():
        mags = counts[tall_rows].to(torch.int64).abs().flatten()
        tail = mags[mags >= top].cpu()
        full[top] -= tail.numel()
        tail_hist = torch.bincount(tail)
        size = max(full.numel(), tail_hist.numel())
        merged = torch.zeros(size, dtype=torch.int64)
        merged[: full.numel()] += full
        merged[: tail_hist.numel()] += tail_hist
        full = merged
    nonzero = full.nonzero()
    last = int(nonzero.max()) if nonzero.numel() else 0
    full = full[: last + 1]
    channels = int(full.sum())
    total = int((full * torch.arange(full.numel())).sum())
    steps = max(last, 1)
    return SpikeStats(
        time_steps=steps,
        num_channels=channels,
        total_spikes=total,
        spike_slots=channels * steps,
        silent_channels=int(full[0]),
        count_histogram=full,
    )


def _check_rows(x: object) -> None:
    check_float_tensor(x, "x", finite=False)  # finiteness: by spike_count, or by the kernel in its pass
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the row that shares a threshold)")
    if x.shape[-1] == 0:
        raise ValueError("x's last dimension must be non-empty: a threshold needs at least one element")


def spike_count_rows_reference(
    x: torch.Tensor, k: float = 3.0, clamp: ClampSpec = None, counts_dtype: torch.dtype = torch.int32
) -> QuantizedSpikes:
    """The PyTorch reference: :func:`sb_neurons.spike_count` with counts cast to ``counts_dtype``; arguments
    as :func:`spike_count_rows`, checked the same way. The thresholds are taken over a contiguous copy of
    ``x`` (:func:`sb_neurons.adaptive_threshold`): any layout gives its contiguous copy's result."""
    _check_rows(x)
    counts_dtype = _check_counts_dtype(counts_dtype)
    counts, v_th = spike_count(x, k, -1, clamp)
    largest = counts.abs().amax(dim=-1) if counts.numel() else counts.new_zeros(0)
    _check_range(largest.reshape(-1).float(), counts_dtype, clamped=clamp is not None)
    # Through float64: a float32 count of 2**31 (the clamp bound 2**31 - 1 rounded) saturates, not wraps.
    return QuantizedSpikes(counts.detach().double().clamp(-(2**31), 2**31 - 1).to(counts_dtype), v_th.float())


def spike_count_rows(
    x: torch.Tensor,
    k: float = 3.0,
    clamp: ClampSpec = None,
    *,
    backend: Backend = "auto",
    return_stats: bool = False,
    counts_dtype: torch.dtype = torch.int32,
) -> QuantizedSpikes | QuantizedSpikesWithStats:
    """Spike counts of each row of the last dimension, with one adaptive threshold per row.

    Args:
        x: activations ``[..., D]``, float16/bfloat16/float32 (float64 on the torch backend), finite.
        k: ``k > 0``; ``v_th = clamp(mean(|x|) / k, 1e-5, 1e4)``.
        clamp: ``None`` (counts unbounded), a signed bit width, or a ``(low, high)`` range.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).
        return_stats: also return the ternary-coding :class:`sb_neurons.SpikeStats` of the counts,
            gathered in the same pass.
        counts_dtype: ``torch.int32`` (default, holds every count), ``torch.int16`` or ``torch.int8``
            (``ValueError`` if a count does not fit).

    Returns:
        ``(counts, v_th)``: ``counts`` of ``x``'s shape in ``counts_dtype``; ``v_th`` float32 of shape
        ``[..., 1]``; with ``return_stats`` a third field ``stats``. Counts are not differentiable
        (use :func:`sb_neurons.spike_count` for the straight-through gradient).
    """
    # Finiteness is checked by the reference itself, and by the kernel in its single pass.
    check_float_tensor(x, "x", finite=False)
    k = check_positive(k, "k")
    bounds = resolve_clamp(clamp)
    counts_dtype = _check_counts_dtype(counts_dtype)
    if not isinstance(return_stats, bool):
        raise TypeError(f"return_stats must be a bool, got {type(return_stats).__name__}")
    _check_rows(x)
    chosen = resolve_backend(backend, x, op="spike_count_rows")
    if chosen == "triton" and x.dtype not in TRITON_INPUT_DTYPES:
        raise TypeError(f"spike_count_rows: the triton backend takes float16, bfloat16 or float32 x, got {x.dtype}")
    if chosen == "torch":
        counts, v_th = spike_count_rows_reference(x, k, clamp, counts_dtype)
        if not return_stats:
            return QuantizedSpikes(counts, v_th)
        from sb_neurons import spike_stats

        return QuantizedSpikesWithStats(counts, v_th, spike_stats(counts=counts, codec="ternary"))

    x2d = x.detach().reshape(-1, x.shape[-1])
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    hist = torch.zeros(STATS_BINS, dtype=torch.int32, device=x.device) if return_stats else None
    # Counts are stored as int32 first whenever a narrower dtype might wrap, then checked and narrowed.
    codes = quantize_rows(x2d, k, bounds, torch.int32 if counts_dtype != torch.int32 else counts_dtype, hist)
    _check_range(codes.row_max, counts_dtype, clamped=bounds is not None)
    counts = codes.counts.to(counts_dtype).reshape(x.shape)
    v_th = codes.v_th.reshape(*x.shape[:-1], 1)
    if not return_stats:
        return QuantizedSpikes(counts, v_th)
    stats = _stats_from_histogram(hist, codes.counts, codes.row_max)
    return QuantizedSpikesWithStats(counts, v_th, stats)


__all__ = [
    "QuantizedSpikes",
    "QuantizedSpikesWithStats",
    "RowCodes",
    "quantize_rows",
    "spike_count_rows",
    "spike_count_rows_reference",
]
