"""Loading SpikingBrain weights into the vLLM model: the released layout and ours.

Checkpoint names (release and ours, facts section 4) map onto the vLLM model's parameters:

- ``...attn.{q,k,v}_proj.{weight,bias}`` -> ``...attn.qkv_proj`` (shards ``"q"``, ``"k"``, ``"v"``; vLLM's
  QKV loader keeps each rank's heads);
- ``...mlp.{gate,up}_proj.weight`` -> ``...mlp.gate_up_proj`` (shards 0, 1);
- the GLA gate as stored: the low-rank pair ``gk_proj.0.weight`` / ``gk_proj.1.{weight,bias}`` or one
  merged ``gk_proj.{weight,bias}``; ``g_norm.weight``, norms, ``o_proj``, ``down_proj``, ``embeddings``,
  ``lm_head``: same name, each parameter's own (tensor-parallel) loader;
- a checkpoint already in the merged layout (``qkv_proj``, ``gate_up_proj``) loads as is.

A name that matches no parameter raises ``ValueError`` naming it (a W8ASpike scale, a weight of another
model): nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.model_executor.model_loader.weight_utils import default_weight_loader

# (merged parameter, checkpoint projection, shard id)
STACKED = (
    ("qkv_proj", "q_proj", "q"),
    ("qkv_proj", "k_proj", "k"),
    ("qkv_proj", "v_proj", "v"),
    ("gate_up_proj", "gate_proj", 0),
    ("gate_up_proj", "up_proj", 1),
)


def load_spikingbrain_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
    """Load ``(name, tensor)`` pairs into ``model`` (:class:`sb_adapters.vllm.model.SpikingBrainForCausalLM`)
    and return the names of the parameters loaded (vLLM checks that none is missing)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    tied = getattr(model.config, "tie_word_embeddings", False)
    loaded: set[str] = set()
    for name, tensor in weights:
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"weights must yield (str, Tensor) pairs, got ({type(name).__name__}, {type(tensor).__name__})")
        if name.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some exporters write; the angles are computed from rope_theta
        if tied and name == "lm_head.weight":
            continue  # tied to model.embeddings.weight, which the checkpoint also holds
        target, shard = name, None
        for merged, projection, shard_id in STACKED:
            part = f".{projection}."
            if part in name:
                target, shard = name.replace(part, f".{merged}."), shard_id
                break
        param = params.get(target)
        if param is None:
            raise ValueError(
                f"checkpoint weight {name!r} matches no parameter of the vLLM SpikingBrain model "
                "(W8ASpike scales and other layouts are not served)"
            )
        loader = getattr(param, "weight_loader", default_weight_loader)
        if shard is None:
            loader(param, tensor)
        else:
            loader(param, tensor, shard)
        loaded.add(target)
    if tied:
        loaded.add("lm_head.weight")
    return loaded
