"""Spike statistics: firing rate, sparsity, spikes per channel, silent channels, count histogram.

Definitions (the release's, and the report's Fig. 9). A *channel* is one activation element (one
feature of one token); its train has T steps with values in {-1, 0, 1}, so every nonzero entry is one
spike.

- ``firing_rate = total |spikes| / (channels x T)`` (the release's definition)
- ``sparsity`` = fraction of zero entries of the train, ``1 - firing_rate``
- ``mean_spikes_per_channel = total |spikes| / channels`` (the report's 1.13 for SpikingBrain-7B)
- ``silent_channel_fraction`` = channels that never spike (the report's 18.4%)
- ``count_histogram[n]`` = channels whose decoded ``|count|`` equals ``n``, for ``n = 0 .. max |count|``

Statistics of several batches combine exactly (integer sums) with :meth:`SpikeStats.merge` or
:meth:`SpikeStats.accumulate`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .validation import check_int, check_integer_valued
from .codecs import Codec, get_codec


def _pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    size = max(a.numel(), b.numel())
    out = torch.zeros(size, dtype=torch.int64)
    out[: a.numel()] += a
    out[: b.numel()] += b
    return out


@dataclass(frozen=True)
class SpikeStats:
    """Spike statistics of one tensor, or of several merged. All stored fields are exact integers.

    Fields: ``time_steps`` (T; the largest T of merged parts), ``num_channels`` (activation elements),
    ``total_spikes`` (nonzero train entries), ``spike_slots`` (sum of channels x T over merged parts:
    the firing-rate denominator), ``silent_channels`` (channels with no spike) and ``count_histogram``
    (int64 ``[max |count| + 1]``). Rates and fractions are derived properties.
    """

    time_steps: int
    num_channels: int
    total_spikes: int
    spike_slots: int
    silent_channels: int
    count_histogram: torch.Tensor = field(repr=False)

    @classmethod
    def empty(cls) -> SpikeStats:
        """Statistics of nothing: the neutral element of :meth:`merge`."""
        return cls(0, 0, 0, 0, 0, torch.zeros(1, dtype=torch.int64))

    @classmethod
    def accumulate(cls, parts: Iterable[SpikeStats]) -> SpikeStats:
        """Merge of all ``parts`` (e.g. one per batch); :meth:`empty` when there are none."""
        total = cls.empty()
        for part in parts:
            total = total.merge(part)
        return total

    @property
    def num_elements(self) -> int:
        """Same as ``num_channels``: one channel per activation element."""
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
        """Plain-Python view (JSON-serializable): stored fields and derived rates."""
        return {
            "time_steps": self.time_steps,
            "num_elements": self.num_channels,
            "num_channels": self.num_channels,
            "total_spikes": self.total_spikes,
            "spike_slots": self.spike_slots,
            "silent_channels": self.silent_channels,
            "firing_rate": self.firing_rate,
            "sparsity": self.sparsity,
            "mean_spikes_per_channel": self.mean_spikes_per_channel,
            "silent_channel_fraction": self.silent_channel_fraction,
            "count_histogram": self.count_histogram.tolist(),
        }


HISTOGRAM_SPAN = 2**20  # counts spanning more than this many values are tallied by sorting instead


def _stats_of_counts(c: torch.Tensor, reader: Codec, T: int | None) -> SpikeStats:
    """:class:`SpikeStats` of valid int64 counts ``c`` under ``reader``: the counts are tallied once (how
    many channels hold each value), then every figure comes from the distinct values and their tallies,
    so the work on the channels is one min/max and one bincount (a recorder runs this at every forward)."""
    if c.numel() == 0:
        steps = 1 if T is None else T
        return SpikeStats(steps, 0, 0, 0, 0, torch.zeros(1, dtype=torch.int64))
    flat = c.reshape(-1)
    low, high = (int(v) for v in torch.aminmax(flat))
    if high - low < HISTOGRAM_SPAN:
        values, tally = _present(low, torch.bincount(flat - low))
    else:  # a burst far from the rest: a bincount would span it all
        values, tally = torch.unique(flat, return_counts=True)
        values, tally = values.cpu(), tally.cpu()
    return _stats_of_tally(values, tally, reader.min_steps(values) if T is None else T, reader)


def _present(low: int, tally: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, tallies)`` on the CPU of the values a bincount from ``low`` found at least once."""
    tally = tally.cpu()
    present = tally > 0
    return torch.arange(low, low + tally.numel(), dtype=torch.int64)[present], tally[present]


def _stats_of_tally(values: torch.Tensor, tally: torch.Tensor, steps: int, reader: Codec) -> SpikeStats:
    """:class:`SpikeStats` of ``tally[i]`` channels holding the count ``values[i]`` (distinct int64 values,
    CPU), in trains of ``steps`` steps of ``reader``."""
    spikes = reader.spikes_per_element(values, steps)
    magnitudes = values.abs()
    histogram = torch.zeros(int(magnitudes.max()) + 1, dtype=torch.int64).index_add_(0, magnitudes, tally)
    channels = int(tally.sum())
    return SpikeStats(
        time_steps=steps,
        num_channels=channels,
        total_spikes=int((spikes * tally).sum()),
        spike_slots=channels * steps,
        silent_channels=int(tally[spikes == 0].sum()),
        count_histogram=histogram,
    )


class CountTally:
    """Counts recorded call by call and summarized when read: what a layer recording its input keeps.

    :meth:`add` costs one min/max and one bincount over the counts (no host work beyond two numbers), and
    :meth:`stats` builds the :class:`SpikeStats` of everything added, equal to
    ``spike_stats(counts=c_1, codec).merge(spike_stats(counts=c_2, codec))...`` (each call keeps its own
    ``T``). Counts must be valid for the codec (a layer's own ``spike_count`` output); two's complement
    trains, whose spikes depend on each call's ``T``, are summarized at each :meth:`add` instead.
    """

    def __init__(self, codec: str | Codec) -> None:
        self.reader = get_codec(codec)
        self._calls: list[tuple[int, torch.Tensor, int]] = []  # (lowest count, tally from it, steps)
        self._summarized = SpikeStats.empty()

    def add(self, counts: torch.Tensor) -> None:
        """Record one call's integer-valued ``counts`` (any shape, integer or whole float dtype)."""
        flat = counts.reshape(-1)
        if flat.numel() == 0:
            return
        low, high = (int(v) for v in torch.aminmax(flat))
        if high - low >= HISTOGRAM_SPAN or self.reader.name == "bitwise_twos_complement":
            self._summarized = self._summarized.merge(_stats_of_counts(flat.to(torch.int64), self.reader, None))
            return
        largest = max(abs(low), abs(high))  # the extremes decide T for these codecs (codecs.min_steps)
        steps = max(1, largest.bit_length() if self.reader.bitwise else largest)
        self._calls.append((low, torch.bincount((flat - low).to(torch.int32)), steps))

    def stats(self) -> SpikeStats:
        """The :class:`SpikeStats` of every call added (exact integer sums)."""
        total = self._summarized
        for low, tally, steps in self._calls:
            total = total.merge(_stats_of_tally(*_present(low, tally), steps, self.reader))
        return total


def _histogram(magnitudes: torch.Tensor) -> torch.Tensor:
    flat = magnitudes.reshape(-1).to(torch.int64).cpu()
    if flat.numel() == 0:
        return torch.zeros(1, dtype=torch.int64)
    return torch.bincount(flat, minlength=1)


def spike_stats(
    x: torch.Tensor | None = None,
    T: int | None = None,
    codec: str | Codec | None = None,
    *,
    counts: torch.Tensor | None = None,
    check: bool = True,
) -> SpikeStats:
    """Statistics of a spike train ``x``, or of the train that ``codec`` would make of ``counts``.

    Give exactly one of:
        x: a spike train ``[T, ...]`` (time-major, values in {-1, 0, 1}) of an integer or floating dtype
            (any layout: the statistics are integer sums); ``T``, if given, must equal
            ``x.shape[0]``. ``codec`` says how the train decodes into the counts of the histogram;
            ``None`` reads it with unit step weights (binary/ternary), so pass it for bitwise trains.
        counts: integer counts of any shape (integer dtype or whole floats), keyword only; the train is
            not materialized. ``codec`` defaults to ``"ternary"``; ``T`` defaults to
            ``codec.min_steps(counts)`` and must be at least that.
        check: ``True`` (default) checks that ``counts`` are integers the codec can carry. ``False`` skips
            those passes over the counts, for a caller that made them itself (a layer recording its
            own ``spike_count`` output at every forward); wrong counts then give wrong statistics.

    Returns:
        :class:`SpikeStats` with ``num_channels = x[0].numel()`` (or ``counts.numel()``).
    """
    if (x is None) == (counts is None):
        raise ValueError("give exactly one of x (a spike train [T, ...]) and counts= (integer counts)")
    reader = get_codec("ternary" if codec is None else codec)
    if x is not None:
        s = check_integer_valued(x, "x")  # a real dtype (integer or float) holding whole values
        if s.ndim < 1 or s.shape[0] < 1:
            raise ValueError(f"x must be a spike train [T, ...] with T >= 1, got shape {tuple(s.shape)}")
        if T is not None and check_int(T, "T", minimum=1) != s.shape[0]:
            raise ValueError(f"T={T} disagrees with the train's x.shape[0]={s.shape[0]}; pass counts= for counts")
        try:
            decoded = reader.decode(s)
        except ValueError as error:
            raise ValueError(f"x is not a valid {reader.name} spike train: {error}") from None
        steps = s.shape[0]
        spikes_per_channel = (s != 0).sum(dim=0)
    else:
        if not isinstance(check, bool):
            raise TypeError(f"check must be a bool, got {check!r}")
        c = reader.validate_counts(counts) if check else counts.to(torch.int64)
        if T is not None:
            check_int(T, "T", minimum=1)
        return _stats_of_counts(c, reader, T)
    channels = decoded.numel()
    return SpikeStats(
        time_steps=steps,
        num_channels=channels,
        total_spikes=int(spikes_per_channel.sum()),
        spike_slots=channels * steps,
        silent_channels=int((spikes_per_channel == 0).sum()),
        count_histogram=_histogram(decoded.abs()),
    )
