"""Spike codecs: integer spike counts <-> spike trains over T virtual time steps.

Report §3.3.2 (Eq. 22-23) and the Int2Spike helpers of the release. A codec expands integer counts
``c`` of any shape into a train ``s`` of shape ``[T, *c.shape]`` (time-major, int8) and back:

=========================== ============ ===================================== ==========================
codec                       spike values step weight ``w_t``                     steps needed
=========================== ============ ===================================== ==========================
``binary``                  {0, 1}       1                                     ``max c`` (c >= 0)
``ternary``                 {-1, 0, 1}   1                                     ``max |c|``
``bitwise``                 {0, 1}       ``2^(T-1-t)`` (MSB first)             ``bit_length(max c)``
``bitwise_bidirectional``   {-1, 0, 1}   ``2^(T-1-t)``, bits of ``|c|`` signed ``bit_length(max |c|)``
``bitwise_twos_complement`` {0, 1}       ``-2^(T-1)`` for t = 0, else as above two's complement width >= 2
=========================== ============ ===================================== ==========================

Identity (every codec): ``decode(encode(c, T)) == c`` exactly for every valid ``c`` and every ``T >= min_steps(c)``,
where ``decode(s) = sum_t w_t s_t``. The event-driven matmul follows by linearity:
``sum_t w_t (W s_t) == W c`` (:func:`spike_train_matmul`).

A train always has at least one step: ``min_steps`` of all-zero counts is 1 (2 for two's complement).
A ``T`` too small for the counts raises ``ValueError``; counts are never truncated. Bitwise trains have
at most :data:`MAX_BITWISE_STEPS` = 62 steps (int64 step weights), which bounds their counts to
``|c| < 2^62`` (two's complement: ``-2^61 <= c < 2^61``); larger counts, or a larger ``T``, raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validation import check_float_tensor, check_int, check_integer_valued, check_same_device, check_tensor

CODEC_NAMES = ("binary", "ternary", "bitwise", "bitwise_bidirectional", "bitwise_twos_complement")

# Longest bitwise train: its step weights 2^(T-1-t) and every partial decode sum must fit in int64.
MAX_BITWISE_STEPS = 62


def _bit_length(values: torch.Tensor) -> torch.Tensor:
    """Number of bits of non-negative int64 ``values`` (0 for 0), elementwise, exact for any int64."""
    bits = torch.zeros_like(values)
    remaining = values.clone()
    while bool((remaining > 0).any()):
        nonzero = remaining > 0
        bits += nonzero.to(bits.dtype)
        remaining = remaining >> 1
    return bits


def _as_int64_counts(counts: object) -> torch.Tensor:
    counts = check_integer_valued(counts, "counts")
    if counts.is_floating_point() and counts.numel() and bool((counts.abs() >= 2.0**63).any()):
        # a float-to-int64 cast of such values is undefined (it wraps or saturates by platform)
        raise ValueError("counts must lie within int64 (|counts| < 2^63)")
    return counts.to(torch.int64)


@dataclass(frozen=True)
class Codec:
    """One spike coding scheme. Use :func:`get_codec` to obtain instances."""

    name: str
    signed: bool
    bitwise: bool

    def validate_counts(self, counts: object) -> torch.Tensor:
        """Counts as int64 after checking they are integers this codec can carry."""
        c = _as_int64_counts(counts)
        if c.numel() and bool((c == torch.iinfo(torch.int64).min).any()):
            # -2^63 has no int64 magnitude: |c| would overflow back to itself
            raise ValueError("counts must be > -2^63 (their magnitude must fit in int64)")
        if not self.signed and c.numel() and bool((c < 0).any()):
            raise ValueError(f"counts must be non-negative for the {self.name} codec (it has no negative spikes)")
        return c

    def min_steps(self, counts: object) -> int:
        """Fewest time steps that represent every element of ``counts`` (at least 1)."""
        c = self.validate_counts(counts)
        if c.numel() == 0:
            return 1
        if self.name in ("binary", "ternary"):
            return max(1, int(c.abs().max()))
        if self.name == "bitwise_twos_complement":
            # c >= 0 needs bit_length(c) + 1 bits (a clear sign bit); c < 0 needs bit_length(-c - 1) + 1.
            magnitude = torch.where(c >= 0, c, -c - 1)
            return max(2, int(_bit_length(magnitude).max()) + 1)
        return max(1, int(_bit_length(c.abs()).max()))

    def _check_bitwise_steps(self, T: int) -> None:
        if self.bitwise and T > MAX_BITWISE_STEPS:
            raise ValueError(
                f"T must be <= {MAX_BITWISE_STEPS} for bitwise codecs (int64 step weights), got {T}; "
                f"so counts must satisfy |counts| < 2^{MAX_BITWISE_STEPS} "
                f"(two's complement: -2^{MAX_BITWISE_STEPS - 1} <= counts < 2^{MAX_BITWISE_STEPS - 1})"
            )

    def step_weights(self, T: int, dtype: torch.dtype = torch.int64, device: torch.device | str | None = None) -> torch.Tensor:
        """Weights ``w_t`` with ``decode(s) = sum_t w_t s_t``: shape ``[T]``."""
        check_int(T, "T", minimum=1)
        if not self.bitwise:
            return torch.ones(T, dtype=dtype, device=device)
        self._check_bitwise_steps(T)
        weights = torch.tensor([1 << (T - 1 - t) for t in range(T)], dtype=torch.int64, device=device)
        if self.name == "bitwise_twos_complement":
            weights[0] = -weights[0]
        return weights.to(dtype)

    def encode(self, counts: object, T: int | None = None) -> torch.Tensor:
        """Spike train ``[T, *counts.shape]`` (int8) of integer ``counts``.

        Args:
            counts: integer counts (integer dtype, or a float dtype holding whole numbers, e.g. the
                output of :func:`sb_neurons.spike_count`).
            T: number of steps, ``>= min_steps(counts)``; default ``min_steps(counts)``.
        """
        c = self.validate_counts(counts)
        needed = self.min_steps(c)
        if T is None:
            T = needed
        check_int(T, "T", minimum=1)
        if T < needed:
            raise ValueError(f"T={T} is too small for the {self.name} codec: these counts need T >= {needed}")
        self._check_bitwise_steps(T)  # a train that decode could not read is never produced
        steps = torch.arange(T, device=c.device).view((T,) + (1,) * c.ndim)
        if self.name == "binary":
            train = steps < c
        elif self.name == "ternary":
            train = (steps < c.abs()).to(torch.int8) * torch.sign(c).to(torch.int8)
            return train
        else:
            if self.name == "bitwise_twos_complement":
                magnitude, sign = c & ((1 << T) - 1), None  # two's complement bits of c in T bits
            else:
                magnitude, sign = c.abs(), torch.sign(c).to(torch.int8)
            bits = ((magnitude >> (T - 1 - steps)) & 1).to(torch.int8)
            return bits if sign is None else bits * sign
        return train.to(torch.int8)

    @property
    def spike_values(self) -> tuple[int, ...]:
        """Values a train of this codec holds: (0, 1), or (-1, 0, 1) for ternary and bidirectional."""
        return (-1, 0, 1) if self.signed and self.name != "bitwise_twos_complement" else (0, 1)

    def check_train(self, train: object) -> torch.Tensor:
        """``train`` itself after checking it is ``[T, ...]`` (T >= 1) with values in :attr:`spike_values`."""
        s = check_tensor(train, "train")
        if s.ndim < 1 or s.shape[0] < 1:
            raise ValueError(f"train must have shape [T, ...] with T >= 1, got {tuple(s.shape)}")
        check_integer_valued(s, "train")
        low = self.spike_values[0]
        if s.numel() and (bool((s < low).any()) or bool((s > 1).any())):
            values = "{" + ", ".join(map(str, self.spike_values)) + "}"
            raise ValueError(f"train must hold spikes in {values} for the {self.name} codec")
        return s

    def decode(self, train: object) -> torch.Tensor:
        """Integer counts (int64) of a train ``[T, ...]``: ``sum_t w_t s_t``."""
        s = self.check_train(train).to(torch.int64)
        weights = self.step_weights(s.shape[0], device=s.device).view((-1,) + (1,) * (s.ndim - 1))
        return (weights * s).sum(dim=0)

    def spikes_per_element(self, counts: object, T: int | None = None) -> torch.Tensor:
        """Nonzero spikes each count becomes in a ``T``-step train (int64, shape of ``counts``), without
        expanding it: ``encode(counts, T).ne(0).sum(0)``.

        Binary/ternary: ``|c|``; bitwise and bidirectional: the one bits of ``|c|``; two's complement: the
        one bits of ``c mod 2^T``, which depend on ``T`` (a negative count sign-extends into extra ones).
        ``T`` defaults to :meth:`min_steps` and must be at least that.
        """
        c = self.validate_counts(counts)
        needed = self.min_steps(c)
        T = needed if T is None else check_int(T, "T", minimum=1)
        if T < needed:
            raise ValueError(f"T={T} is too small for the {self.name} codec: these counts need T >= {needed}")
        if not self.bitwise:
            return c.abs()
        self._check_bitwise_steps(T)
        if self.name == "bitwise_twos_complement":
            value = c & ((1 << T) - 1)
        else:
            value = c.abs()
        ones = torch.zeros_like(value)
        while bool((value > 0).any()):
            ones += value & 1
            value = value >> 1
        return ones


_CODECS = {
    "binary": Codec("binary", signed=False, bitwise=False),
    "ternary": Codec("ternary", signed=True, bitwise=False),
    "bitwise": Codec("bitwise", signed=False, bitwise=True),
    "bitwise_bidirectional": Codec("bitwise_bidirectional", signed=True, bitwise=True),
    "bitwise_twos_complement": Codec("bitwise_twos_complement", signed=True, bitwise=True),
}


def get_codec(name: str | Codec) -> Codec:
    """The codec called ``name``, one of :data:`CODEC_NAMES` (a :class:`Codec` passes through)."""
    if isinstance(name, Codec):
        return name
    if name not in _CODECS:
        raise ValueError(f"codec must be one of {', '.join(CODEC_NAMES)}; got {name!r}")
    return _CODECS[name]


def spike_train_matmul(train: torch.Tensor, weight: torch.Tensor, codec: str | Codec) -> torch.Tensor:
    """Event-driven projection: ``sum_t w_t (s_t @ weight.T)``, equal to ``decode(train) @ weight.T``.

    Args:
        train: spikes ``[T, ..., K]`` of ``codec``: an integer dtype (as :meth:`Codec.encode` makes) or a
            floating one holding the spike values.
        weight: ``[N, K]`` floating weight, finite, on ``train``'s device.
        codec: the codec that produced ``train`` (its step weights ``w_t``).

    Returns:
        ``[..., N]`` in ``weight.dtype``. Exact when ``weight`` holds integers representable in its
        dtype and the partial sums stay so (float64 for integer checks). The products are taken over
        contiguous copies of ``train`` and ``weight``: any layout (non-contiguous or expanded views)
        gives, to the bit, the result of its contiguous copy (a matmul's summation order follows strides).
    """
    codec = get_codec(codec)
    s = check_tensor(train, "train")
    check_tensor(weight, "weight")
    check_same_device((("train", s), ("weight", weight)))  # before any value is read
    w = check_float_tensor(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"weight must be [N, K], got shape {tuple(w.shape)}")
    if s.ndim < 2 or s.shape[-1] != w.shape[1]:
        raise ValueError(f"train must be [T, ..., K] with K = weight.shape[1] = {w.shape[1]}, got {tuple(s.shape)}")
    codec.check_train(s)
    s, w = s.contiguous(), w.contiguous()
    step_weights = codec.step_weights(s.shape[0], dtype=w.dtype, device=w.device)
    out = None
    for t in range(s.shape[0]):
        # One step of events: only the columns of W addressed by a spike contribute (an add each).
        contribution = step_weights[t] * (s[t].to(w.dtype) @ w.T)
        out = contribution if out is None else out + contribution
    return out
