"""choose_dense_layers: which layers to keep dense so that a spiking model meets an accuracy bound.

The SpikingBrain write-ups' deployment checklist: if accuracy drops too much after spiking, keep some
layers dense (a hybrid). :func:`choose_dense_layers` measures each layer's sensitivity (only that layer
spike-coded, every other layer dense, against the dense model on the user's batches), then chooses
greedily: starting with every layer spike-coded, it keeps the most sensitive remaining layer dense until
the whole model meets the bound (relative error of the output and/or top-1 agreement of the logits,
measured as :func:`sb_adapters.sweep_k` measures them). The model is left dense, as it was given.
The result's ``config`` is the :class:`SpikingConfig` to inject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sb_layers.report import run_batch
from sb_neurons.validation import check_real

from .config import SpikingConfig
from .injector import check_dense_model, get_injection, inject_spiking, model_layer_indices, unload_spiking
from .matching import layer_index
from .sweep import _agreement, output_tensor


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer spike-coded alone: its relative error and top-1 agreement against the dense model."""

    layer: int
    relative_error: float
    top1_agreement: float | None


@dataclass(frozen=True)
class DenseLayerChoice:
    """Result of :func:`choose_dense_layers`.

    Attributes:
        sensitivities: one :class:`LayerSensitivity` per layer that has spike-coded modules, by layer.
        dense_layers: the layers kept dense, in the order they were chosen (most sensitive first).
        relative_error, top1_agreement: the whole model's, with those layers dense (they meet the bound:
            at worst every layer is kept dense, which is the dense model itself).
        config: the :class:`SpikingConfig` given, with ``dense_layers`` set: inject it.
    """

    sensitivities: tuple[LayerSensitivity, ...]
    dense_layers: tuple[int, ...]
    relative_error: float
    top1_agreement: float | None
    config: SpikingConfig

    @property
    def spiking_layers(self) -> tuple[int, ...]:
        """The measured layers left spike-coded (empty when the bound needs the dense model itself: then
        ``config`` selects nothing and ``inject_spiking`` would refuse it)."""
        return tuple(s.layer for s in self.sensitivities if s.layer not in self.dense_layers)

    def format(self) -> str:
        """A table: layer, sensitivity (relative error, top-1), kept dense; then the whole model's figures."""
        lines = [f"{'layer':>5}  {'rel.err':>9}  {'top-1':>6}  kept dense", "-" * 36]
        for s in self.sensitivities:
            top1 = "-" if s.top1_agreement is None else f"{s.top1_agreement:.3f}"
            lines.append(f"{s.layer:>5}  {s.relative_error:>9.4g}  {top1:>6}  {'yes' if s.layer in self.dense_layers else 'no'}")
        top1 = "-" if self.top1_agreement is None else f"{self.top1_agreement:.3f}"
        lines.append(f"model with layers {list(self.dense_layers)} dense: relative error {self.relative_error:.4g}, "
                     f"top-1 {top1}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _check_bounds(max_relative_error: float | None, min_top1_agreement: float | None) -> None:
    if max_relative_error is None and min_top1_agreement is None:
        raise ValueError("give max_relative_error and/or min_top1_agreement")
    if max_relative_error is not None:
        check_real(max_relative_error, "max_relative_error", minimum=0)
    if min_top1_agreement is not None:
        check_real(min_top1_agreement, "min_top1_agreement", minimum=0, maximum=1)


def choose_dense_layers(
    model: nn.Module,
    batches: Iterable[Any],
    config: SpikingConfig | None = None,
    *,
    max_relative_error: float | None = None,
    min_top1_agreement: float | None = None,
    progress: bool = True,
) -> DenseLayerChoice:
    """The layers to keep dense so that ``model`` injected with ``config`` meets the bound(s).

    Args:
        model: a dense model (not injected); injected and unloaded per measurement and left dense.
        batches: the user's batches (tensor, tuple/list of arguments, or dict of keyword arguments).
        config: the :class:`SpikingConfig` to inject (default ``SpikingConfig()``); its own
            ``dense_layers`` are kept dense throughout and are part of the answer.
        max_relative_error: bound on ``||y - y_dense|| / ||y_dense||`` of the output (logits).
        min_top1_agreement: bound on the share of positions whose argmax is the dense model's (logits only).
        progress: tqdm bars over the sensitivity pass and the greedy choice.

    Cost: one dense run, one run per layer (sensitivities) and one per layer kept dense (greedy).

    Raises:
        TypeError: ``model`` is not a module or ``config`` not a :class:`SpikingConfig`.
        ValueError: a bound out of range or none given, an injected model, no batch, a model with no
            numbered layer among the modules ``config`` selects, or top-1 asked of a non-logit output.
    """
    config = check_dense_model(model, config, "choose_dense_layers")
    _check_bounds(max_relative_error, min_top1_agreement)
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: choose_dense_layers needs at least one batch")
    fixed = list(config.dense_layers or [])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            named = [output_tensor(run_batch(model, batch)) for batch in batches]
        logits = named[0][0] == "logits"
        if min_top1_agreement is not None and not logits:
            raise ValueError(f"min_top1_agreement needs logits; this model's output is {named[0][0]!r}")
        dense = [tensor.detach() for _, tensor in named]

        def measure(dense_layers: list[int]) -> tuple[float, float | None]:
            inject_spiking(model, dataclasses.replace(config, dense_layers=dense_layers or None))
            try:
                with torch.no_grad():
                    spiking = [output_tensor(run_batch(model, batch))[1].detach() for batch in batches]
            finally:
                unload_spiking(model)
            _, relative, _, top1 = _agreement(dense, spiking, logits)
            return relative, top1

        inject_spiking(model, config)
        try:
            layers = sorted({index for name in get_injection(model).originals if (index := layer_index(name)) is not None})
        finally:
            unload_spiking(model)
        if not layers:
            raise ValueError("the modules config selects have no layer index (no numbered component in their names)")
        everything = model_layer_indices(model)
        sensitivities = []
        for layer in tqdm(layers, desc="layer sensitivity", disable=not progress):
            relative, top1 = measure(sorted(set(everything) - {layer}))
            sensitivities.append(LayerSensitivity(layer, relative, top1))

        def meets(relative: float, top1: float | None) -> bool:
            return (max_relative_error is None or relative <= max_relative_error) and (
                min_top1_agreement is None or top1 >= min_top1_agreement)

        by_harm = sorted(sensitivities, key=lambda s: (-s.relative_error, (s.top1_agreement or 0.0), s.layer))
        chosen: list[int] = []
        relative, top1 = measure(fixed)
        with tqdm(total=len(by_harm), desc="choosing dense layers", disable=not progress) as bar:
            for candidate in by_harm:
                if meets(relative, top1):
                    break
                chosen.append(candidate.layer)
                bar.update()
                if len(chosen) == len(layers):  # every spike-coded layer dense: the dense model
                    relative, top1 = 0.0, (1.0 if logits else None)
                    break
                relative, top1 = measure(sorted(set(fixed) | set(chosen)))
    finally:
        model.train(was_training)
    dense_layers = tuple(fixed + [layer for layer in chosen if layer not in fixed])
    return DenseLayerChoice(
        sensitivities=tuple(sensitivities), dense_layers=dense_layers, relative_error=relative, top1_agreement=top1,
        config=dataclasses.replace(config, dense_layers=list(dense_layers) or None),
    )


__all__ = ["DenseLayerChoice", "LayerSensitivity", "choose_dense_layers"]
