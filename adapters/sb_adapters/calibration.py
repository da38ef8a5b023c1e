"""calibrate: data-aware weight-quantization scales for the spiking layers of an injected model.

A spiking layer built with ``weight_bits`` starts from max-abs scales, ``scale = max|w_group| / qmax``
(what the release ships). ``calibrate`` runs calibration batches through the model, accumulates the Gram
matrix ``H = X^T X`` of each quantized layer's spike-coded inputs ``X = v_th * counts``, and picks for every
output row the clipping ratio ``r`` (from ``clip_ratios``, scales ``r * max|w_group| / qmax``) that
minimizes that row's output error on the calibration data:

    err(r) = (w - q_r(w)) H (w - q_r(w))^T  =  || X (w - q_r(w))^T ||^2

Clipping: a ratio below 1 puts the largest weights past ``qmax``, where their codes are clamped. So
``calibrate`` switches the layers and the injection's config to ``SpikeCoding.weight_clip=True`` (saved
with the model); without it a layer keeps every code ``round(w / scale)``, the rule of the release's
checkpoints, and a smaller scale would only ever look better.

Guarantee (tested): ``1.0`` is always a candidate, so the calibrated error on the calibration data is at
most the max-abs error, row by row. After fine-tuning, ``calibrate`` also refreshes stale scales.
Memory: one ``in x in`` float32 matrix per quantized layer while calibrating.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sb_layers import SpikingLinear
from sb_layers.report import run_batch
from sb_neurons import spike_quantize
from sb_neurons.validation import check_real

from .injector import get_injection

DEFAULT_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


@dataclass(frozen=True)
class LayerCalibration:
    """Output error of one layer on the calibration data, before (max-abs scales) and after."""

    error_max_abs: float
    error_calibrated: float
    mean_clip_ratio: float


def _check_ratios(clip_ratios: Iterable[float]) -> tuple[float, ...]:
    ratios = tuple(clip_ratios)
    if not ratios:
        raise ValueError("clip_ratios must not be empty")
    for r in ratios:
        check_real(r, "clip_ratios entry", minimum=0, maximum=1, open_minimum=True)
    return ratios if 1.0 in ratios else (1.0, *ratios)


class _GramCollector:
    """Forward pre-hook accumulating ``X^T X`` of a layer's spike-coded input rows (float32)."""

    def __init__(self, layer: SpikingLinear) -> None:
        self.layer = layer
        self.gram = torch.zeros(layer.in_features, layer.in_features, dtype=torch.float32, device=layer.weight.device)
        self.rows = 0

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        coding = self.layer.coding
        x = spike_quantize(args[0].detach(), coding.k, -1, coding.clamp).reshape(-1, self.layer.in_features).float()
        self.gram += x.T @ x
        self.rows += x.shape[0]


@torch.no_grad()
def _row_errors(layer: SpikingLinear, gram: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    quantizer = layer.weight_quantizer
    quantizer.scales.copy_(scales)
    weight = layer.weight.detach().float()
    delta = weight - quantizer.fake_quantize(weight)
    return ((delta @ gram) * delta).sum(dim=1)


@torch.no_grad()
def _calibrate_layer(layer: SpikingLinear, gram: torch.Tensor, ratios: tuple[float, ...]) -> LayerCalibration:
    quantizer = layer.weight_quantizer
    quantizer.calibrate(layer.weight)
    max_abs_scales = quantizer.scales.clone()
    candidates = torch.tensor(ratios, dtype=torch.float32, device=gram.device)
    errors = torch.stack([_row_errors(layer, gram, (r * max_abs_scales).clamp_min(1e-5)) for r in ratios])
    best = errors.argmin(dim=0)  # first minimum: ties keep the larger ratio listed first
    chosen = candidates[best].view(-1, 1, 1)
    quantizer.scales.copy_((chosen * max_abs_scales).clamp_min(1e-5))
    baseline = errors[ratios.index(1.0)]
    return LayerCalibration(
        error_max_abs=float(baseline.sum()),
        error_calibrated=float(errors.gather(0, best.unsqueeze(0)).sum()),
        mean_clip_ratio=float(candidates[best].mean()),
    )


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    clip_ratios: Iterable[float] = DEFAULT_CLIP_RATIOS,
    progress: bool = True,
) -> dict[str, LayerCalibration]:
    """Set the weight scales of every quantized spiking layer from calibration batches.

    Args:
        model: a model injected with a config that has ``weight_bits`` set.
        batches: iterable of batches (tensor, tuple/list of arguments, or dict of keyword arguments).
        clip_ratios: candidate ratios in ``(0, 1]``; ``1.0`` (max-abs) is always tried.
        progress: show tqdm progress bars.

    Returns:
        ``{layer name: LayerCalibration}``; ``error_calibrated <= error_max_abs`` for every layer.

    Raises:
        ValueError: the model is not injected, its config has no ``weight_bits``, or no batch was given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    record = get_injection(model)
    if record is None:
        raise ValueError("calibrate needs a model injected with inject_spiking(model, config)")
    if record.config.coding.weight_bits is None:
        raise ValueError("calibrate sets weight-quantization scales: the SpikingConfig has coding.weight_bits=None")
    ratios = _check_ratios(clip_ratios)
    layers = {
        name: module
        for name, module in model.named_modules()
        if name in record.originals and isinstance(module, SpikingLinear) and module.weight_quantizer is not None
    }
    collectors = {name: _GramCollector(layer) for name, layer in layers.items()}
    handles = [layers[name].register_forward_pre_hook(collector) for name, collector in collectors.items()]
    was_training = model.training
    seen = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in tqdm(batches, desc="calibrate: collecting activations", disable=not progress):
                run_batch(model, batch)
                seen += 1
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("batches is empty: calibrate needs at least one batch")
    record.config.coding = replace(record.config.coding, weight_clip=True)
    for layer in layers.values():
        layer.coding = replace(layer.coding, weight_clip=True)
        layer.weight_quantizer.clip = True
    return {
        name: _calibrate_layer(layers[name], collectors[name].gram, ratios)
        for name in tqdm(list(layers), desc="calibrate: choosing scales", disable=not progress)
    }
