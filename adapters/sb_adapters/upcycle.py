"""Upcycle the MLPs of a HuggingFace model into mixtures of experts (report §2.2, Eq. 15-18).

The SpikingBrain write-ups' deployment checklist expands each dense MLP into an MoE by copying it (1:4:
four experts per MLP). :func:`upcycle_mlps` does that in place for the GLU MLPs of Llama, Qwen2 and
Mistral-style models (``down_proj(act(gate_proj(x)) * up_proj(x))``, no biases), keeping the model's own
gate activation (``config.hidden_act``: SiLU, the GELU variants, ReLU; anything else is refused by name).
Each MLP becomes a :class:`sb_layers.MoE` from :func:`sb_layers.upcycle`, so the model computes the dense
function at initialization (to float rounding) for any number of experts, top-k and shared experts.

Training: with ``labels`` the model's loss gains ``aux_loss_coef * sum of the MoEs' load-balancing
losses`` (the Switch-Transformer loss each :class:`~sb_layers.MoE` computes on its forward), so the
routers learn to spread tokens.

Saving and loading: the settings are kept in ``model.config.moe_upcycling``, so ``save_pretrained``
writes them into ``config.json`` beside the experts' weights. ``transformers``' own ``from_pretrained``
knows nothing of them and would build dense MLPs (warning about missing and unexpected weights);
:func:`load_upcycled` builds the model from its config, upcycles it the same way and loads every weight
strictly, so that save and load round-trip exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from sb_layers import GLUMLP, MoE, upcycle
from sb_layers.feed_forward import ACTIVATIONS, check_routing
from sb_neurons.validation import check_int, check_real

CONFIG_KEY = "moe_upcycling"  # the field of model.config (and config.json) holding the settings


def _glu_mlps(model: nn.Module, layers: list[int] | None) -> dict[str, nn.Module]:
    """The GLU MLPs (``gate_proj``, ``up_proj``, ``down_proj`` linears) of ``model``, by name, in the
    decoder layers ``layers`` (None: all)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, MoE) or not all(isinstance(getattr(module, p, None), nn.Linear) for p in ("gate_proj", "up_proj", "down_proj")):
            continue
        index = next((int(part) for part in name.split(".") if part.isdigit()), None)
        if layers is None or index in layers:
            found[name] = module
    return found


def _dense_glu(name: str, mlp: nn.Module, activation: str) -> GLUMLP:
    for projection in ("gate_proj", "up_proj", "down_proj"):
        if getattr(mlp, projection).bias is not None:
            raise ValueError(f"{name}.{projection} has a bias (mlp_bias=True): upcycle_mlps takes GLU MLPs without biases")
    weight = mlp.gate_proj.weight
    dense = GLUMLP(mlp.gate_proj.in_features, mlp.gate_proj.out_features, device=weight.device, dtype=weight.dtype,
                   activation=activation)
    with torch.no_grad():
        for projection in ("gate_proj", "up_proj", "down_proj"):
            getattr(dense, projection).weight.copy_(getattr(mlp, projection).weight)
    return dense


def _add_balancing_loss(model: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Forward hook: the model's loss (present when labels were given) plus the routers' weighted
    load-balancing losses of this forward."""
    settings = getattr(model.config, CONFIG_KEY, None) or {}
    coef = settings.get("aux_loss_coef", 0.0)
    loss = output.get("loss") if isinstance(output, dict) else None
    if loss is None or not coef:
        return output
    aux = sum(module.aux_loss for module in model.modules() if isinstance(module, MoE) and module.aux_loss is not None)
    output["loss"] = loss + coef * aux
    return output


def upcycle_mlps(
    model: nn.Module,
    num_experts: int = 4,
    *,
    top_k: int = 1,
    num_shared: int = 0,
    router: str = "softmax",
    layers: list[int] | None = None,
    aux_loss_coef: float = 0.01,
) -> dict[str, MoE]:
    """Replace every GLU MLP of the HuggingFace ``model`` (in ``layers``, default all) by an upcycled
    :class:`sb_layers.MoE` of ``num_experts`` routed copies (``top_k`` per token) and ``num_shared``
    shared ones; returns the new modules by name. In place, as ``inject_spiking``.

    Identity: at initialization the model's outputs equal the dense model's to float rounding
    (:func:`sb_layers.upcycle`, exact scaling). With ``labels``, the loss gains ``aux_loss_coef`` times the
    sum of the MoEs' load-balancing losses. The settings go into ``model.config.moe_upcycling`` (written by
    ``save_pretrained``; :func:`load_upcycled` reads them).

    Raises:
        ValueError: the model has no GLU MLP (in ``layers``; an index past the model's layers is an
            error), an MLP has biases, ``config.hidden_act`` is not one of the supported activations, an
            argument is out of range, or the model was upcycled already.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"model must be a HuggingFace PreTrainedModel (an nn.Module with a config), got {type(model).__name__}")
    if getattr(model.config, CONFIG_KEY, None):
        raise ValueError("model is upcycled already (model.config.moe_upcycling is set)")
    check_routing(num_experts, top_k, num_shared, router)
    check_real(aux_loss_coef, "aux_loss_coef", minimum=0)
    total = getattr(model.config, "num_hidden_layers", None)
    if layers is not None:
        layers = [check_int(index, "layers[i]", minimum=0) for index in layers]
        outside = sorted(i for i in layers if total is not None and i >= total)
        if outside:
            raise ValueError(f"layers {outside} are out of range: the model has {total} layers (0..{total - 1})")
    mlps = _glu_mlps(model, layers)
    if not mlps:
        raise ValueError("model has no GLU MLP (gate_proj, up_proj and down_proj linears) to upcycle"
                         + (f" in layers {layers}" if layers is not None else ""))
    activation = getattr(model.config, "hidden_act", None)
    if activation not in ACTIVATIONS:
        raise ValueError(f"config.hidden_act={activation!r} is not a supported GLU activation; supported: {sorted(ACTIVATIONS)}")
    settings = dict(num_experts=num_experts, top_k=top_k, num_shared=num_shared, router=router, layers=layers,
                    aux_loss_coef=float(aux_loss_coef))
    upcycled = {}
    for name, mlp in mlps.items():
        moe = upcycle(_dense_glu(name, mlp, activation), num_experts, top_k, num_shared, router)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, moe)
        upcycled[name] = moe
    setattr(model.config, CONFIG_KEY, settings)
    model.register_forward_hook(_add_balancing_loss, with_kwargs=True)
    return upcycled


def load_upcycled(directory: str | os.PathLike, model_class: Any = None, **config_overrides: Any) -> nn.Module:
    """The model ``save_pretrained`` wrote from an upcycled model, with its experts (every weight loaded
    strictly; ``ValueError`` naming missing or unexpected weights). ``model_class`` defaults to
    ``transformers.AutoModelForCausalLM``; ``config_overrides`` set config fields (e.g. ``dtype``
    handling is the caller's: the weights load in the dtype they were saved in)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"directory must be an existing directory, got {os.fspath(directory)!r}")
    config = AutoConfig.from_pretrained(root, **config_overrides)
    settings = getattr(config, CONFIG_KEY, None)
    if not settings:
        raise ValueError(f"{root / 'config.json'} has no {CONFIG_KEY!r}: not saved from an upcycle_mlps model")
    setattr(config, CONFIG_KEY, None)
    model = (model_class or AutoModelForCausalLM).from_config(config)
    upcycle_mlps(model, **settings)
    index = root / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(root / file)))
    first = next(iter(state.values()))
    model.to(first.dtype)
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {}) | set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(f"{root}: weights do not match the upcycled model: missing {missing}, unexpected {result.unexpected_keys}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


__all__ = ["load_upcycled", "upcycle_mlps"]
