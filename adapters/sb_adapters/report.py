"""spiking_report: per-layer spike statistics and the energy estimate of one forward pass.

The report is a :class:`sb_layers.SpikingReport` (with :class:`sb_layers.LayerReport` per layer; both
defined in :mod:`sb_layers.report` and re-exported here): for every :class:`sb_layers.SpikingLinear` of
the model (injected or built in), the statistics of the spike counts of its input and the layer's
multiply-accumulates; the merged ``total``, the per-projection ``by_projection`` and the MAC-weighted
``energy`` (see :mod:`sb_layers.report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from sb_layers import spiking_layers
from sb_layers.report import LayerReport, SpikeRecorder, SpikingReport

from ._batches import run_batch


def spiking_report(model: nn.Module, inputs: Any) -> SpikingReport:
    """Run ``model`` once on ``inputs`` (no gradients, eval mode) and report its spiking layers.

    Args:
        model: a module with :class:`SpikingLinear` layers (for example after ``inject_spiking``).
        inputs: one batch: a tensor (``model(x)``), a tuple/list (``model(*inputs)``) or a dict
            (``model(**inputs)``, e.g. a tokenizer's output).

    The layers' own ``record_stats`` flags, accumulated ``spike_stats`` and the model's training mode
    are restored afterwards.

    Raises:
        ValueError: ``inputs`` is empty (an empty list, tuple, dict or tensor), the model has no spiking
            layer, or no spiking layer ran on these inputs.
    """
    empty = inputs.numel() == 0 if isinstance(inputs, torch.Tensor) else isinstance(inputs, (list, tuple, Mapping)) and not inputs
    if empty:
        raise ValueError(
            f"inputs is an empty {type(inputs).__name__}: spiking_report runs the model on one batch, a tensor "
            "(model(x)), a tuple/list of its arguments (model(*inputs)) or a dict of keyword arguments "
            "(model(**inputs), e.g. a tokenizer's output); for several batches merged into one report, "
            "sb_adapters.report.record_batches(model, batches)"
        )
    report, _ = record_batches(model, [inputs])
    return report


def record_batches(model: nn.Module, batches: list[Any]) -> tuple[SpikingReport, list[Any]]:
    """Run ``model`` on every batch (no gradients, eval mode): the spiking report merged over all of
    them (exact integer sums, as if one batch) and the model's outputs, batch by batch.

    Same restoring guarantees and errors as :func:`spiking_report`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not spiking_layers(model):
        raise ValueError("model has no spiking layers: call inject_spiking(model, config) first")
    was_training = model.training
    try:
        model.eval()
        with SpikeRecorder(model) as recorder, torch.no_grad():
            outputs = [run_batch(model, batch) for batch in batches]
    finally:
        model.train(was_training)
    try:
        return recorder.report(), outputs
    except ValueError:
        raise ValueError("no spiking layer ran on these inputs") from None


__all__ = ["LayerReport", "SpikingReport", "record_batches", "spiking_report"]
