"""Qwen2-to-SpikingBrain weight mapping (report section 3.1, facts section 6), without the model class.

:func:`convert_qwen2_into` (behind :func:`sb_layers.models.spikingbrain.convert.convert_qwen2` and
:meth:`SpikingBrainForCausalLM.from_qwen2`) maps a Qwen2 causal LM onto SpikingBrain-7B's layout:

==========================================  ===================================================
Qwen2                                       SpikingBrain (every layer, GLA or SWA)
==========================================  ===================================================
``model.embed_tokens.weight``               ``model.embeddings.weight``
``layers.i.self_attn.{q,k,v}_proj.*``       ``layers.i.attn.{q,k,v}_proj.*``
``layers.i.self_attn.o_proj.weight``        ``layers.i.attn.o_proj.weight``
``layers.i.input_layernorm.weight``         ``layers.i.attn_norm.weight``
``layers.i.post_attention_layernorm.*``     ``layers.i.mlp_norm.weight``
``layers.i.mlp.{gate,up,down}_proj.*``      ``layers.i.mlp.{gate,up,down}_proj.*``
``model.norm.weight``, ``lm_head.weight``   same names (a tied head is copied, the result is untied)
==========================================  ===================================================

New parameters, GLA layers only: the low-rank gate ``gk_proj.0.weight``, ``gk_proj.1.weight`` (normal,
std ``initializer_range``), ``gk_proj.1.bias`` (zero: every channel starts with the decay
``sigmoid(0)^(1/16) ~ 0.958`` per token) and ``g_norm.weight`` (ones). Linear attention uses the ReLU
feature map on the reused q/k projections. The model is assembled on the meta device and filled with
``load_state_dict(assign=True)``, so no random copy of the reused weights is ever allocated.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from .configuration import SpikingBrainConfig

_RENAMES = (
    (re.compile(r"^model\.embed_tokens\."), "model.embeddings."),
    (re.compile(r"^(model\.layers\.\d+\.)self_attn\."), r"\1attn."),
    (re.compile(r"^(model\.layers\.\d+\.)input_layernorm\."), r"\1attn_norm."),
    (re.compile(r"^(model\.layers\.\d+\.)post_attention_layernorm\."), r"\1mlp_norm."),
)
_NEW_GLA_PARAMETER = re.compile(r"^model\.layers\.\d+\.attn\.(gk_proj\.0\.weight|gk_proj\.1\.weight|gk_proj\.1\.bias|g_norm\.weight)$")


def qwen2_to_spikingbrain_name(name: str) -> str:
    """The SpikingBrain state-dict name of a Qwen2 state-dict name (unchanged names map to themselves)."""
    for pattern, replacement in _RENAMES:
        name = pattern.sub(replacement, name)
    return name


def spikingbrain_config_from_qwen2(qwen_config: Any, **overrides: Any) -> SpikingBrainConfig:
    """A 7B-layout :class:`SpikingBrainConfig` with a Qwen2 config's sizes; ``overrides`` win.

    Defaults that do not come from Qwen2: ``sliding_window=4096``, SWA at the odd layers, untied head.
    """
    rope = getattr(qwen_config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(qwen_config, "rope_theta", 1e6))
    head_dim = getattr(qwen_config, "head_dim", None) or qwen_config.hidden_size // qwen_config.num_attention_heads
    fields = dict(
        vocab_size=qwen_config.vocab_size, hidden_size=qwen_config.hidden_size,
        num_hidden_layers=qwen_config.num_hidden_layers, num_attention_heads=qwen_config.num_attention_heads,
        num_key_value_heads=qwen_config.num_key_value_heads, head_dim=head_dim,
        intermediate_size=qwen_config.intermediate_size, rope_theta=float(rope_theta),
        norm_eps=qwen_config.rms_norm_eps, max_position_embeddings=qwen_config.max_position_embeddings,
        initializer_range=qwen_config.initializer_range, tie_word_embeddings=False,
        bos_token_id=qwen_config.bos_token_id, eos_token_id=qwen_config.eos_token_id, pad_token_id=qwen_config.pad_token_id,
    )
    if qwen_config.hidden_act != "silu":
        raise ValueError(f"only SiLU Qwen2 models convert (SpikingBrain's MLP is SwiGLU), got hidden_act={qwen_config.hidden_act!r}")
    fields.update(overrides)
    if fields.get("variant", "inter_layer") != "inter_layer":
        raise ValueError("convert_qwen2 builds the 7B inter-layer hybrid; upcycle to the 76B style afterwards")
    return SpikingBrainConfig(**fields)


def load_qwen2(model_or_dir: Any) -> nn.Module:
    if isinstance(model_or_dir, (str, os.PathLike)):
        if not os.path.isdir(model_or_dir):
            raise ValueError(f"model_or_dir must be a Qwen2 model or an existing local directory, got {model_or_dir!r}")
        from transformers import Qwen2ForCausalLM

        return Qwen2ForCausalLM.from_pretrained(model_or_dir)
    if not isinstance(model_or_dir, nn.Module) or getattr(getattr(model_or_dir, "config", None), "model_type", None) != "qwen2":
        raise TypeError(f"model_or_dir must be a Qwen2 causal LM (config.model_type 'qwen2') or a directory, got {type(model_or_dir).__name__}")
    return model_or_dir


@torch.no_grad()
def convert_qwen2_into(model_class: Any, model_or_dir: Any, *, seed: int = 0, **config_overrides: Any) -> nn.Module:
    """A ``model_class`` (a :class:`SpikingBrainForCausalLM`, passed in so that this module needs no
    import of the modeling module) with SpikingBrain-7B's layout from a Qwen2 causal LM (a module, or a
    local directory loaded with transformers). Called by :func:`sb_layers.models.spikingbrain.convert.convert_qwen2`
    and :meth:`SpikingBrainForCausalLM.from_qwen2`.

    Args:
        model_class: the class whose ``build(config, device=, dtype=)`` assembles the model.
        model_or_dir: a ``Qwen2ForCausalLM`` (left unchanged) or a directory holding one.
        seed: seed of the new gate weights' initialization.
        config_overrides: :class:`SpikingBrainConfig` fields, e.g. ``sliding_window`` or ``attn_layers``.

    Returns a model on the source's device and dtype whose reused weights are copies of the source's
    (see the module docstring for the mapping).
    """
    source = load_qwen2(model_or_dir)
    config = spikingbrain_config_from_qwen2(source.config, **config_overrides)
    reference = source.get_output_embeddings().weight
    device, dtype = reference.device, reference.dtype
    target = model_class.build(config, device="meta", dtype=dtype)
    wanted = target.state_dict()

    state: dict[str, torch.Tensor] = {}
    for name, tensor in source.state_dict().items():
        mapped = qwen2_to_spikingbrain_name(name)
        if mapped not in wanted:
            raise ValueError(f"Qwen2 weight {name!r} has no place in SpikingBrain (mapped to {mapped!r})")
        state[mapped] = tensor.detach().clone()
    if "lm_head.weight" not in state:  # tied Qwen2 heads are not stored separately
        state["lm_head.weight"] = state["model.embeddings.weight"].clone()

    generator = torch.Generator(device=device).manual_seed(seed)
    for name in sorted(set(wanted) - set(state)):
        if not _NEW_GLA_PARAMETER.match(name):
            raise ValueError(f"SpikingBrain parameter {name!r} has no Qwen2 source and is not a new GLA parameter")
        shape = wanted[name].shape
        if name.endswith("gk_proj.1.bias"):
            value = torch.zeros(shape, device=device, dtype=dtype)
        elif name.endswith("g_norm.weight"):
            value = torch.ones(shape, device=device, dtype=dtype)
        else:
            value = torch.randn(shape, device=device, generator=generator).to(dtype) * config.initializer_range
        state[name] = value
    target.load_state_dict(state, strict=True, assign=True)
    return target.eval()


__all__ = ["convert_qwen2_into", "qwen2_to_spikingbrain_name", "spikingbrain_config_from_qwen2"]
