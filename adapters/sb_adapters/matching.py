"""Which modules a :class:`SpikingConfig` selects: PEFT's target-matching rules, restated.

- A ``str`` spec is a regular expression matched with ``re.fullmatch`` against the full module name
  (``"transformer.h.0.attn.c_attn"``), exactly as PEFT does.
- A ``list`` spec matches a name equal to an entry, or ending with ``"." + entry`` (so ``"q_proj"``
  matches ``"model.layers.0.self_attn.q_proj"`` but not ``"model.layers.0.self_attn.xq_proj"``).
- ``"all-linear"`` (targets only) matches every ``nn.Linear`` / ``Conv1D`` except the output head (the
  module the model's ``get_output_embeddings()`` returns, else any module named ``lm_head``) and the
  routers of mixtures of experts (a linear named ``router`` or ``gate`` beside an ``experts`` list: Mixtral's
  ``block_sparse_moe.gate``, Qwen2-MoE's ``mlp.gate``, :class:`sb_layers.MoE`'s ``router``), which PEFT's
  ``"all-linear"`` leaves alone too: spike-coding a router re-routes tokens (4.1% of them at ``k = 3`` on
  a tiny Mixtral). Name a router in ``target_modules`` to spike-code it anyway.
- The layer index of a name is its first all-digit component: ``"model.layers.3.mlp.up_proj" -> 3``,
  ``"transformer.h.1.attn.c_attn" -> 1``; names without one have no index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from torch import nn

from .config import ALL_LINEAR, SpikingConfig, TargetSpec

def spec_matches(spec: TargetSpec, name: str) -> bool:
    """Whether module ``name`` matches a target/exclude ``spec`` (regex string or list of names)."""
    if spec is None:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return name in spec or any(name.endswith(f".{entry}") for entry in spec)


def layer_index(name: str) -> int | None:
    """The first all-digit component of the dotted ``name`` (the index in a layer stack), or ``None``."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def linear_types() -> tuple[type[nn.Module], ...]:
    """Module types the injector can spike-code: ``nn.Linear`` and transformers' ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D)


def is_router(model: nn.Module, name: str) -> bool:
    """Whether module ``name`` is the router of a mixture of experts: named ``router`` or ``gate``, with
    a sibling ``experts`` module list."""
    parent, _, child = name.rpartition(".")
    if child not in ("router", "gate"):
        return False
    owner = model.get_submodule(parent) if parent else model
    return isinstance(getattr(owner, "experts", None), (nn.ModuleList, nn.Module))


def _output_head(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            return getter()
        except (AttributeError, NotImplementedError):
            return None
    return None


def iter_targets(model: nn.Module, config: SpikingConfig) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` of every module the config targets and does not exclude or keep dense.

    Modules are yielded whatever their type: the caller decides whether it can replace them. With
    ``"all-linear"`` only supported linear types are selected, so an unsupported type never matches.
    """
    head = _output_head(model) if config.target_modules == ALL_LINEAR else None
    supported = linear_types()
    for name, module in model.named_modules():
        if not name:
            continue
        if config.target_modules == ALL_LINEAR:
            is_head = module is head or name == "lm_head" or name.endswith(".lm_head")
            if not isinstance(module, supported) or is_head or is_router(model, name):
                continue
        elif not spec_matches(config.target_modules, name):
            continue
        if spec_matches(config.exclude_modules, name):
            continue
        if config.dense_layers is not None and layer_index(name) in config.dense_layers:
            continue
        yield name, module
