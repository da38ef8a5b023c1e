"""Upcycling a dense intra-layer (76B-style) SpikingBrain model into MoE layers (report Eq. 15-18).

Every chosen layer's dense GLU becomes a :class:`sb_layers.MoE` built by :func:`sb_layers.upcycle`:
``num_experts`` routed copies (top-k) plus ``num_shared`` shared copies, rescaled so that the MoE output
equals the dense one at initialization. Layers listed in ``dense_ffn_layers`` keep their dense FFN (the
76B keeps layers 1, 2, 3, 5, 7, 9, 11 of 28 dense, 1-based).

Identity (``scaling="exact"``): the upcycled model's logits equal the dense model's for every input.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from sb_layers.feed_forward import GLUMLP, upcycle

from .modeling import SpikingBrainForCausalLM


@torch.no_grad()
def upcycle_to_moe(
    model: SpikingBrainForCausalLM,
    num_experts: int,
    *,
    top_k: int = 1,
    num_shared: int = 1,
    router: str = "softmax",
    dense_ffn_layers: Sequence[int] = (),
    scaling: str = "exact",
    router_aux_loss_coef: float = 0.0,
) -> SpikingBrainForCausalLM:
    """A new model whose FFNs outside ``dense_ffn_layers`` are MoEs upcycled from ``model``'s dense GLUs.

    Args:
        model: a dense (``num_experts == 0``) ``variant="intra_layer"`` model; left unchanged.
        num_experts: routed experts per MoE layer (16 in the report).
        top_k: routed experts each token uses (1 in the report).
        num_shared: shared experts, always used (1 in the report).
        router: ``"softmax"`` (the report's) or ``"sigmoid"``.
        dense_ffn_layers: 0-based layers that keep their dense FFN.
        scaling: ``"exact"`` (MoE == dense) or ``"report"`` (the report's alpha on all three matrices).
        router_aux_loss_coef: weight of the load-balancing loss added to the LM loss in training.
    """
    if not isinstance(model, SpikingBrainForCausalLM):
        raise TypeError(f"model must be a SpikingBrainForCausalLM, got {type(model).__name__}")
    if model.config.variant != "intra_layer":
        raise ValueError("MoE upcycling is part of the 76B-style variant: model.config.variant must be 'intra_layer'")
    if model.config.num_experts:
        raise ValueError("model already has MoE layers (config.num_experts > 0)")
    config = copy.deepcopy(model.config)
    config.num_experts, config.num_experts_per_tok, config.num_shared_experts = num_experts, top_k, num_shared
    config.router, config.dense_ffn_layers, config.router_aux_loss_coef = router, list(dense_ffn_layers), router_aux_loss_coef
    config = type(config)(**config.to_dict())  # re-run the config's validation on the new fields

    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    for index, layer in enumerate(model.model.layers):
        if not config.is_moe_layer(index):
            continue
        if not isinstance(layer.mlp, GLUMLP):
            raise TypeError(f"layer {index}'s FFN must be a dense GLUMLP to upcycle, got {type(layer.mlp).__name__}")
        prefix = f"model.layers.{index}.mlp."
        for name in [n for n in state if n.startswith(prefix)]:
            del state[name]
        moe = upcycle(layer.mlp, num_experts, top_k, num_shared, router, scaling=scaling)
        state.update({prefix + name: tensor for name, tensor in moe.state_dict().items()})
    reference = model.lm_head.weight
    upcycled = SpikingBrainForCausalLM.build(config, device="meta", dtype=reference.dtype)
    upcycled.load_state_dict(state, strict=True, assign=True)
    return upcycled.to(reference.device).train(model.training)


__all__ = ["upcycle_to_moe"]
