"""spiking_report: per-layer spike statistics and the energy estimate of one forward pass.

For every :class:`sb_layers.SpikingLinear` of the model (injected or built in) the report gives the
statistics of the spike counts of its input (:class:`sb_neurons.SpikeStats` under the layer's codec):
firing rate, sparsity, mean spikes per channel, silent channels and the count histogram, and the layer's
multiply-accumulates ``macs = input elements x out_features``.

Totals: ``total`` merges the statistics of all layers (exact integer sums). The energy estimate
weights each layer by its MACs, because a spike of an input element triggers one add per output
feature: ``mean spikes per MAC = sum_l spikes_l * out_l / sum_l macs_l``, then the report's 45 nm model
(:func:`sb_neurons.energy_estimate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sb_layers import SpikingLinear
from sb_neurons import EnergyEstimate, SpikeStats, energy_estimate

from ._batches import run_batch


@dataclass(frozen=True)
class LayerReport:
    """Spike statistics of one layer's input and the layer's MAC count for the reported batch."""

    stats: SpikeStats
    in_features: int
    out_features: int

    @property
    def macs(self) -> int:
        return self.stats.num_channels * self.out_features

    @property
    def spike_adds(self) -> int:
        """Accumulations the event-driven form performs: one per spike per output feature."""
        return self.stats.total_spikes * self.out_features

    def as_dict(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), "in_features": self.in_features, "out_features": self.out_features, "macs": self.macs}


@dataclass(frozen=True)
class SpikingReport:
    """Result of :func:`spiking_report`: ``layers`` by module name, merged ``total``, ``energy`` per MAC."""

    layers: dict[str, LayerReport]
    total: SpikeStats
    energy: EnergyEstimate

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers.values())

    def energy_pj(self) -> dict[str, float]:
        """Energy of the reported forward pass in pJ: spiking vs FP16 vs INT8 arithmetic."""
        return self.energy.total_pj(self.total_macs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (plain numbers and lists)."""
        return {
            "layers": {name: layer.as_dict() for name, layer in self.layers.items()},
            "total": self.total.as_dict(),
            "total_macs": self.total_macs,
            "energy_pj_per_mac": {
                "spiking": self.energy.spiking_pj_per_mac,
                "fp16": self.energy.fp16_pj_per_mac,
                "int8": self.energy.int8_pj_per_mac,
            },
            "saving_vs_fp16": self.energy.saving_vs_fp16,
            "saving_vs_int8": self.energy.saving_vs_int8,
        }

    def format(self, histogram_bins: int = 8) -> str:
        """A readable table: one row per layer, a total row, the energy summary and the count histogram."""
        width = max([len("layer"), len("total"), *(len(name) for name in self.layers)])
        header = f"{'layer':<{width}}  {'firing':>7}  {'sparsity':>8}  {'spikes/ch':>9}  {'silent':>7}  {'T':>3}  {'MACs':>10}"
        lines = [header, "-" * len(header)]

        def row(name: str, stats: SpikeStats, macs: int) -> str:
            return (
                f"{name:<{width}}  {stats.firing_rate:>7.3f}  {stats.sparsity:>8.3f}  {stats.mean_spikes_per_channel:>9.3f}"
                f"  {stats.silent_channel_fraction:>6.1%}  {stats.time_steps:>3d}  {macs:>10d}"
            )

        lines += [row(name, layer.stats, layer.macs) for name, layer in self.layers.items()]
        lines += ["-" * len(header), row("total", self.total, self.total_macs)]
        e = self.energy
        lines.append(
            f"energy per MAC: spiking {e.spiking_pj_per_mac:.4f} pJ ({e.mean_spikes_per_channel:.3f} spikes/MAC), "
            f"FP16 {e.fp16_pj_per_mac} pJ ({e.saving_vs_fp16:.1%} less), INT8 {e.int8_pj_per_mac} pJ ({e.saving_vs_int8:.1%} less)"
        )
        channels = max(self.total.num_channels, 1)
        histogram = self.total.count_histogram.tolist()
        shown = ", ".join(f"{n}: {count / channels:.1%}" for n, count in enumerate(histogram[:histogram_bins]))
        rest = sum(histogram[histogram_bins:]) / channels
        lines.append(f"|count| histogram: {shown}" + (f", >={histogram_bins}: {rest:.1%}" if rest else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def spiking_report(model: nn.Module, inputs: Any) -> SpikingReport:
    """Run ``model`` once on ``inputs`` (no gradients, eval mode) and report its spiking layers.

    Args:
        model: a module with :class:`SpikingLinear` layers (for example after ``inject_spiking``).
        inputs: one batch: a tensor (``model(x)``), a tuple/list (``model(*inputs)``) or a dict
            (``model(**inputs)``, e.g. a tokenizer's output).

    The layers' own ``record_stats`` flags, accumulated ``spike_stats`` and the model's training mode
    are restored afterwards.

    Raises:
        ValueError: the model has no spiking layer, or no spiking layer ran on these inputs.
    """
    report, _ = record_batches(model, [inputs])
    return report


def record_batches(model: nn.Module, batches: list[Any]) -> tuple[SpikingReport, list[Any]]:
    """Run ``model`` on every batch (no gradients, eval mode): the spiking report merged over all of
    them (exact integer sums, as if one batch) and the model's outputs, batch by batch.

    Same restoring guarantees and errors as :func:`spiking_report`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SpikingLinear)}
    if not layers:
        raise ValueError("model has no spiking layers: call inject_spiking(model, config) first")
    saved = {name: (m.record_stats, m.spike_stats) for name, m in layers.items()}
    was_training = model.training
    outputs = []
    try:
        for m in layers.values():
            m.record_stats = True
            m.reset_spike_stats()
        model.eval()
        with torch.no_grad():
            outputs = [run_batch(model, batch) for batch in batches]
        collected = {name: m.spike_stats for name, m in layers.items()}
    finally:
        model.train(was_training)
        for name, m in layers.items():
            m.record_stats, m.spike_stats = saved[name]
    reports = {
        name: LayerReport(stats, layers[name].in_features, layers[name].out_features)
        for name, stats in collected.items()
        if stats is not None
    }
    if not reports:
        raise ValueError("no spiking layer ran on these inputs")
    parts = list(reports.values())
    total = parts[0].stats
    for layer in parts[1:]:
        total = total.merge(layer.stats)
    macs = sum(layer.macs for layer in parts)
    spikes_per_mac = sum(layer.spike_adds for layer in parts) / macs if macs else 0.0
    return SpikingReport(layers=reports, total=total, energy=energy_estimate(spikes_per_mac)), outputs
