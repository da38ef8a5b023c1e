"""sweep_k: the accuracy / energy trade-off of the adaptive threshold's ``k``, measured on a model.

``k`` sets the threshold ``v_th = mean|x| / k``: a larger ``k`` codes activations more finely (closer to the
dense model) with more spikes (more energy). :func:`sweep_k` injects the model once per ``k`` and, on the
same batches, measures

- agreement with the dense model: the largest absolute and the relative (Frobenius) error of the output
  tensor (``logits``, else ``last_hidden_state``, else the output itself), the mean cosine similarity of its
  rows (last dimension), and, for logits, the top-1 agreement (fraction of positions whose argmax is kept);
- the spiking cost: firing rate, mean spikes per channel, silent channels (merged over every spiking
  layer and batch, exactly as :func:`sb_layers.record_spikes`) and the energy per MAC of the
  report's 45 nm model with its saving against FP16 and INT8 MACs.

The result is data (:class:`KSweep`, ``as_dict()`` for JSON), a table (``format()``) and a plot
(``plot(path)``: error and agreement against ``k``, and error against energy per MAC, each point labelled
with its ``k``). Error falls and energy rises as ``k`` grows, so there is no single best ``k``: there is a
trade-off, and :meth:`KSweep.recommend` picks the point on it that a bound asks for, the lowest energy per
MAC whose agreement is good enough (``plot(recommended=...)`` marks it, with the INT8 MAC energy, where
spiking stops paying against int8 arithmetic).

The model is left as it was given: dense, with its training mode (every injection is undone, also on error).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import SpikingConfig
from .injector import check_dense_model, inject_spiking, unload_spiking
from sb_layers.report import record_spikes, run_batch
from sb_neurons.validation import check_positive

DEFAULT_KS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)


@dataclass(frozen=True)
class SweepPoint:
    """Agreement with the dense model and spiking cost at one ``k`` (see the module docstring)."""

    k: float
    max_abs_error: float
    relative_error: float
    cosine_similarity: float
    top1_agreement: float | None
    firing_rate: float
    mean_spikes_per_channel: float
    silent_channel_fraction: float
    energy_pj_per_mac: float
    saving_vs_fp16: float
    saving_vs_int8: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KSweep:
    """Result of :func:`sweep_k`: one :class:`SweepPoint` per ``k``, in increasing ``k``."""

    points: tuple[SweepPoint, ...]
    config: SpikingConfig
    output_name: str

    @property
    def ks(self) -> list[float]:
        return [p.k for p in self.points]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form: the base config, the output compared, and the points."""
        return {"config": self.config.to_dict(), "output": self.output_name, "points": [p.as_dict() for p in self.points]}

    def recommend(self, max_relative_error: float | None = None, min_top1_agreement: float | None = None) -> SweepPoint:
        """The cheapest point (lowest energy per MAC) that meets every given bound.

        Raises:
            ValueError: no bound given, a bound out of range, top-1 asked of a non-logit output, or no
                point meets the bounds (the message names the best error and agreement reached).
        """
        if max_relative_error is None and min_top1_agreement is None:
            raise ValueError("give max_relative_error and/or min_top1_agreement")
        if max_relative_error is not None and not max_relative_error >= 0:
            raise ValueError(f"max_relative_error must be >= 0, got {max_relative_error!r}")
        if min_top1_agreement is not None:
            if not 0.0 <= min_top1_agreement <= 1.0:
                raise ValueError(f"min_top1_agreement must be in [0, 1], got {min_top1_agreement!r}")
            if self.points[0].top1_agreement is None:
                raise ValueError(f"min_top1_agreement needs logits; this sweep compared {self.output_name!r}")
        good = [
            p
            for p in self.points
            if (max_relative_error is None or p.relative_error <= max_relative_error)
            and (min_top1_agreement is None or p.top1_agreement >= min_top1_agreement)
        ]
        if not good:
            best_error = min(p.relative_error for p in self.points)
            best_top1 = max((p.top1_agreement or 0.0) for p in self.points)
            raise ValueError(
                f"no k in {self.ks} meets the bounds (best relative error {best_error:.4g}, best top-1 "
                f"agreement {best_top1:.4g}): try larger k, or keep sensitive layers dense"
            )
        return min(good, key=lambda p: (p.energy_pj_per_mac, p.k))

    def format(self) -> str:
        """A readable table, one row per ``k``."""
        header = (
            f"{'k':>6}  {'max|err|':>9}  {'rel.err':>8}  {'cosine':>7}  {'top-1':>6}  {'firing':>7}  "
            f"{'spk/ch':>7}  {'silent':>7}  {'pJ/MAC':>7}  {'vs FP16':>7}  {'vs INT8':>7}"
        )
        lines = [f"k sweep against the dense model ({self.output_name})", header, "-" * len(header)]
        for p in self.points:
            top1 = "-" if p.top1_agreement is None else f"{p.top1_agreement:.3f}"
            lines.append(
                f"{p.k:>6g}  {p.max_abs_error:>9.3g}  {p.relative_error:>8.4f}  {p.cosine_similarity:>7.4f}  {top1:>6}  "
                f"{p.firing_rate:>7.4f}  {p.mean_spikes_per_channel:>7.3f}  {p.silent_channel_fraction:>6.1%}  "
                f"{p.energy_pj_per_mac:>7.4f}  {p.saving_vs_fp16:>6.1%}  {p.saving_vs_int8:>6.1%}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def plot(self, path: str | Path | None = None, *, recommended: SweepPoint | None = None):
        """Draw the trade-off; returns the matplotlib ``Figure`` (saved to ``path`` when given).

        Left: relative error (log scale) and top-1 agreement against ``k``. Right: relative error against
        the energy per MAC, each point labelled with its ``k``, and the INT8 MAC energy (0.23 pJ) as a
        vertical line: the break-even past which an int8 multiply-accumulate would cost less (FP16's 1.5
        pJ is off to the right; the dense model's error is 0). ``recommended`` (a point of this sweep,
        e.g. :meth:`recommend`'s) is circled on both panels.
        """
        if recommended is not None and recommended not in self.points:
            raise ValueError("recommended must be one of this sweep's points (e.g. sweep.recommend(...))")
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

        figure = Figure(figsize=(10, 4), layout="constrained")
        left, right = figure.subplots(1, 2)
        ks = self.ks
        errors = [max(p.relative_error, 1e-12) for p in self.points]
        left.plot(ks, errors, "o-", color="C0", label="relative error")
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_xlabel("k (threshold = mean|x| / k)")
        left.set_ylabel("relative error vs dense", color="C0")
        if self.points[0].top1_agreement is not None:
            twin = left.twinx()
            twin.plot(ks, [p.top1_agreement for p in self.points], "s--", color="C1")
            twin.set_ylabel("top-1 agreement", color="C1")
            twin.set_ylim(0.0, 1.05)
        left.set_title("agreement with the dense model")
        energy = [p.energy_pj_per_mac for p in self.points]
        right.plot(energy, errors, "o-", color="C2")
        for p, x, y in zip(self.points, energy, errors, strict=True):
            right.annotate(f"k={p.k:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        int8 = self.points[0].energy_pj_per_mac / (1.0 - self.points[0].saving_vs_int8) if self.points[0].saving_vs_int8 < 1 else None
        if int8 is not None:
            right.axvline(int8, color="tab:red", ls=":", label=f"INT8 MAC ({int8:.2f} pJ): break-even")
        if recommended is not None:
            error = max(recommended.relative_error, 1e-12)
            left.scatter([recommended.k], [error], s=160, facecolors="none", edgecolors="k", zorder=3, label=f"recommended k={recommended.k:g}")
            right.scatter([recommended.energy_pj_per_mac], [error], s=160, facecolors="none", edgecolors="k", zorder=3,
                          label=f"recommended k={recommended.k:g}")
            left.legend(loc="lower left", fontsize=8)
        right.legend(loc="upper right", fontsize=8)
        right.set_yscale("log")
        right.set_xlabel("energy per MAC (pJ, 45 nm model)")
        right.set_ylabel("relative error vs dense")
        right.set_title("accuracy / energy trade-off")
        if path is not None:
            figure.savefig(path, dpi=120)
        return figure


def output_tensor(output: Any) -> tuple[str, torch.Tensor]:
    """``(name, tensor)`` compared by :func:`sweep_k`: ``logits``, else ``last_hidden_state``, else the
    output itself (a tensor) or its first element (a tuple)."""
    for name in ("logits", "last_hidden_state"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return name, value
    if isinstance(output, torch.Tensor):
        return "output", output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return "output[0]", output[0]
    raise TypeError(
        f"cannot find the output tensor to compare in a {type(output).__name__}: expected .logits, "
        ".last_hidden_state, a tensor or a tuple starting with one"
    )


def _check_ks(ks: Iterable[float]) -> tuple[float, ...]:
    values = tuple(ks)
    if not values:
        raise ValueError("ks must hold at least one k")
    for k in values:
        check_positive(k, "ks entry")
    if len(set(values)) != len(values):
        raise ValueError(f"ks must not repeat a value, got {values}")
    return tuple(sorted(float(k) for k in values))


def _agreement(dense: list[torch.Tensor], spiking: list[torch.Tensor], logits: bool) -> tuple[float, float, float, float | None]:
    max_abs, err_sq, ref_sq, cos_sum, rows, agree = 0.0, 0.0, 0.0, 0.0, 0, 0
    for d, s in zip(dense, spiking, strict=True):
        d, s = d.double(), s.double()
        diff = s - d
        max_abs = max(max_abs, float(diff.abs().max())) if diff.numel() else max_abs
        err_sq += float(diff.square().sum())
        ref_sq += float(d.square().sum())
        cos_sum += float(torch.nn.functional.cosine_similarity(s, d, dim=-1).sum())
        rows += d.numel() // d.shape[-1] if d.ndim else 1
        if logits:
            agree += int((s.argmax(dim=-1) == d.argmax(dim=-1)).sum())
    relative = math.sqrt(err_sq / ref_sq) if ref_sq > 0 else (0.0 if err_sq == 0 else math.inf)
    return max_abs, relative, cos_sum / max(rows, 1), (agree / max(rows, 1) if logits else None)


def sweep_k(
    model: nn.Module,
    batches: Iterable[Any],
    ks: Iterable[float] = DEFAULT_KS,
    config: SpikingConfig | None = None,
    progress: bool = True,
) -> KSweep:
    """Measure agreement with the dense model and spiking cost of ``model`` injected at each ``k``.

    Args:
        model: a dense model (not injected); it is injected and unloaded once per ``k`` and left dense.
        batches: calibration-style batches (tensor, tuple/list of arguments, or dict of keyword arguments,
            e.g. a tokenizer's output); they are run once densely and once per ``k``.
        ks: values of ``k > 0`` (sorted; no repeats).
        config: the :class:`SpikingConfig` to inject (its ``coding.k`` is replaced); default ``SpikingConfig()``.
        progress: show a tqdm progress bar over ``ks``.

    Returns:
        :class:`KSweep` with one point per ``k``. Weight quantization (``config.coding.weight_bits``) uses
        max-abs scales; its error is part of every point.

    Raises:
        TypeError: ``model`` not a module, ``config`` not a :class:`SpikingConfig`, or no output tensor found.
        ValueError: ``model`` already injected, bad ``ks``, no batch, or the config matches nothing.
    """
    config = check_dense_model(model, config, "sweep_k")
    ks = _check_ks(ks)
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: sweep_k needs at least one batch")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            named = [output_tensor(run_batch(model, batch)) for batch in batches]
        output_name = named[0][0]
        dense = [tensor.detach() for _, tensor in named]
        points = []
        for k in tqdm(ks, desc="sweep_k", disable=not progress):
            inject_spiking(model, dataclasses.replace(config, coding=dataclasses.replace(config.coding, k=k)))
            try:
                report, outputs = record_spikes(model, batches)
            finally:
                unload_spiking(model)
            spiking = [output_tensor(output)[1].detach() for output in outputs]
            max_abs, relative, cosine, top1 = _agreement(dense, spiking, logits=output_name == "logits")
            stats, energy = report.total, report.energy
            points.append(
                SweepPoint(
                    k=k,
                    max_abs_error=max_abs,
                    relative_error=relative,
                    cosine_similarity=cosine,
                    top1_agreement=top1,
                    firing_rate=stats.firing_rate,
                    mean_spikes_per_channel=stats.mean_spikes_per_channel,
                    silent_channel_fraction=stats.silent_channel_fraction,
                    energy_pj_per_mac=energy.spiking_pj_per_mac,
                    saving_vs_fp16=energy.saving_vs_fp16,
                    saving_vs_int8=energy.saving_vs_int8,
                )
            )
    finally:
        model.train(was_training)
    return KSweep(points=tuple(points), config=config, output_name=output_name)


__all__ = ["DEFAULT_KS", "KSweep", "SweepPoint", "output_tensor", "sweep_k"]
