"""The spike report: per-layer spike statistics of a model's spiking projections and their energy estimate.

One report type for every model with :class:`sb_layers.SpikingLinear` layers, built in or injected, and
three ways to get one: :func:`record_spikes` runs the model on batches and reports what it recorded (the
report command, the demo, ``sweep_k`` and W8ASpike calibration all use it); :class:`SpikeRecorder` records
around any code (a training step, ``generate``), per call if asked; :func:`spike_report` reads what the
layers have accumulated on their own (``record_stats`` switched on, e.g. ``SpikingConfig(record_stats=True)``).

For every layer the report gives the statistics of the spike counts of its input
(:class:`sb_neurons.SpikeStats` under the layer's codec): firing rate, sparsity, mean spikes per channel,
silent channels and the count histogram, and the layer's multiply-accumulates
``macs = input elements x out_features``.

Weight codes: for a layer with int8 weight groups the report also gives its :class:`WeightCodeStats`, how
many codes ``round(w / scale)`` lie past int8 and the largest ``|code|``: the release's checkpoint keeps
about 1% of its codes past ``[-127, 127]`` (no clamp), which the layers carry exactly
(:meth:`sb_layers.SpikingLinear.int8_codes`). :func:`weight_code_stats` reads them without running the model.

Totals: ``total`` merges the statistics of all layers (exact integer sums); ``by_projection`` merges them
per projection role (the layer name without its ``model.layers.<i>.`` prefix), the shape of the report's
Fig. 9. The energy estimate weights each layer by its MACs, because a spike of an input element triggers
one add per output feature: ``mean spikes per MAC = sum_l spikes_l * out_l / sum_l macs_l``, then the
report's 45 nm model (:func:`sb_neurons.energy_estimate`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from sb_neurons import EnergyEstimate, SpikeStats, energy_estimate

from .spiking_linear import RecordedCounts, SpikingLinear


def spiking_layers(model: nn.Module) -> dict[str, SpikingLinear]:
    """Every :class:`SpikingLinear` of ``model`` (injected or built in), by module name."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {name: module for name, module in model.named_modules() if isinstance(module, SpikingLinear)}


def projection_kind(name: str) -> str:
    """``"model.layers.3.attn.q_proj"`` -> ``"attn.q_proj"``: the projection's role, layer index dropped."""
    return re.sub(r"^model\.layers\.\d+\.", "", name)


def _merged(stats: list[SpikeStats]) -> SpikeStats:
    total = stats[0]
    for more in stats[1:]:
        total = total.merge(more)
    return total


@dataclass(frozen=True)
class WeightCodeStats:
    """A quantized layer's weight codes ``round(w / scale)``: how many, how many past int8 (``|code| > 127``),
    and the largest ``|code|``."""

    codes: int
    past_int8: int
    largest: int

    @property
    def fraction_past_int8(self) -> float:
        return self.past_int8 / self.codes if self.codes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"codes": self.codes, "past_int8": self.past_int8, "largest": self.largest,
                "fraction_past_int8": self.fraction_past_int8}


def layer_weight_codes(layer: SpikingLinear) -> WeightCodeStats | None:
    """The :class:`WeightCodeStats` of ``layer`` (None without weight quantization)."""
    if not isinstance(layer, SpikingLinear):
        raise TypeError(f"layer must be a SpikingLinear, got {type(layer).__name__}")
    if layer.weight_quantizer is None:
        return None
    past, largest = layer.weight_code_stats()
    return WeightCodeStats(layer.in_features * layer.out_features, past, largest)


def weight_code_stats(model: nn.Module) -> dict[str, WeightCodeStats]:
    """:class:`WeightCodeStats` of every spiking layer of ``model`` with weight quantization, by module name."""
    stats = {name: layer_weight_codes(layer) for name, layer in spiking_layers(model).items()}
    return {name: value for name, value in stats.items() if value is not None}


def format_weight_code_stats(stats: Mapping[str, WeightCodeStats]) -> str:
    """One line: how many layers and codes lie past int8 and the largest ``|code|``, then the layers that
    hold such codes (up to five, the largest share first)."""
    if not stats:
        return "no layer with int8 weight codes"
    codes = sum(s.codes for s in stats.values())
    past = sum(s.past_int8 for s in stats.values())
    layers = sorted((name for name, s in stats.items() if s.past_int8), key=lambda n: -stats[n].fraction_past_int8)
    line = (f"weight codes past int8: {past} of {codes} ({past / codes:.3%}) in {len(layers)} of {len(stats)} layers, "
            f"largest |code| {max(s.largest for s in stats.values())}")
    if layers:
        shown = ", ".join(f"{n} {stats[n].fraction_past_int8:.2%} (max {stats[n].largest})" for n in layers[:5])
        line += f"; kept exactly (int8 base + residual), most in: {shown}" + (", ..." if len(layers) > 5 else "")
    return line


@dataclass(frozen=True)
class LayerReport:
    """Spike statistics of one layer's input and the layer's MAC count for the reported batch; for a layer
    with int8 weights, its :class:`WeightCodeStats` (``weight_codes``, else None)."""

    stats: SpikeStats
    in_features: int
    out_features: int
    weight_codes: WeightCodeStats | None = None

    @property
    def macs(self) -> int:
        return self.stats.num_channels * self.out_features

    @property
    def spike_adds(self) -> int:
        """Accumulations the event-driven form performs: one per spike per output feature."""
        return self.stats.total_spikes * self.out_features

    def as_dict(self) -> dict[str, Any]:
        data = {**self.stats.as_dict(), "in_features": self.in_features, "out_features": self.out_features, "macs": self.macs}
        if self.weight_codes is not None:
            data["weight_codes"] = self.weight_codes.as_dict()
        return data


@dataclass(frozen=True)
class SpikingReport:
    """Spike statistics of a model's spiking layers (:func:`SpikingReport.from_layers` builds one).

    Attributes:
        total: all layers' input counts merged (:class:`sb_neurons.SpikeStats`).
        layers: :class:`LayerReport` by module name (empty when the report was built from totals only).
        energy: the energy estimate per MAC; default: from ``layers`` (MAC-weighted spikes), or from
            ``total.mean_spikes_per_channel`` when there are no layers.
        by_projection: statistics per projection role (``"attn.q_proj"``, ``"mlp.up_proj"``, ...), sorted;
            default: ``layers`` merged by :func:`projection_kind`.

    ``total.count_histogram[n]`` is the number of activation channels (token x feature) whose count has
    magnitude n; ``total.mean_spikes_per_channel`` and ``total.silent_channel_fraction`` are the report's
    "mean spikes per channel" (1.13 for the 7B) and "silent channels" (18.4%).
    """

    total: SpikeStats
    layers: dict[str, LayerReport] = field(default_factory=dict)
    energy: EnergyEstimate | None = None
    by_projection: dict[str, SpikeStats] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.total, SpikeStats):
            raise TypeError(f"total must be a SpikeStats, got {type(self.total).__name__}")
        if self.by_projection is None:
            groups: dict[str, list[SpikeStats]] = {}
            for name, layer in self.layers.items():
                groups.setdefault(projection_kind(name), []).append(layer.stats)
            object.__setattr__(self, "by_projection", {kind: _merged(groups[kind]) for kind in sorted(groups)})
        if self.energy is None:
            if self.layers:
                macs = sum(layer.macs for layer in self.layers.values())
                spikes_per_mac = sum(layer.spike_adds for layer in self.layers.values()) / macs if macs else 0.0
            else:
                spikes_per_mac = self.total.mean_spikes_per_channel
            object.__setattr__(self, "energy", energy_estimate(spikes_per_mac))

    @classmethod
    def from_layers(cls, layers: Mapping[str, LayerReport]) -> SpikingReport:
        """The report of ``layers`` (at least one): their merged total, per-projection groups and energy."""
        layers = dict(layers)
        if not layers:
            raise ValueError("a spiking report needs at least one layer's statistics")
        return cls(total=_merged([layer.stats for layer in layers.values()]), layers=layers)

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
            "fraction_at_most_7": self.total.fraction_of_counts_at_most(7),
            "fraction_above_16": 1.0 - self.total.fraction_of_counts_at_most(16),
            "by_projection": {name: stats.as_dict() for name, stats in self.by_projection.items()},
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
        codes = {name: layer.weight_codes for name, layer in self.layers.items() if layer.weight_codes is not None}
        if codes:
            lines.append(format_weight_code_stats(codes))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _report_of(stats: Mapping[str, SpikeStats], layers: Mapping[str, SpikingLinear], weight_codes: bool) -> SpikingReport | None:
    reports = {
        name: LayerReport(stats[name], layer.in_features, layer.out_features, layer_weight_codes(layer) if weight_codes else None)
        for name, layer in layers.items()
        if stats.get(name) is not None
    }
    return SpikingReport.from_layers(reports) if reports else None


def spike_report(model: nn.Module, *, weight_codes: bool = True) -> SpikingReport:
    """The report of what ``model``'s spiking layers have accumulated in their ``spike_stats`` while their
    ``record_stats`` was on; nothing is run. ``weight_codes``: also each quantized layer's
    :class:`WeightCodeStats` (a pass over its weights).

    Raises:
        ValueError: no spiking layer has recorded anything (to run the model and record, use
            :func:`record_spikes` or :class:`SpikeRecorder`).
    """
    if not isinstance(weight_codes, bool):
        raise TypeError(f"weight_codes must be a bool, got {weight_codes!r}")
    layers = spiking_layers(model)
    report = _report_of({name: layer.spike_stats for name, layer in layers.items()}, layers, weight_codes)
    if report is None:
        raise ValueError(
            "no spike statistics recorded in model's spiking layers: record_spikes(model, batches) runs the "
            "model and reports, SpikeRecorder(model) records around any code"
        )
    return report


def reset_spike_stats(model: nn.Module) -> None:
    """Forget what every spiking layer of ``model`` has recorded (each layer's ``reset_spike_stats``)."""
    for layer in spiking_layers(model).values():
        layer.reset_spike_stats()


class SpikeRecorder:
    """Records the spike statistics of every :class:`SpikingLinear` of a model while its context is open:
    the one way to watch a model spike, around a forward, a training step or ``generate``.

    Entering resets every layer's statistics and switches recording on; leaving switches it off and
    gives the layers back the flags and statistics they had, so a recorder never leaves state behind.
    What was recorded stays with the recorder: :meth:`report` (everything so far, inside the context or
    after it) and, with ``per_call=True``, :meth:`call_reports`, one report per forward of ``model``
    (``generate``: the prompt, then one per new token).

    Cost: each spiking layer tallies its counts once per forward (one min/max and one bincount over the
    counts, :class:`sb_neurons.stats.CountTally`); the statistics are derived from the tallies only when
    a report is read. ``benchmarks/bench_recording.py``: 1.23-1.28x a plain forward on this project's
    2-core CPU (an injected Llama-shaped model, hidden 256, 4 x 128 tokens).

    Example::

        with SpikeRecorder(model, per_call=True) as recorder:
            model.generate(ids, max_new_tokens=8)
        print(recorder.report())                        # all steps
        rates = [r.total.firing_rate for r in recorder.call_reports()]   # per token

    Args:
        model: a module with :class:`SpikingLinear` layers (``ValueError`` without one).
        per_call: also keep the statistics of each forward call of ``model`` apart.
    """

    def __init__(self, model: nn.Module, *, per_call: bool = False) -> None:
        layers = spiking_layers(model)
        if not layers:
            raise ValueError("model has no SpikingLinear layers to record (inject_spiking or to_w8aspike first)")
        if not isinstance(per_call, bool):
            raise TypeError(f"per_call must be a bool, got {per_call!r}")
        self.model = model
        self.per_call = per_call
        self._layers = layers
        self._calls: list[dict[str, RecordedCounts]] = []
        self._kept: dict[str, RecordedCounts] = {}
        self._saved: dict[str, tuple[bool, SpikeStats | None]] | None = None
        self._hook = None

    @property
    def recording(self) -> bool:
        return self._saved is not None

    def __enter__(self) -> SpikeRecorder:
        if self.recording:
            raise RuntimeError("this SpikeRecorder is already recording; use a new one to nest")
        self._saved = {name: (layer.record_stats, layer.spike_stats) for name, layer in self._layers.items()}
        self._calls, self._kept = [], {}
        for layer in self._layers.values():
            layer.reset_spike_stats()
            layer.record_stats = True
        if self.per_call:
            self._hook = self.model.register_forward_hook(self._end_of_call)
        return self

    def _take(self) -> dict[str, RecordedCounts]:
        """Every layer's recording so far, unread (summarizing waits for a report), layers reset."""
        return {name: layer.take_recorded() for name, layer in self._layers.items()}

    def _end_of_call(self, module: nn.Module, args: object, output: object) -> None:
        self._calls.append(self._take())

    def __exit__(self, *exc_info: object) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if not self.per_call:
            self._kept = self._take()
        for name, layer in self._layers.items():
            layer.record_stats, layer.spike_stats = self._saved[name]
        self._saved = None

    def _recorded(self) -> dict[str, SpikeStats]:
        if not self.per_call:
            if self.recording:
                return {name: layer.spike_stats for name, layer in self._layers.items() if layer.spike_stats is not None}
            calls = [self._kept]
        else:
            calls = self._calls
        merged: dict[str, SpikeStats] = {}
        for call in calls:
            for name, recorded in call.items():
                stats = recorded.stats()
                if stats is not None:
                    merged[name] = stats if name not in merged else merged[name].merge(stats)
        return merged

    def report(self, *, weight_codes: bool = True) -> SpikingReport:
        """Everything recorded so far (all calls merged, exact integer sums), as a :class:`SpikingReport`;
        ``weight_codes`` as in :func:`spike_report`. ``ValueError`` when nothing was recorded."""
        report = _report_of(self._recorded(), self._layers, weight_codes)
        if report is None:
            raise ValueError("nothing recorded: run the model inside the recorder's context")
        return report

    def call_reports(self) -> list[SpikingReport]:
        """One :class:`SpikingReport` per finished forward call of ``model`` (``per_call=True`` only)."""
        if not self.per_call:
            raise ValueError("call_reports needs SpikeRecorder(model, per_call=True)")
        reports = (_report_of({name: r.stats() for name, r in call.items()}, self._layers, False) for call in self._calls)
        return [report for report in reports if report is not None]


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Calls ``model`` on one batch the way its users do: ``model(**batch)`` for a mapping (a tokenizer's
    output), ``model(*batch)`` for a tuple or list, ``model(batch)`` for a tensor; anything else raises
    ``TypeError``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    if isinstance(batch, torch.Tensor):
        return model(batch)
    raise TypeError(
        "a batch must be a tensor, a tuple/list of model arguments or a dict of keyword arguments; "
        f"got {type(batch).__name__}"
    )


class SpikeRecording(NamedTuple):
    """What :func:`record_spikes` returns: the merged ``report`` and the model's ``outputs``, one per batch."""

    report: SpikingReport
    outputs: list[Any]


def record_spikes(model: nn.Module, batches: Iterable[Any], *, progress: bool = False) -> SpikeRecording:
    """Runs ``model`` on every batch (eval mode, no gradients) inside a :class:`SpikeRecorder` and reports
    what its spiking layers saw, merged over all batches (exact integer sums, as if one batch).

    Args:
        model: a module with :class:`SpikingLinear` layers (injected, built in or :func:`to_w8aspike`'s).
        batches: an iterable of batches, each a tensor (``model(x)``: token ids ``[B, L]`` for a causal
            LM), a tuple/list of arguments or a dict of keyword arguments (a tokenizer's output).
        progress: a tqdm bar over the batches.

    The model's training mode and its layers' ``record_stats`` flags and ``spike_stats`` are what they
    were before the call.

    Raises:
        ValueError: ``batches`` is empty, the model has no spiking layer, or no spiking layer ran.
        TypeError: ``model`` is not a module, or a batch is none of the forms above.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {progress!r}")
    batches = list(batches)
    if not batches:
        raise ValueError("batches must hold at least one batch (a tensor, a tuple/list of arguments or a dict)")
    for index, batch in enumerate(batches):
        # an empty batch would call the model with no input and surface the host library's own message
        if batch.numel() == 0 if isinstance(batch, torch.Tensor) else isinstance(batch, (list, tuple, Mapping)) and not batch:
            raise ValueError(
                f"batches[{index}] is an empty {type(batch).__name__}: a batch is a tensor (model(x)), a tuple/list "
                "of the model's arguments (model(*batch)) or a dict of keyword arguments (model(**batch), e.g. a "
                "tokenizer's output)"
            )
    if not spiking_layers(model):
        raise ValueError("model has no spiking layers: inject_spiking(model, config) or to_w8aspike(model) first")
    was_training = model.training
    try:
        model.eval()
        with SpikeRecorder(model) as recorder, torch.no_grad():
            outputs = [run_batch(model, batch) for batch in tqdm(batches, desc="recording spikes", disable=not progress)]
    finally:
        model.train(was_training)
    try:
        return SpikeRecording(recorder.report(), outputs)
    except ValueError:
        raise ValueError("no spiking layer ran on these batches") from None


__all__ = [
    "LayerReport",
    "SpikeRecorder",
    "SpikeRecording",
    "SpikingReport",
    "WeightCodeStats",
    "format_weight_code_stats",
    "layer_weight_codes",
    "projection_kind",
    "record_spikes",
    "reset_spike_stats",
    "run_batch",
    "spike_report",
    "spiking_layers",
    "weight_code_stats",
]
