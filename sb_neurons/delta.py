"""Temporal-change encoders: delta (on/off events) and sigma-delta (residual feedback).

Both take time-major input ``[T, ...]`` and keep streaming state, so a sequence encoded in pieces
gives the same spikes as encoded at once; :meth:`reset` starts a new sequence.

- :class:`DeltaEncoder` fires +1 where the input rose by at least ``threshold`` since the previous
  step and (with ``off_spike``) -1 where it fell by at least ``threshold``, as snnTorch's
  ``spikegen.delta`` does. It is lossy: it reports changes, not amounts.
- :class:`SigmaDeltaEncoder` emits integer counts ``q_t = round((x_t - r_{t-1}) / threshold)`` where
  ``r`` is its own reconstruction ``threshold * L_{t-1}``, ``L_{t-1} = sum_{i<t} q_i``. Feeding back the
  reconstruction, not the input, is what prevents drift: ``|x_t - r_t| <= threshold / 2`` at every step,
  however long the sequence; and ``r_t == x_t`` exactly when inputs are integer multiples of
  ``threshold``. Because ``L`` is an integer, ``round(x_t / threshold - L_{t-1}) = round(x_t / threshold)
  - L_{t-1}``: the feedback loop has the closed form ``L_t = round(x_t / threshold)``,
  ``q_t = L_t - L_{t-1}``, which is how it is computed (vectorized over T, exact integer state, and no
  accumulated float error: each step's error is that of one division and one rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from .validation import FLOAT_DTYPES, check_float_tensor, check_integer_valued, check_positive


_MAX_LEVEL = 2.0**62


def _check_sequence(x: object, name: str, state: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` must be a finite float ``[T, ...]`` (T >= 1) whose steps match the carried ``state``."""
    x = check_float_tensor(x, name)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape [T, ...] with T >= 1, got {tuple(x.shape)}")
    if state is not None and tuple(state.shape) != tuple(x.shape[1:]):
        raise ValueError(
            f"{name} has steps of shape {tuple(x.shape[1:])}, but the encoder carries state of shape "
            f"{tuple(state.shape)} from the previous call; call reset() to start a new sequence"
        )
    return x


class DeltaEncoder(nn.Module):
    """On/off spikes on temporal change of at least ``threshold`` (> 0).

    Args:
        threshold: smallest change that fires.
        off_spike: also fire -1 on decreases (otherwise only +1 on increases).
        padding: compare the very first step with itself (no spike) instead of with zeros.

    ``forward(x [T, ...]) -> spikes [T, ...]`` in ``x.dtype`` with values in {-1, 0, 1}.
    """

    def __init__(self, threshold: float = 0.1, off_spike: bool = True, padding: bool = False) -> None:
        super().__init__()
        self.threshold = check_positive(threshold, "threshold")
        self.off_spike = bool(off_spike)
        self.padding = bool(padding)
        self.previous: torch.Tensor | None = None

    def reset(self) -> None:
        self.previous = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_sequence(x, "x", self.previous)
        if self.previous is None:
            first = x[:1] if self.padding else torch.zeros_like(x[:1])
        else:
            first = self.previous.unsqueeze(0)
        change = x - torch.cat([first, x[:-1]], dim=0)
        spikes = (change >= self.threshold).to(x.dtype)
        if self.off_spike:
            spikes = spikes - (change <= -self.threshold).to(x.dtype)
        self.previous = x[-1].detach()
        return spikes

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, off_spike={self.off_spike}, padding={self.padding}"


class SigmaDeltaEncoder(nn.Module):
    """Sigma-delta modulation into integer counts of ``threshold`` (> 0), with exact integer state.

    ``forward(x [T, ...]) -> counts [T, ...]`` (int64, any float ``x``; computed in float32, float64 for
    float64 input); :meth:`decode` turns counts back into the reconstruction
    ``threshold * cumsum(counts)``. State: ``level`` (int64 ``[...]``), the sum of all counts emitted
    since :meth:`reset`, exact, so the reconstruction never drifts and pieces encode like the whole.
    """

    def __init__(self, threshold: float = 0.1) -> None:
        super().__init__()
        self.threshold = check_positive(threshold, "threshold")
        self.level: torch.Tensor | None = None  # int64 sum of all counts emitted so far

    def reset(self) -> None:
        self.level = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_sequence(x, "x", self.level)
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        scaled = torch.round(x.detach().to(compute) / self.threshold)
        if bool((scaled.abs() > _MAX_LEVEL).any()):
            raise ValueError(f"x / threshold must stay within +-2^62 (int64 counts); threshold={self.threshold} is too small for x")
        levels = scaled.to(torch.int64)
        previous = torch.zeros_like(levels[:1]) if self.level is None else self.level.unsqueeze(0)
        self.level = levels[-1]
        return torch.diff(levels, dim=0, prepend=previous)

    def decode(self, counts: torch.Tensor, level: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Reconstruction ``threshold * (level + cumsum(counts))``, ``[T, ...]`` in ``dtype``.

        Args:
            counts: integer counts ``[T, ...]`` as :meth:`forward` returns them.
            level: integer state to continue from (the encoder's ``level`` before these counts); 0 if None.
            dtype: floating dtype of the result; the product is formed in float64, then cast.
        """
        counts = check_integer_valued(counts, "counts").to(torch.int64)
        if counts.ndim < 1 or counts.shape[0] < 1:
            raise ValueError(f"counts must have shape [T, ...] with T >= 1, got {tuple(counts.shape)}")
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be a floating dtype among {FLOAT_DTYPES}, got {dtype}")
        running = counts.cumsum(dim=0)
        if level is not None:
            running = running + check_integer_valued(level, "level").to(torch.int64)
        return (running.to(torch.float64) * self.threshold).to(dtype)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"
