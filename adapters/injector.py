"""inject_spiking / unload_spiking: swap a model's projections for spike-coded ones in place, and back.

``inject_spiking(model, config)`` replaces every module ``config`` selects (:mod:`sb_adapters.matching`)
with a spike-coded twin that *shares* its Parameters:

- ``nn.Linear`` -> :class:`sb_layers.SpikingLinear` (``SpikingLinear.from_linear``: same weight and bias
  Parameter objects);
- transformers ``Conv1D`` -> :class:`sb_adapters.SpikingConv1D` (weight a transposed view of the same
  storage, bias the same Parameter; state dict kept in Conv1D's layout).

Layers that already are :class:`SpikingLinear` are left as they are. With ``config.spike_qk`` every
:class:`sb_layers.GatedLinearAttention` (not excluded, not kept dense) also spike-codes its q/k feature maps.

State dict: the keys of the injected model are the original keys plus, when ``weight_bits`` is set,
one buffer ``<layer>.weight_quantizer.scales`` (float32, ``(out, in / group_size, 1)``) per spiking layer.
Tensors under the original keys keep their shapes, so the original checkpoint loads (``strict=False``
for the scales) into the injected model and vice versa.

Injecting into a model that is already injected raises ``RuntimeError``: unload first, or inject a
fresh model. ``unload_spiking(model)`` puts the original module objects back; since Parameters are
shared, they carry whatever training changed, and without training the model is bit-exactly the original.
``spiking_summary(model)`` lists what was replaced and which linear layers stayed dense (and why).

PEFT: ``SpikingConfig`` is not a registered PEFT method. ``peft.register_peft_method`` accepts only names
that are members of the closed ``peft.PeftType`` enum, which has none for us, and a PEFT tuner saves
adapter-only weights found by a name prefix, while spike coding adds no weights (it re-codes the
activations of the model's own layers, whose weights fine-tuning changes). Instead PEFT adapters
*compose* with an injected model: ``get_peft_model(inject_spiking(model, config), LoraConfig(...))``
wraps the spiking layers (a :class:`SpikingLinear` is an ``nn.Linear``), ``PeftModel.save_pretrained`` /
``from_pretrained`` save and load the LoRA weights (inject the fresh base model first, with
``SpikingConfig.from_pretrained``), and ``unload_spiking`` accepts the ``PeftModel`` and puts the original
layers back under the LoRA wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from sb_layers import GatedLinearAttention, SpikeCoding, SpikingLinear

from .config import ALL_LINEAR, SpikingConfig
from .conv1d import SpikingConv1D
from .matching import iter_targets, layer_index, linear_types, spec_matches

_RECORD_ATTRIBUTE = "_spiking_injection"


@dataclass
class InjectionRecord:
    """What :func:`inject_spiking` changed, kept on the model so that :func:`unload_spiking` can undo it."""

    config: SpikingConfig
    originals: dict[str, nn.Module] = field(default_factory=dict)
    attention_flags: dict[str, tuple[bool, SpikeCoding | None]] = field(default_factory=dict)


def _injected_root(model: nn.Module) -> nn.Module:
    """The module holding the injection record: ``model``, or the base model a PEFT wrapper holds."""
    if _RECORD_ATTRIBUTE in model.__dict__:
        return model
    getter = getattr(model, "get_base_model", None)  # peft.PeftModel
    if callable(getter):
        base = getter()
        if isinstance(base, nn.Module) and _RECORD_ATTRIBUTE in base.__dict__:
            return base
    return model


def get_injection(model: nn.Module) -> InjectionRecord | None:
    """The record of the injection into ``model`` (or into the base model of a ``PeftModel`` around it),
    or ``None`` when it is not injected."""
    return _injected_root(model).__dict__.get(_RECORD_ATTRIBUTE)


def get_spiking_config(model: nn.Module) -> SpikingConfig | None:
    """The :class:`SpikingConfig` ``model`` was injected with, or ``None``."""
    record = get_injection(model)
    return None if record is None else record.config


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child_name, new)


def _spiking_twin(module: nn.Module, coding: SpikeCoding, record_stats: bool) -> nn.Module:
    if isinstance(module, nn.Linear):
        return SpikingLinear.from_linear(module, coding=coding, record_stats=record_stats)
    return SpikingConv1D.from_conv1d(module, coding=coding, record_stats=record_stats)


def _select_layers(model: nn.Module, config: SpikingConfig) -> dict[str, nn.Module]:
    supported = linear_types()
    selected: dict[str, nn.Module] = {}
    for name, module in iter_targets(model, config):
        if isinstance(module, SpikingLinear):
            continue  # already spike-coded
        if not isinstance(module, supported):
            raise TypeError(
                f"target module {name!r} is a {type(module).__name__}; inject_spiking supports nn.Linear and "
                "transformers' Conv1D. Narrow target_modules (or add it to exclude_modules)."
            )
        selected[name] = module
    return selected


def _select_attention(model: nn.Module, config: SpikingConfig) -> dict[str, GatedLinearAttention]:
    if not config.spike_qk:
        return {}
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, GatedLinearAttention)
        and not spec_matches(config.exclude_modules, name)
        and not (config.dense_layers is not None and layer_index(name) in config.dense_layers)
    }


def _nothing_matched_error(model: nn.Module, config: SpikingConfig) -> ValueError:
    examples = [name for name, module in model.named_modules() if name and isinstance(module, linear_types())][:8]
    target = "every linear layer ('all-linear')" if config.target_modules == ALL_LINEAR else repr(config.target_modules)
    return ValueError(
        f"inject_spiking found no module to spike-code: target_modules={target}, "
        f"exclude_modules={config.exclude_modules!r}, dense_layers={config.dense_layers!r}. "
        f"Linear layers of this model include: {examples}"
    )


def inject_spiking(model: nn.Module, config: SpikingConfig) -> nn.Module:
    """Replace the modules ``config`` selects with spike-coded ones, in place; returns ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``config`` not a :class:`SpikingConfig`, or a
            selected module is neither ``nn.Linear`` nor ``Conv1D``.
        ValueError: nothing matched (no layer and, with ``spike_qk``, no linear attention).
        RuntimeError: ``model`` is already injected.
    """
    model = _check_model(model)
    if not isinstance(config, SpikingConfig):
        raise TypeError(f"config must be a SpikingConfig, got {type(config).__name__}")
    if get_injection(model) is not None:
        raise RuntimeError("model is already injected with spiking layers: call unload_spiking(model) first")
    layers = _select_layers(model, config)
    attention = _select_attention(model, config)
    if not layers and not attention:
        raise _nothing_matched_error(model, config)

    record = InjectionRecord(config=config)
    coding = config.spike_coding()
    for name, module in layers.items():
        _replace(model, name, _spiking_twin(module, coding, config.record_stats))
        record.originals[name] = module
    for name, module in attention.items():
        record.attention_flags[name] = (module.spike_qk, module.coding)
        module.spike_qk = True
        if module.coding is None:
            module.coding = coding
    model.__dict__[_RECORD_ATTRIBUTE] = record
    return model


def _locate_twin(model: nn.Module, name: str) -> tuple[nn.Module, nn.Module | None]:
    """``(twin, wrapper)``: the spiking layer injected at ``name`` and the PEFT tuner layer that wraps it
    (``None`` when it sits in the model directly). Wrappers expose the wrapped layer as ``base_layer``."""
    module, wrapper = model.get_submodule(name), None
    while not isinstance(module, SpikingLinear) and isinstance(getattr(module, "base_layer", None), nn.Module):
        wrapper, module = module, module.base_layer
    if not isinstance(module, SpikingLinear):
        raise RuntimeError(
            f"module {name!r} is a {type(module).__name__}, not the spiking layer inject_spiking put there "
            "(nor a PEFT wrapper of it): it was replaced after injection, so unload_spiking cannot restore it"
        )
    return module, wrapper


def _restore(model: nn.Module, name: str, original: nn.Module) -> None:
    twin, wrapper = _locate_twin(model, name)
    if isinstance(twin, SpikingConv1D):
        if not twin.shares_storage_with(original):
            # The view was re-allocated (by ``.to()`` for instance): carry its values back.
            original.weight.data = twin.weight.data.t().contiguous()
    elif twin.weight is not original.weight:
        original.weight = twin.weight
    if getattr(twin, "bias", None) is not None and twin.bias is not original.bias:
        original.bias = twin.bias
    if wrapper is None:
        _replace(model, name, original)
    else:
        wrapper.base_layer = original


def unload_spiking(model: nn.Module) -> nn.Module:
    """Put back the original module objects :func:`inject_spiking` replaced; returns ``model``.

    The originals share their Parameters with the spiking layers, so fine-tuned values are kept; without
    training, every tensor of the unloaded model is bit-exactly the original one (same objects). The
    weight-quantization scales are dropped with the spiking layers. This is also what PEFT's
    ``merge_and_unload`` does: spike coding adds no weights to merge, and fine-tuning has already changed
    the original Parameters in place.

    ``model`` may also be a ``peft.PeftModel`` around the injected model: the originals go back under the
    PEFT layers that wrap the spiking ones (their adapters are kept).

    Raises:
        ValueError: ``model`` was not injected.
        RuntimeError: an injected layer was replaced afterwards by something that does not wrap it.
    """
    model = _check_model(model)
    root = _injected_root(model)
    record = get_injection(root)
    if record is None:
        raise ValueError("model has no injected spiking layers (inject_spiking was not called, or already unloaded)")
    for name in record.originals:
        _locate_twin(root, name)  # check every layer before changing any
    for name, original in record.originals.items():
        _restore(root, name, original)
    for name, (spike_qk, coding) in record.attention_flags.items():
        module = root.get_submodule(name)
        module.spike_qk = spike_qk
        module.coding = coding
    del root.__dict__[_RECORD_ATTRIBUTE]
    return model


def spiking_summary(model: nn.Module) -> str:
    """What :func:`inject_spiking` did to ``model``, as text: the config, each replaced module with its
    original type and spiking type, and each linear layer left dense with the reason (excluded,
    ``dense_layers``, output head, or not targeted).

    Raises:
        ValueError: ``model`` was not injected.
    """
    root = _injected_root(_check_model(model))
    record = get_injection(root)
    if record is None:
        raise ValueError("model has no injected spiking layers: call inject_spiking(model, config) first")
    config = record.config
    coding = config.spike_coding()
    weights = "float weights" if coding.weight_bits is None else f"int{coding.weight_bits} weights, group {coding.group_size}"
    lines = [
        f"spiking: {len(record.originals)} modules spike-coded (k={config.k:g}, {config.coding}, mode={config.mode}, "
        f"{weights}, backend={config.backend})"
    ]
    lines += [f"  {name}: {type(original).__name__} -> {type(_locate_twin(root, name)[0]).__name__}" for name, original in record.originals.items()]
    lines += [f"  {name}: linear attention, q/k feature maps spike-coded" for name in record.attention_flags]
    head = None
    getter = getattr(root, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
        except (AttributeError, NotImplementedError):
            head = None
    dense = []
    for name, module in root.named_modules():
        if not name or not isinstance(module, linear_types()) or isinstance(module, SpikingLinear) or name in record.originals:
            continue
        if any(name.startswith(f"{replaced}.") for replaced in record.originals):
            continue  # a PEFT adapter's own linear inside a wrapped layer
        if spec_matches(config.exclude_modules, name):
            reason = "exclude_modules"
        elif config.dense_layers is not None and layer_index(name) in config.dense_layers:
            reason = f"dense_layers (layer {layer_index(name)})"
        elif module is head:
            reason = "output head"
        else:
            reason = "not targeted"
        dense.append(f"  {name}: {type(module).__name__}, {reason}")
    if dense:
        lines.append(f"kept dense: {len(dense)} linear modules")
        lines += dense
    return "\n".join(lines)


def spiking_layers(model: nn.Module) -> dict[str, SpikingLinear]:
    """Every :class:`SpikingLinear` of ``model`` (injected or built in), by module name."""
    return {name: module for name, module in _check_model(model).named_modules() if isinstance(module, SpikingLinear)}
