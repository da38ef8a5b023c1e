"""inject_spiking / unload_spiking: swap a model's projections for spike-coded ones in place, and back.

``inject_spiking(model, config)`` replaces every module ``config`` selects (:mod:`sb_adapters.matching`)
with a spike-coded twin that *shares* its Parameters:

- ``nn.Linear`` -> :class:`sb_layers.SpikingLinear` (``SpikingLinear.from_linear``: same weight and bias
  Parameter objects);
- transformers ``Conv1D`` -> :class:`sb_adapters.SpikingConv1D` (weight a transposed view of the same
  storage, bias the same Parameter; state dict kept in Conv1D's layout).

Layers that already are :class:`SpikingLinear` are left as they are. With ``config.spike_qk`` every
:class:`sb_layers.GatedLinearAttention` (not excluded, not kept dense) also spike-codes its q/k feature maps.

State dict: the keys of the injected model are the original keys plus, when ``coding.weight_bits`` is set,
one buffer ``<layer>.weight_quantizer.scales`` (float32, ``(out, in / group_size, 1)``) per spiking layer.
Tensors under the original keys keep their shapes, so the original checkpoint loads (``strict=False``
for the scales) into the injected model and vice versa.

Injecting into a model that is already injected raises ``RuntimeError``: unload first, or inject a
fresh model. ``unload_spiking(model)`` puts the original module objects back; since Parameters are
shared, they carry whatever training changed, and without training the model is bit-exactly the original.
``spiking_summary(model)`` lists what was replaced and which linear layers stayed dense (and why).

Saving and loading (PEFT's pattern: a config file beside the weights, one call to load both back):

- ``model.save_pretrained(dir)`` on an injected HuggingFace model writes the dense checkpoint (``config.json``,
  ``model.safetensors``: the original keys and layouts, so ``AutoModel*.from_pretrained(dir)`` loads the
  plain model without warnings), plus ``spiking_config.json`` (the :class:`SpikingConfig`) and, when the
  layers hold state of their own, ``spiking_state.safetensors`` (every tensor the injection added: the
  weight-quantization scales, calibrated or not). :func:`save_spiking` writes the two spiking files alone
  (any ``nn.Module``, as ``PeftModel.save_pretrained`` writes only the adapter).
- :func:`from_pretrained_spiking(dir) <from_pretrained_spiking>` loads both back into an injected model
  (as ``AutoPeftModelForCausalLM.from_pretrained``); :func:`load_spiking(model, dir) <load_spiking>` injects
  a model you built or loaded yourself with the saved config and restores the saved state (as
  ``PeftModel.from_pretrained(base, dir)``). Outputs after the reload equal those before the save exactly.

PEFT: ``SpikingConfig`` is not a registered PEFT method. ``peft.register_peft_method`` accepts only names
that are members of the closed ``peft.PeftType`` enum, which has none for us, and a PEFT tuner saves
adapter-only weights found by a name prefix, while spike coding adds no weights (it re-codes the
activations of the model's own layers, whose weights fine-tuning changes). Instead PEFT adapters
*compose* with an injected model: ``get_peft_model(inject_spiking(model, config), LoraConfig(...))``
wraps the spiking layers (a :class:`SpikingLinear` is an ``nn.Linear``); ``PeftModel.save_pretrained(dir)``
of such a model writes the LoRA weights and ``adapter_config.json`` as usual and, as PEFT writes its adapter
config, ``spiking_config.json`` and ``spiking_state.safetensors`` beside them (:func:`save_spiking`);
to load, inject the fresh base model from that folder (:func:`load_spiking`), then
``PeftModel.from_pretrained(base, dir)``. ``unload_spiking`` accepts the ``PeftModel`` and puts the
original layers back under the LoRA wrappers. How the ``PeftModel`` gets that ``save_pretrained``: PEFT
calls nothing of the model it wraps, so after the first injection a torch module-registration hook
(``torch.nn.modules.module.register_module_module_registration_hook``) watches for a PEFT model taking an
injected model as its ``base_model`` and gives that one instance the method (the model classes of PEFT and
transformers are left as they are).
"""

from __future__ import annotations

import inspect
import os
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sb_layers import GatedLinearAttention, SpikeCoding, SpikingLinear, spiking_layers

from .config import ALL_LINEAR, CONFIG_NAME, STATE_NAME, SpikingConfig
from .conv1d import SpikingConv1D
from .matching import is_router, iter_targets, layer_index, linear_types, spec_matches

_RECORD_ATTRIBUTE = "_spiking_injection"
_SAVE_ATTRIBUTE = "save_pretrained"


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


def check_dense_model(model: object, config: object, caller: str) -> SpikingConfig:
    """For the functions that compare a model with its injected self (``sweep_k``, ``choose_dense_layers``):
    ``model`` must be a module not injected yet, ``config`` None (the default :class:`SpikingConfig`) or a
    SpikingConfig, which is returned. ``caller`` names the function in the error."""
    _check_model(model)
    if get_injection(model) is not None:
        raise ValueError(f"{caller} compares against the dense model: pass it before inject_spiking (or unload_spiking first)")
    config = SpikingConfig() if config is None else config
    if not isinstance(config, SpikingConfig):
        raise TypeError(f"config must be a SpikingConfig, got {type(config).__name__}")
    return config


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


def model_layer_indices(model: nn.Module) -> list[int]:
    """The layer indices of ``model``: the first numbered component of its module names (``layers.3``)."""
    return sorted({index for name, _ in model.named_modules() if (index := layer_index(name)) is not None})


def _check_dense_layers(model: nn.Module, config: SpikingConfig) -> None:
    """A ``dense_layers`` entry that names no layer of ``model`` is an error, not silently nothing."""
    if not config.dense_layers:
        return
    present = model_layer_indices(model)
    outside = sorted(set(config.dense_layers) - set(present))
    if outside:
        have = f"{present[0]}..{present[-1]}" if present else "none (no numbered module)"
        raise ValueError(f"dense_layers {outside} name no layer of this model: its layers are {have}")


def inject_spiking(model: nn.Module, config: SpikingConfig) -> nn.Module:
    """Replace the modules ``config`` selects with spike-coded ones, in place; returns ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``config`` not a :class:`SpikingConfig`, or a
            selected module is neither ``nn.Linear`` nor ``Conv1D``.
        ValueError: nothing matched (no layer and, with ``spike_qk``, no linear attention), or a
            ``dense_layers`` entry names no layer of ``model``.
        RuntimeError: ``model`` is already injected.
    """
    model = _check_model(model)
    if not isinstance(config, SpikingConfig):
        raise TypeError(f"config must be a SpikingConfig, got {type(config).__name__}")
    if get_injection(model) is not None:
        raise RuntimeError("model is already injected with spiking layers: call unload_spiking(model) first")
    _check_dense_layers(model, config)
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
    _install_save_pretrained(model)
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
    if getattr(root.__dict__.get(_SAVE_ATTRIBUTE), "__func__", None) is _save_pretrained_with_spiking:
        del root.__dict__[_SAVE_ATTRIBUTE]
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
        f"spiking: {len(record.originals)} modules spike-coded (k={coding.k:g}, {coding.codec}, mode={coding.mode}, "
        f"{weights}, backend={coding.backend})"
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
        elif config.target_modules == ALL_LINEAR and is_router(root, name):
            reason = "router of a mixture of experts"
        else:
            reason = "not targeted"
        dense.append(f"  {name}: {type(module).__name__}, {reason}")
    if dense:
        lines.append(f"kept dense: {len(dense)} linear modules")
        lines += dense
    return "\n".join(lines)


# -- save / load ------------------------------------------------------------------------------------
def _install_save_pretrained(model: nn.Module) -> None:
    """Give an injected HuggingFace model a ``save_pretrained`` that also writes the spiking files (and a
    PEFT model that will wrap it one too: :func:`_watch_peft_wrappers`)."""
    if callable(getattr(type(model), _SAVE_ATTRIBUTE, None)) and _SAVE_ATTRIBUTE not in model.__dict__:
        model.__dict__[_SAVE_ATTRIBUTE] = types.MethodType(_save_pretrained_with_spiking, model)
    _watch_peft_wrappers()


_PEFT_WATCH: list[Any] = []  # the handle of the module-registration hook, once registered


def _watch_peft_wrappers() -> None:
    """Register :func:`_on_module_registration` with torch, once per process (at the first injection)."""
    if not _PEFT_WATCH:
        _PEFT_WATCH.append(torch.nn.modules.module.register_module_module_registration_hook(_on_module_registration))


def _on_module_registration(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    """torch's hook on every submodule registration: a PEFT model (``peft.PeftModel`` and its task classes)
    registering as its ``base_model`` an injected model, or the tuner around one (``LoraModel.model``), gets
    a ``save_pretrained`` that also writes the spiking files. Returns ``None``: the submodule is unchanged."""
    if name != "base_model" or not isinstance(submodule, nn.Module) or not type(module).__module__.startswith("peft."):
        return None
    inner = submodule if _RECORD_ATTRIBUTE in submodule.__dict__ else submodule.__dict__.get("_modules", {}).get("model")
    injected = isinstance(inner, nn.Module) and _RECORD_ATTRIBUTE in inner.__dict__
    if injected and callable(getattr(type(module), _SAVE_ATTRIBUTE, None)) and _SAVE_ATTRIBUTE not in module.__dict__:
        module.__dict__[_SAVE_ATTRIBUTE] = types.MethodType(_peft_save_pretrained_with_spiking, module)
    return None


def _peft_save_pretrained_with_spiking(self: nn.Module, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
    """PEFT's ``save_pretrained`` (the adapters and ``adapter_config.json``), then :func:`save_spiking` into
    the same folder, on the main process; as the class does when the base model is no longer injected."""
    save = type(self).save_pretrained
    if get_injection(self) is None:
        return save(self, save_directory, *args, **kwargs)
    _check_uniform_coding(self)  # before anything is written
    result = save(self, save_directory, *args, **kwargs)
    try:
        main_process = inspect.signature(save).bind(self, save_directory, *args, **kwargs).arguments.get("is_main_process", True)
    except TypeError:
        main_process = kwargs.get("is_main_process", True)
    if main_process:
        save_spiking(self, save_directory)
    return result


def _save_pretrained_with_spiking(self: nn.Module, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
    """The model class's ``save_pretrained`` on the dense state dict, then :func:`save_spiking`."""
    if get_injection(self) is None:  # unloaded by other means: behave as the class does
        return type(self).save_pretrained(self, save_directory, *args, **kwargs)
    _check_uniform_coding(self)
    if kwargs.get("state_dict") is None:
        spiking = set(spiking_state_dict(self))
        kwargs["state_dict"] = {key: value for key, value in self.state_dict().items() if key not in spiking}
    result = type(self).save_pretrained(self, save_directory, *args, **kwargs)
    if kwargs.get("is_main_process", True) and (not args or args[0]):
        save_spiking(self, save_directory)
    return result


def _injected_layers(model: nn.Module) -> tuple[nn.Module, InjectionRecord, dict[str, SpikingLinear]]:
    root = _injected_root(_check_model(model))
    record = get_injection(root)
    if record is None:
        raise ValueError("model has no injected spiking layers: call inject_spiking(model, config) first")
    return root, record, {name: _locate_twin(root, name)[0] for name in record.originals}


def spiking_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors the injection added to ``model``'s state dict, by full key (detached, as stored).

    These are the keys of the injected model that the original model lacks: ``<layer>.weight_quantizer.scales``
    (``(out, in / group_size, 1)``, float32) per spiking layer when ``weight_bits`` is set, nothing otherwise.
    Together with the original checkpoint and the :class:`SpikingConfig` they determine the injected model.

    Raises:
        ValueError: ``model`` was not injected.
    """
    _, record, twins = _injected_layers(model)
    state: dict[str, torch.Tensor] = {}
    for name, twin in twins.items():
        original_keys = set(record.originals[name].state_dict())
        for key, value in twin.state_dict().items():
            if key not in original_keys:
                state[f"{name}.{key}"] = value.detach()
    return state


def _check_uniform_coding(model: nn.Module) -> None:
    _, record, twins = _injected_layers(model)
    coding = record.config.spike_coding()
    for name, twin in twins.items():
        if twin.coding != coding or twin.record_stats != record.config.record_stats:
            raise ValueError(
                f"layer {name!r} was changed after injection (coding {twin.coding}, record_stats={twin.record_stats}) and "
                f"no longer follows the SpikingConfig ({coding}, record_stats={record.config.record_stats}): "
                f"{CONFIG_NAME} describes one coding for every layer, so this model cannot be saved as it is"
            )


def save_spiking(model: nn.Module, save_directory: str | os.PathLike) -> None:
    """Write ``spiking_config.json`` and, when the injection holds tensors, ``spiking_state.safetensors``.

    ``model`` is an injected model (or a ``PeftModel`` around one). The dense weights are not written:
    ``model.save_pretrained(dir)`` of an injected HuggingFace model calls this after writing them.

    Raises:
        ValueError: ``model`` was not injected, ``save_directory`` is a file, or a spiking layer's coding
            was changed after injection so that the config no longer describes it.
    """
    from safetensors.torch import save_file

    _, record, _ = _injected_layers(model)
    _check_uniform_coding(model)
    record.config.save_pretrained(save_directory)  # checks save_directory
    state = spiking_state_dict(model)
    path = os.path.join(save_directory, STATE_NAME)
    if state:
        save_file({key: value.contiguous().cpu() for key, value in state.items()}, path)
    elif os.path.isfile(path):
        os.remove(path)  # a stale state file from an earlier save would not match this config


def _restore_state(model: nn.Module, directory: str | os.PathLike) -> None:
    from safetensors.torch import load_file

    expected = spiking_state_dict(model)
    path = os.path.join(directory, STATE_NAME)
    saved = load_file(path) if os.path.isfile(path) else {}
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{CONFIG_NAME} and {STATE_NAME} in {directory!s} do not match this model: the injection has "
            f"{len(expected)} spiking tensors; missing from the folder: {missing[:6]}, in the folder but not in the "
            f"model: {unexpected[:6]} (was {CONFIG_NAME} edited, or saved from another model?)"
        )
    for key, target in expected.items():
        if saved[key].shape != target.shape:
            raise ValueError(
                f"{STATE_NAME}: {key} has shape {tuple(saved[key].shape)}, the model's has {tuple(target.shape)} "
                "(saved from another model or another group_size?)"
            )
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(saved[key].to(device=target.device, dtype=target.dtype))


def load_spiking(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Inject ``model`` with the :class:`SpikingConfig` saved in ``directory`` and restore the saved spiking
    state (the weight-quantization scales); returns ``model``. PEFT's ``PeftModel.from_pretrained(base, dir)``.

    ``model`` holds the dense weights (loaded from the same folder, or the original checkpoint); with them
    the outputs equal those of the model that was saved, exactly.

    Raises:
        FileNotFoundError: ``directory`` does not exist or holds no ``spiking_config.json``.
        NotADirectoryError: ``directory`` is a file.
        ValueError: the config cannot be read, matches no module of ``model``, or the saved state does
            not fit the injected layers (``model`` is then left un-injected).
        RuntimeError: ``model`` is already injected.
    """
    model = _check_model(model)
    config = SpikingConfig.from_pretrained(directory)
    inject_spiking(model, config)
    try:
        _restore_state(model, directory)
    except BaseException:
        unload_spiking(model)
        raise
    return model


def from_pretrained_spiking(directory: str | os.PathLike, model_class: type | None = None, **kwargs: Any) -> nn.Module:
    """Load a folder that an injected model's ``save_pretrained`` wrote: the dense model, injected with the
    saved config, its spiking state restored. PEFT's ``AutoPeftModelForCausalLM.from_pretrained(dir)``.

    Args:
        directory: a local folder (nothing is downloaded) with ``config.json``, the weights and
            ``spiking_config.json``.
        model_class: the transformers class to load with (its ``from_pretrained``); default the class
            named in ``config.json``'s ``architectures``.
        **kwargs: passed to ``model_class.from_pretrained`` (``dtype``, ``device_map``, ...).

    Returns:
        The injected model; its outputs equal those of the model that was saved.

    Raises:
        FileNotFoundError: ``directory`` does not exist, or has no ``spiking_config.json``.
        NotADirectoryError: ``directory`` is a file.
        ValueError: ``model_class`` is not given and ``config.json`` names no transformers class, or the
            saved spiking files do not match the model (see :func:`load_spiking`).
    """
    SpikingConfig.from_pretrained(directory)  # fail before loading weights when the folder is not spiking
    if model_class is None:
        import transformers

        hf_config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
        names = list(getattr(hf_config, "architectures", None) or [])
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            raise ValueError(
                f"config.json in {directory!s} names no transformers model class (architectures={names!r}): "
                "pass model_class=, e.g. transformers.AutoModelForCausalLM"
            )
    if not callable(getattr(model_class, "from_pretrained", None)):
        raise TypeError(f"model_class must have a from_pretrained method, got {model_class!r}")
    kwargs.setdefault("local_files_only", True)
    model = model_class.from_pretrained(directory, **kwargs)
    return load_spiking(model, directory)
