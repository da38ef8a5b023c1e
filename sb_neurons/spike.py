"""Adaptive-threshold spike counting: the single-step (collapsed) form of SpikingBrain's neuron.

Report Eq. 19-21. An activation row ``x`` (the input of a linear projection) is read as the membrane
potential accumulated over T virtual steps. With the adaptive threshold

    v_th = clamp(mean(|x|, dim) / k, 1e-5, 1e4)        (float32; float64 for float64 input)

the neuron emits the integer spike count

    counts = round(x / v_th)                           (round half to even, as torch.round)

and ``v_th * counts`` replaces ``x`` downstream (Eq. 22: ``y = v_th * W counts``).

Rounding rule. Ties round half to even (IEEE 754 ``roundTiesToEven``, what ``torch.round`` and CUDA's
``rint`` do), and the quotient ``x / v_th`` is the correctly rounded float32 (float64) division. A
kernel reproduces these counts bit for bit when it computes the same ``v_th`` and uses IEEE division and
``rint``; the sum inside ``mean(|x|)`` may differ in its last bits between implementations, so kernels
are checked for equal counts given their own ``v_th``, and for ``v_th`` within float32 rounding.

Identity (unclamped): ``|v_th * counts - x| <= v_th / 2`` elementwise, with equality only at ties.

Clamping is never applied unless asked for: counts are unbounded integers (outliers "burst" far past
127). ``clamp`` takes a signed bit width ``b`` (range ``[-2^(b-1), 2^(b-1) - 1]``) or an explicit
``(low, high)`` pair of integers.

Gradient. Straight-through: ``v_th`` is held constant in the backward pass and the rounding is skipped,
so ``d(v_th * counts)/dx`` is the identity on unclamped elements and zero on clamped ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .validation import check_dim_spec, check_float_tensor, check_int, check_positive, normalize_dims

V_TH_MIN = 1e-5
V_TH_MAX = 1e4

ClampSpec = int | tuple[int, int] | None


def resolve_clamp(clamp: ClampSpec) -> tuple[int, int] | None:
    """Turn a ``clamp`` argument into an inclusive integer range ``(low, high)``, or ``None``.

    ``clamp`` is ``None`` (no clamping), a signed bit width ``b >= 2`` giving
    ``(-2**(b-1), 2**(b-1) - 1)``, or an explicit ``(low, high)`` pair of ints with ``low <= 0 <= high``.
    """
    if clamp is None:
        return None
    if isinstance(clamp, bool):
        raise TypeError("clamp must be None, a bit width (int >= 2) or a (low, high) pair of ints, got bool")
    if isinstance(clamp, int):
        if not 2 <= clamp <= 32:
            raise ValueError(f"clamp as a bit width must be in [2, 32], got {clamp}")
        return -(2 ** (clamp - 1)), 2 ** (clamp - 1) - 1
    if isinstance(clamp, (tuple, list)) and len(clamp) == 2:
        low, high = clamp
        check_int(low, "clamp's low end")
        check_int(high, "clamp's high end")
        if not low <= 0 <= high:
            raise ValueError(f"clamp range must satisfy low <= 0 <= high, got ({low}, {high})")
        return int(low), int(high)
    raise TypeError(f"clamp must be None, a bit width (int >= 2) or a (low, high) pair of ints, got {clamp!r}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every part of the library computes in for inputs of ``dtype``: float64 stays float64
    (the references of the exactness tests), float16, bfloat16 and float32 compute in float32 (the
    thresholds, counts, norms, rotary angles, attention softmax and GLA states of half inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def adaptive_threshold(x: torch.Tensor, k: float = 3.0, dim: int | tuple[int, ...] = -1) -> torch.Tensor:
    """``v_th = clamp(mean(|x|, dim) / k, 1e-5, 1e4)``, kept as size-1 dimensions for broadcasting.

    Args:
        x: floating tensor of any shape (float16, bfloat16, float32 or float64), finite.
        k: firing-rate knob, ``k > 0``: larger k, lower threshold, more spikes.
        dim: dimension(s) averaged over; the default gives one threshold per row (token).

    Returns:
        float32 tensor (float64 for float64 input) of ``x``'s shape with ``dim`` reduced to size 1.
    """
    check_float_tensor(x, "x")
    k = check_positive(k, "k")
    dims = normalize_dims(dim, x.ndim)
    # A contiguous copy first: the reduction then sums in one order whatever x's strides (a
    # non-contiguous or expanded input gives the same thresholds, to the bit, as its contiguous copy).
    mean_abs = x.contiguous().to(compute_dtype(x.dtype)).abs().mean(dim=dims, keepdim=True)
    return (mean_abs / k).clamp(V_TH_MIN, V_TH_MAX)


def pending_threshold(dtype: torch.dtype) -> float:
    """The threshold of a row that has carried no input yet (see :func:`first_input_threshold`):
    ``torch.finfo(dtype).max`` of the input's dtype, finite (a soft reset ``v - v_th * 0`` stays ``v``)
    and out of reach of any potential, so the neuron stays silent."""
    return torch.finfo(dtype).max


def first_input_threshold(
    x_seq: torch.Tensor, k: float = 3.0, dim: int | tuple[int, ...] = -1, v_th: torch.Tensor | None = None
) -> torch.Tensor:
    """The adaptive threshold ``clamp(mean(|x_t|, dim) / k, 1e-5, 1e4)`` of each row's first step that
    carries input (``mean|x_t| > 0``), SpikingBrain's ``threshold="first_step"`` with a silent start.

    Why: a rate-coded or event stream often begins with all-zero steps; ``mean|x_0| / k`` of such a step
    is the 1e-5 floor, under which the neuron would fire at every later step. So a row's threshold is
    set at its first step with input; a row with none so far holds :func:`pending_threshold` (silent) and
    takes its threshold at a later call.

    Args:
        x_seq: ``[T, *step]`` steps, time first (``T >= 1``), floating; rows are the ``dim`` reductions
            of one step.
        k: ``k > 0``: larger k, lower threshold, more spikes.
        dim: dimension(s) of one step ``x_seq[t]`` averaged over (default: the last).
        v_th: the thresholds so far (this function's earlier result) or None at the start of a sequence;
            rows already set keep theirs.

    Returns:
        float32 (float64 for float64 input) ``[*step]`` with ``dim`` reduced to size 1. A caller that
        needs to know whether a row is still pending compares with :func:`pending_threshold`. Raises
        ``ValueError`` for NaN / Inf in ``x_seq`` (one read back to the host).
    """
    check_float_tensor(x_seq, "x_seq")
    if x_seq.ndim < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"x_seq must be [T, *step] with T >= 1, got shape {tuple(x_seq.shape)}")
    k = check_positive(k, "k")
    dims = tuple(d + 1 for d in normalize_dims(dim, x_seq.ndim - 1))
    mean_abs = x_seq.detach().contiguous().to(compute_dtype(x_seq.dtype)).abs().mean(dim=dims, keepdim=True)
    carries = mean_abs > 0
    first = carries.to(torch.int8).argmax(dim=0, keepdim=True)  # the first step with input (0 if none)
    found = (mean_abs.gather(0, first)[0] / k).clamp(V_TH_MIN, V_TH_MAX)
    pending = pending_threshold(x_seq.dtype)
    fresh = torch.where(carries.any(dim=0), found, torch.full_like(found, pending))
    if v_th is None:
        return fresh
    if not isinstance(v_th, torch.Tensor) or v_th.shape != fresh.shape:
        raise ValueError(f"v_th must be a tensor of shape {tuple(fresh.shape)}, got {getattr(v_th, 'shape', type(v_th))}")
    return torch.where(v_th.to(fresh.dtype) == pending, fresh, v_th.to(fresh.dtype))


class _RoundStraightThrough(torch.autograd.Function):
    """round-half-to-even with optional clamp forward; gradient passed through where not clamped."""

    @staticmethod
    def forward(ctx, scaled: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
        counts = torch.round(scaled)
        if low is None:
            ctx.save_for_backward()
            ctx.clamped = False
            return counts
        inside = (counts >= low) & (counts <= high)
        ctx.save_for_backward(inside)
        ctx.clamped = True
        return counts.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.clamped:
            return grad, None, None
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


class SpikeCount(NamedTuple):
    """Result of :func:`spike_count`: integer-valued ``counts`` (float32/float64) and ``v_th``."""

    counts: torch.Tensor
    v_th: torch.Tensor


def spike_count(
    x: torch.Tensor,
    k: float = 3.0,
    dim: int | tuple[int, ...] = -1,
    clamp: ClampSpec = None,
) -> SpikeCount:
    """Spike counts of the adaptive-threshold neuron (Eq. 21): ``counts = round(x / v_th)``.

    Args:
        x: activations ``[..., D]``, float16/bfloat16/float32/float64, finite.
        k: ``k > 0``; ``v_th = mean(|x|, dim) / k`` clamped to ``[1e-5, 1e4]``.
        dim: dimension(s) sharing one threshold (default: the feature dimension, one per row).
        clamp: ``None`` (default, counts unbounded), a signed bit width or a ``(low, high)`` range.

    Returns:
        ``SpikeCount(counts, v_th)``: ``counts`` has ``x``'s shape and holds integers in float32
        (float64 for float64 input); ``v_th`` (detached) has ``x``'s shape with ``dim`` reduced to 1.
        Gradients flow straight through to ``x`` (``d counts / d x = 1 / v_th`` where unclamped).
    """
    # v_th is a constant of the backward pass (straight-through estimator), hence detached.
    v_th = adaptive_threshold(x, k, dim).detach()
    bounds = resolve_clamp(clamp)
    low, high = (None, None) if bounds is None else (float(bounds[0]), float(bounds[1]))
    scaled = x.to(v_th.dtype) / v_th
    return SpikeCount(_RoundStraightThrough.apply(scaled, low, high), v_th)


def clamped_mask(x: torch.Tensor, k: float = 3.0, dim: int | tuple[int, ...] = -1, clamp: ClampSpec = None) -> torch.Tensor:
    """Boolean mask of the elements whose count ``clamp`` would cut (all False when ``clamp`` is None)."""
    bounds = resolve_clamp(clamp)
    v_th = adaptive_threshold(x, k, dim)
    if bounds is None:
        return torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    counts = torch.round(x.to(v_th.dtype) / v_th)
    return (counts < bounds[0]) | (counts > bounds[1])


def spike_quantize(
    x: torch.Tensor, k: float = 3.0, dim: int | tuple[int, ...] = -1, clamp: ClampSpec = None
) -> torch.Tensor:
    """``v_th * round(x / v_th)`` cast back to ``x.dtype``: what a spike-coded projection sees.

    Same arguments as :func:`spike_count`. The gradient is the identity on unclamped elements.
    """
    counts, v_th = spike_count(x, k, dim, clamp)
    return (counts * v_th).to(x.dtype)


class AdaptiveThresholdSpike(nn.Module):
    """Module form of :func:`spike_quantize` (SpikingBrain's activation spiking, single step).

    ``forward(x)`` returns ``v_th * round(x / v_th)`` in ``x.dtype`` (shape of ``x``) with a
    straight-through gradient; :meth:`encode` returns the integer counts and thresholds themselves.

    Args:
        k: ``k > 0``, default 3.0 as released.
        dim: dimension(s) sharing one threshold, default the last.
        clamp: ``None`` (default), a signed bit width, or a ``(low, high)`` range of counts.
    """

    def __init__(self, k: float = 3.0, dim: int | tuple[int, ...] = -1, clamp: ClampSpec = None) -> None:
        super().__init__()
        self.k = check_positive(k, "k")
        self.dim = check_dim_spec(dim)
        resolve_clamp(clamp)
        self.clamp = clamp

    def encode(self, x: torch.Tensor) -> SpikeCount:
        """``SpikeCount(counts, v_th)`` of ``x``; see :func:`spike_count`."""
        return spike_count(x, self.k, self.dim, self.clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts, v_th = self.encode(x)
        return (counts * v_th).to(x.dtype)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}, clamp={self.clamp}"
