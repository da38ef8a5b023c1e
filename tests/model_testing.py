"""Tiny SpikingBrain models shared by the ``tests/models/`` modules (importable like strategies.py).

:func:`tiny_spikingbrain` builds a seeded :class:`SpikingBrainForCausalLM` from :data:`TINY` (the fields
every tiny test model shares) updated by the caller's fields; each test module names its vocabulary and
window, and whatever else it varies.
"""

from __future__ import annotations

import torch

from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM

# 4 layers (GLA and SWA alternating), 4 query and 2 key/value heads, short GLA chunks, a short RoPE period
# and a large initializer range, so that a few tokens exercise every part.
TINY = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
    gla_chunk_size=3, rope_theta=100.0, initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


def tiny_spikingbrain_config(**fields) -> SpikingBrainConfig:
    """:data:`TINY` updated by ``fields`` (which name at least ``vocab_size`` and ``sliding_window``)."""
    return SpikingBrainConfig(**{**TINY, **fields})


def tiny_spikingbrain(*, seed: int = 0, dtype: torch.dtype = torch.float64, perturb: bool = False, **fields) -> SpikingBrainForCausalLM:
    """The model of :func:`tiny_spikingbrain_config` ``(**fields)`` initialized under ``torch.manual_seed(seed)``,
    in ``dtype``, in eval mode. ``perturb``: norm weights and biases moved off their initial values (by
    ``0.3 * randn``, drawn after the initialization), so that a reference checks every parameter's role."""
    torch.manual_seed(seed)
    model = SpikingBrainForCausalLM(tiny_spikingbrain_config(**fields)).to(dtype).eval()
    if perturb:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("norm.weight") or name.endswith(".bias"):
                    param.add_(0.3 * torch.randn_like(param))
    return model
