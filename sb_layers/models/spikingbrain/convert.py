"""Transformer-to-SpikingBrain conversion (report section 3.1, facts section 6) and a continual-training loop.

:func:`convert_qwen2` builds SpikingBrain-7B from a Qwen2 causal LM; the weight mapping (which Qwen2
weight goes where, which parameters are new) is :mod:`sb_layers.models.spikingbrain.qwen2`'s, shared
with :meth:`SpikingBrainForCausalLM.from_qwen2`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from .modeling import SpikingBrainForCausalLM
from .qwen2 import convert_qwen2_into
from sb_neurons.validation import check_int


def convert_qwen2(model_or_dir: Any, *, seed: int = 0, **config_overrides: Any) -> SpikingBrainForCausalLM:
    """SpikingBrain-7B from a Qwen2 causal LM (a module, or a local directory loaded with transformers).

    Args:
        model_or_dir: a ``Qwen2ForCausalLM`` (left unchanged) or a directory holding one.
        seed: seed of the new gate weights' initialization.
        config_overrides: :class:`SpikingBrainConfig` fields, e.g. ``sliding_window`` or ``attn_layers``.

    Returns a model on the source's device and dtype whose reused weights are copies of the source's
    (the mapping: :mod:`sb_layers.models.spikingbrain.qwen2`).
    """
    return convert_qwen2_into(SpikingBrainForCausalLM, model_or_dir, seed=seed, **config_overrides)


def _cycle(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    cached = list(batches)
    if not cached:
        raise ValueError("batches must hold at least one batch of token ids")
    while True:
        yield from cached


def continual_pretrain(
    model: SpikingBrainForCausalLM,
    batches: Iterable[torch.Tensor],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    progress: bool = True,
) -> list[float]:
    """Causal-LM training of ``model`` on ``batches`` of token ids ``[B, L]`` (cycled), with AdamW.

    A plain loop for short continual pre-training after :func:`convert_qwen2` (use transformers'
    ``Trainer`` for real runs: the model is a ``PreTrainedModel``). Shows a tqdm progress bar with the
    running loss when ``progress``. Returns the loss of every step; leaves the model in eval mode.
    """
    check_int(steps, "steps", minimum=1)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    data = _cycle(batches)
    bar = tqdm(range(steps), desc="continual pre-training", disable=not progress)
    for _ in bar:
        ids = next(data)
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.is_floating_point():
            raise ValueError(f"every batch must be integer token ids [B, L], got {getattr(ids, 'shape', type(ids))}")
        loss = model(ids.to(model.device), labels=ids.to(model.device), use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


__all__ = ["continual_pretrain", "convert_qwen2"]
