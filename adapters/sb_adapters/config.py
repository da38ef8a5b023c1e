"""SpikingConfig: which modules of a model to spike-code, and how (a PEFT-style config).

Like PEFT's configs it is a dataclass that round-trips through JSON (``to_dict`` / ``from_dict``,
``to_json_string`` / ``from_json_string``) and through a directory (``save_pretrained(dir)`` writes
``spiking_config.json``; ``from_pretrained(dir)`` reads it back). ``from_dict(config.to_dict()) == config``
holds for every valid config.

Target semantics are PEFT's (see :mod:`sb_adapters.matching`): a string is a regular expression matched
with ``re.fullmatch`` against the full module name; a list matches a module whose name equals an entry or
ends with ``"." + entry``; ``"all-linear"`` selects every linear layer except the output head.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from sb_layers import SpikeCoding
from sb_layers.spiking_linear import coding_with
from sb_neurons.spike import ClampSpec
from sb_neurons.validation import check_int

CONFIG_NAME = "spiking_config.json"
STATE_NAME = "spiking_state.safetensors"
ALL_LINEAR = "all-linear"

TargetSpec = list[str] | str | None


def _check_targets(value: object, name: str) -> TargetSpec:
    if value is None:
        return None
    if isinstance(value, str):
        if value != ALL_LINEAR:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name} is not a valid regular expression: {value!r} ({exc})") from exc
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        entries = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        if not entries:
            raise ValueError(f"{name} must not be an empty list; use None for no {name}")
        for entry in entries:
            if not isinstance(entry, str) or not entry:
                raise TypeError(f"{name} entries must be non-empty module names (str), got {entry!r}")
        return entries
    raise TypeError(f"{name} must be None, a regex string or a list of module names, got {type(value).__name__}")


def _check_layer_indices(value: object) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"dense_layers must be None, an int or a list of ints, got {type(value).__name__}")
    for index in value:
        check_int(index, "dense_layers entry (a layer index)", minimum=0)
    return sorted(set(value))


#: The flat keywords of :class:`SpikingConfig` (PEFT style, as ``LoraConfig(r=8)``): each sets that field of
#: ``coding``, a :class:`sb_layers.SpikeCoding`.
CODING_KEYWORDS = ("k", "codec", "clamp", "mode", "weight_bits", "group_size", "backend", "weight_clip")


class _Unset:
    """A flat coding keyword left out: the field keeps ``coding``'s value."""

    def __repr__(self) -> str:
        return "<coding's>"


_UNSET: Any = _Unset()


@dataclass(init=False)
class SpikingConfig:
    """How :func:`sb_adapters.inject_spiking` turns a model's projections into spike-coded ones.

    Attributes:
        target_modules: modules to spike-code: a regex (``re.fullmatch`` on the full name), a list of
            names or name suffixes, or ``"all-linear"`` (every ``nn.Linear`` / ``Conv1D`` except the
            output head). Default ``"all-linear"``.
        exclude_modules: modules never touched, same forms as ``target_modules`` (no ``"all-linear"``).
        coding: the :class:`sb_layers.SpikeCoding` of every spiking layer (``k``, ``clamp``, ``codec``,
            ``mode``, ``weight_bits``, ``group_size``, ``backend``, ``weight_clip``; validated there). A dict
            is read as SpikeCoding fields, the ones it leaves out at their defaults. In JSON: a nested dict.
        spike_qk: also spike-code the q/k feature maps of linear-attention layers
            (:class:`sb_layers.GatedLinearAttention`) found in the model.
        dense_layers: layer indices kept dense (the fallback when accuracy drops): a module is kept
            when the first numbered component of its name (``h.3.attn``, ``layers.3.mlp``) is listed.
        record_stats: spiking layers accumulate spike statistics as they run (read them with ``sb_layers.spike_report(model)``).

    Flat keywords (PEFT style, as ``LoraConfig(r=8)``): ``SpikingConfig(k=3, codec="ternary",
    target_modules=[...])`` sets those fields of ``coding``: ``k``, ``codec``, ``clamp``, ``mode``,
    ``weight_bits``, ``group_size``, ``backend`` and ``weight_clip`` (:data:`CODING_KEYWORDS`), over
    ``coding`` when both are given (``SpikingConfig(coding=base, k=4.0)``: ``base`` with ``k = 4``). They
    are keywords only: the config holds them in ``coding`` (``config.coding.k``), and reading or setting
    ``config.k`` raises an ``AttributeError`` naming ``coding.k``.
    """

    target_modules: TargetSpec = ALL_LINEAR
    exclude_modules: TargetSpec = None
    coding: SpikeCoding = field(default_factory=SpikeCoding)
    spike_qk: bool = False
    dense_layers: list[int] | None = None
    record_stats: bool = False

    def __init__(
        self,
        target_modules: TargetSpec = ALL_LINEAR,
        exclude_modules: TargetSpec = None,
        *,
        coding: SpikeCoding | dict | None = None,
        k: float = _UNSET,
        codec: str = _UNSET,
        clamp: ClampSpec = _UNSET,
        mode: str = _UNSET,
        weight_bits: int | None = _UNSET,
        group_size: int | None = _UNSET,
        backend: str = _UNSET,
        weight_clip: bool = _UNSET,
        spike_qk: bool = False,
        dense_layers: list[int] | None = None,
        record_stats: bool = False,
    ) -> None:
        if isinstance(coding, str):
            raise TypeError(
                f"coding must be a SpikeCoding or a dict of its fields, got the str {coding!r}; "
                f"a codec name is codec={coding!r}"
            )
        flat = dict(k=k, codec=codec, clamp=clamp, mode=mode, weight_bits=weight_bits, group_size=group_size,
                    backend=backend, weight_clip=weight_clip)
        updates = {name: value for name, value in flat.items() if value is not _UNSET}
        self.target_modules = target_modules
        self.exclude_modules = exclude_modules
        self.coding = coding_with(coding, updates)
        self.spike_qk = spike_qk
        self.dense_layers = dense_layers
        self.record_stats = record_stats
        self.__post_init__()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in CODING_KEYWORDS:
            raise AttributeError(
                f"SpikingConfig has no attribute {name!r}: it is coding.{name} "
                f"(config.coding = dataclasses.replace(config.coding, {name}=...))"
            )
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        if name in CODING_KEYWORDS:
            raise AttributeError(f"SpikingConfig has no attribute {name!r}: it is coding.{name} (config.coding.{name})")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __post_init__(self) -> None:
        if self.target_modules is None:
            raise ValueError("target_modules must name the modules to spike-code (or be 'all-linear')")
        self.target_modules = _check_targets(self.target_modules, "target_modules")
        self.exclude_modules = _check_targets(self.exclude_modules, "exclude_modules")
        if self.exclude_modules == ALL_LINEAR:
            raise ValueError("exclude_modules cannot be 'all-linear': that would exclude every target")
        for flag in ("spike_qk", "record_stats"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        self.dense_layers = _check_layer_indices(self.dense_layers)

    def spike_coding(self) -> SpikeCoding:
        """The per-layer :class:`sb_layers.SpikeCoding`: ``self.coding``."""
        return self.coding

    # -- serialization (PEFT's method names) ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values: ``coding`` a nested dict (a ``clamp`` range a list)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["coding"] = self.coding.to_dict()
        for name in ("target_modules", "exclude_modules", "dense_layers"):
            if isinstance(data[name], list):
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpikingConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (never silently dropped).

        The coding fields are read from the nested ``"coding"`` dict only: flat keys (``"k"``,
        ``"weight_bits"``, ..., or ``"coding"`` holding a codec name: an old ``spiking_config.json``
        format) raise a ``ValueError`` naming each one's ``coding.<field>``.
        """
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        flat = [(name, f"coding.{name}") for name in sorted(set(data) & set(CODING_KEYWORDS))]
        if isinstance(data.get("coding"), str):
            flat.append(("coding (a codec name)", "coding.codec"))
        if flat:
            renamed = ", ".join(f"{new} for {old}" for old, new in flat)
            raise ValueError(
                f"flat SpikingConfig fields of an old spiking_config.json format are not read: use {renamed}, "
                "in a nested \"coding\" dict"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SpikingConfig fields: {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_string(cls, text: str) -> SpikingConfig:
        return cls.from_dict(json.loads(text))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``spiking_config.json`` into ``save_directory`` (created if missing)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a directory, got the file {save_directory!s}")
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SpikingConfig:
        """Read the ``spiking_config.json`` that :meth:`save_pretrained` wrote into ``directory``.

        Raises ``NotADirectoryError`` when ``directory`` is a file, ``FileNotFoundError`` when it does not
        exist or holds no ``spiking_config.json``, ``ValueError`` / ``TypeError`` naming the file when it
        is not a valid config."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path (str or os.PathLike), got {type(directory).__name__}")
        if os.path.isfile(directory):
            raise NotADirectoryError(
                f"{directory!s} is a file, not a directory: pass the directory holding {CONFIG_NAME} "
                "(a JSON file itself reads with SpikingConfig.from_json_string(text))"
            )
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"directory {directory!s} does not exist (or is not a directory)")
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no {CONFIG_NAME} in {directory!s}: it is not a saved spiking model (save one with "
                "model.save_pretrained(dir) on an injected model, sb_adapters.save_spiking or SpikingConfig.save_pretrained)"
            )
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            return cls.from_json_string(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from exc
