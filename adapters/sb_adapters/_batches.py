"""Calling a model on one batch the way its users do: ``model(**dict)``, ``model(*tuple)`` or ``model(x)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def run_batch(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a mapping (HF tokenizer output), ``model(*batch)`` for a tuple or list,
    ``model(batch)`` for a tensor; anything else raises ``TypeError``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    if isinstance(batch, torch.Tensor):
        return model(batch)
    raise TypeError(f"a batch must be a tensor, a tuple/list of model arguments or a dict of keyword arguments; got {type(batch).__name__}")
