"""Spike statistics: firing rate, sparsity, spikes per channel, silent channels, count histogram.

Definitions (the release's, and the report's Fig. 9). A *channel* is one activation element (one
feature of one token); its train has T steps.

- ``firing_rate = total |spikes| / (channels x T)``
- ``sparsity`` = fraction of zero entries of the train (``1 - firing_rate`` for {-1, 0, 1} trains)
- ``mean_spikes_per_channel = total |spikes| / channels`` (the report's 1.13 for SpikingBrain-7B)
- ``silent_channel_fraction`` = channels that never spike (the report's 18.4%)
- ``count_histogram[n]`` = channels whose decoded ``|count|`` equals ``n``

Statistics of several batches combine exactly with :meth:`SpikeStats.merge`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._validation import check_int, check_integer_valued, check_tensor
from .codecs import Codec, get_codec


def _pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(a.numel(), b.numel())
    out = torch.zeros(size, dtype=torch.int64)
    out[: a.numel()] += a
    out[: b.numel()] += b
    return out


@dataclass(frozen=True)
class SpikeStats:
    """Spike statistics of one tensor, or of several merged. All counts are exact integers."""

    time_steps: int
    num_channels: int
    total_spikes: int
    spike_slots: int  # sum over merged parts of channels x T: the firing-rate denominator
    silent_channels: int
    count_histogram: torch.Tensor = field(repr=False)  # int64 [max|count| + 1]

    @property
    def num_elements(self) -> int:
        return self.num_channels

    @property
    def firing_rate(self) -> float:
        return self.total_spikes / self.spike_slots if self.spike_slots else 0.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.firing_rate

    @property
    def mean_spikes_per_channel(self) -> float:
        return self.total_spikes / self.num_channels if self.num_channels else 0.0

    @property
    def silent_channel_fraction(self) -> float:
        return self.silent_channels / self.num_channels if self.num_channels else 0.0

    def fraction_of_counts_at_most(self, n: int) -> float:
        """Share of channels with ``|count| <= n`` (the report: 94.1% within [0, 7])."""
        check_int(n, "n", minimum=0)
        return float(self.count_histogram[: n + 1].sum()) / self.num_channels if self.num_channels else 0.0

    def merge(self, other: SpikeStats) -> SpikeStats:
        """Statistics of the union of both inputs (``time_steps`` becomes the larger T)."""
        if not isinstance(other, SpikeStats):
            raise TypeError(f"other must be SpikeStats, got {type(other).__name__}")
        return SpikeStats(
            time_steps=max(self.time_steps, other.time_steps),
            num_channels=self.num_channels + other.num_channels,
            total_spikes=self.total_spikes + other.total_spikes,
            spike_slots=self.spike_slots + other.spike_slots,
            silent_channels=self.silent_channels + other.silent_channels,
            count_histogram=_pad_add(self.count_histogram, other.count_histogram),
        )

    def as_dict(self) -> dict[str, float | int | list[int]]:
        return {
            "time_steps": self.time_steps,
            "num_channels": self.num_channels,
            "total_spikes": self.total_spikes,
            "firing_rate": self.firing_rate,
            "sparsity": self.sparsity,
            "mean_spikes_per_channel": self.mean_spikes_per_channel,
            "silent_channel_fraction": self.silent_channel_fraction,
            "count_histogram": self.count_histogram.tolist(),
        }


def _histogram(magnitudes: torch.Tensor) -> torch.Tensor:
    flat = magnitudes.reshape(-1).to(torch.int64).cpu()
    if flat.numel() == 0:
        return torch.zeros(1, dtype=torch.int64)
    return torch.bincount(flat, minlength=1)


def spike_stats(
    train: torch.Tensor | None = None,
    *,
    counts: torch.Tensor | None = None,
    codec: str | Codec = "ternary",
    T: int | None = None,
) -> SpikeStats:
    """Statistics of a spike train, or of the train that ``codec`` would make of ``counts``.

    Give exactly one of:
        train: spikes ``[T, ...]`` (time-major) of ``codec``; ``T`` must then be ``None``.
        counts: integer counts of any shape; the train is not materialized. ``T`` defaults to
            ``codec.min_steps(counts)`` and must be at least that.

    ``codec`` (default ``"ternary"``) tells how a train decodes into the counts of the histogram.
    """
    codec = get_codec(codec)
    if (train is None) == (counts is None):
        raise ValueError("give exactly one of train and counts")
    if train is not None:
        if T is not None:
            raise ValueError("T must be None when a train is given: it is train.shape[0]")
        s = check_tensor(train, "train")
        decoded = codec.decode(s)
        steps = s.shape[0]
        nonzero = s != 0
        spikes_per_channel = nonzero.sum(dim=0)
        total = int(nonzero.sum())
    else:
        c = codec.validate_counts(check_integer_valued(counts, "counts"))
        needed = codec.min_steps(c)
        steps = needed if T is None else check_int(T, "T", minimum=1)
        if steps < needed:
            raise ValueError(f"T={steps} is too small for the {codec.name} codec: these counts need T >= {needed}")
        if codec.name == "bitwise_twos_complement" and steps != needed:
            raise ValueError("T must equal min_steps(counts) for bitwise_twos_complement statistics from counts")
        decoded = c
        spikes_per_channel = codec.spikes_per_element(c)
        total = int(spikes_per_channel.sum())
    channels = decoded.numel()
    return SpikeStats(
        time_steps=steps,
        num_channels=channels,
        total_spikes=total,
        spike_slots=channels * steps,
        silent_channels=int((spikes_per_channel == 0).sum()),
        count_histogram=_histogram(decoded.abs()),
    )
