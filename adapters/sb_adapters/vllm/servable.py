"""Which SpikingBrain checkpoints the vLLM plugin serves, checked before anything is built.

:func:`check_servable` raises a one-line ``ValueError`` naming the config field that the plugin cannot
serve, so that vLLM fails at load (in its config set-up, before weights are read) instead of serving a
different function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sb_layers.models.spikingbrain import SpikingBrainConfig
from sb_neurons.validation import check_int

# The GLA gates the plugin's mixer computes (the 76B's tied-key gate belongs to the intra-layer variant).
SERVED_GATES = ("low_rank", "merged")


def check_servable(config: Any, tensor_parallel_size: int = 1, head_sizes: Sequence[int] | None = None) -> None:
    """Raise ``ValueError`` (one line, naming the field) unless the plugin can serve ``config``.

    Args:
        config: the checkpoint's config (a :class:`SpikingBrainConfig`, which the ``"gla_swa"`` release
            config also is once ``sb_layers.models.spikingbrain`` is imported).
        tensor_parallel_size: vLLM's ``tensor_parallel_size`` (>= 1): the attention heads and, for the GLA
            layers, the key/value heads must split evenly across the ranks.
        head_sizes: the head sizes the attention backend of this platform supports (None: not checked).

    Served: ``variant="inter_layer"`` (SpikingBrain-7B) with ``gla_gate`` "low_rank" or "merged", float
    weights (``spiking``, ``spike_qk``, ``spike_attention`` off), no short convolution.
    """
    if not isinstance(config, SpikingBrainConfig):
        raise TypeError(f"config must be a SpikingBrainConfig (model_type 'spikingbrain' or 'gla_swa'), got {type(config).__name__}")
    check_int(tensor_parallel_size, "tensor_parallel_size", minimum=1)
    prefix = "the SpikingBrain vLLM plugin cannot serve this checkpoint:"
    if config.variant != "inter_layer":
        raise ValueError(
            f"{prefix} variant={config.variant!r} (the 76B-style intra-layer hybrid: parallel GLA and attention in every "
            "layer, sink tokens, MoE) is not supported; only 'inter_layer' (SpikingBrain-7B)"
        )
    for field in ("spiking", "spike_qk", "spike_attention"):
        if getattr(config, field):
            raise ValueError(f"{prefix} {field}=True (W8ASpike spike-coded layers) is not supported yet; serve the float (bf16) checkpoint")
    if config.gla_gate not in SERVED_GATES:
        raise ValueError(f"{prefix} gla_gate={config.gla_gate!r} is not supported; one of {SERVED_GATES}")
    attn_layers = list(config.attn_layers)
    unknown = [index for index in attn_layers if not isinstance(index, int) or not 0 <= index < config.num_hidden_layers]
    if unknown:
        raise ValueError(f"{prefix} attn_layers names layers {unknown} outside 0..{config.num_hidden_layers - 1}")
    if head_sizes is not None and config.head_dim not in head_sizes:
        raise ValueError(
            f"{prefix} head_dim={config.head_dim} is not a head size this platform's attention backend supports "
            f"({sorted(head_sizes)})"
        )
    if config.num_attention_heads % tensor_parallel_size:
        raise ValueError(
            f"{prefix} num_attention_heads={config.num_attention_heads} does not split across "
            f"tensor_parallel_size={tensor_parallel_size}"
        )
    gla_layers = config.num_hidden_layers - len(attn_layers)
    if gla_layers and config.num_key_value_heads % tensor_parallel_size:
        raise ValueError(
            f"{prefix} num_key_value_heads={config.num_key_value_heads} does not split across "
            f"tensor_parallel_size={tensor_parallel_size} (each rank keeps the GLA state of its own key/value heads)"
        )
