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
from dataclasses import asdict, dataclass, fields
from typing import Any

from sb_layers import SpikeCoding
from sb_neurons.spike import ClampSpec

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
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"dense_layers entries must be layer indices (ints >= 0), got {index!r}")
    return sorted(set(value))


@dataclass
class SpikingConfig:
    """How :func:`sb_adapters.inject_spiking` turns a model's projections into spike-coded ones.

    Attributes:
        target_modules: modules to spike-code: a regex (``re.fullmatch`` on the full name), a list of
            names or name suffixes, or ``"all-linear"`` (every ``nn.Linear`` / ``Conv1D`` except the
            output head). Default ``"all-linear"``.
        exclude_modules: modules never touched, same forms as ``target_modules`` (no ``"all-linear"``).
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k`` (3.0 as released; larger, finer).
        coding: spike codec of the event-driven form, one of ``sb_neurons.CODEC_NAMES``.
        mode: ``"count"`` (single step, what GPUs run) or ``"spike"`` (expanded spike train).
        clamp: ``None`` (counts unbounded), a signed bit width, or a ``(low, high)`` count range.
        weight_bits: ``None`` (float weights) or the width of symmetric weight quantization (2..8).
        group_size: input features per weight scale (128 as released); ``None``: one per output row.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``, passed to every spiking layer.
        spike_qk: also spike-code the q/k feature maps of linear-attention layers
            (:class:`sb_layers.GatedLinearAttention`) found in the model.
        dense_layers: layer indices kept dense (the fallback when accuracy drops): a module is kept
            when the first numbered component of its name (``h.3.attn``, ``layers.3.mlp``) is listed.
        record_stats: spiking layers accumulate spike statistics as they run (see ``spiking_report``).
    """

    target_modules: TargetSpec = ALL_LINEAR
    exclude_modules: TargetSpec = None
    k: float = 3.0
    coding: str = "bitwise_bidirectional"
    mode: str = "count"
    clamp: ClampSpec = None
    weight_bits: int | None = None
    group_size: int | None = 128
    backend: str = "torch"
    spike_qk: bool = False
    dense_layers: list[int] | None = None
    record_stats: bool = False

    def __post_init__(self) -> None:
        if self.target_modules is None:
            raise ValueError("target_modules must name the modules to spike-code (or be 'all-linear')")
        self.target_modules = _check_targets(self.target_modules, "target_modules")
        self.exclude_modules = _check_targets(self.exclude_modules, "exclude_modules")
        if self.exclude_modules == ALL_LINEAR:
            raise ValueError("exclude_modules cannot be 'all-linear': that would exclude every target")
        if isinstance(self.clamp, list):
            self.clamp = tuple(self.clamp)  # JSON has no tuples
        for flag in ("spike_qk", "record_stats"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        self.dense_layers = _check_layer_indices(self.dense_layers)
        self.spike_coding()  # validates k, clamp, coding, mode, weight_bits, group_size, backend

    def spike_coding(self) -> SpikeCoding:
        """The per-layer :class:`sb_layers.SpikeCoding` these options describe."""
        return SpikeCoding(
            k=self.k,
            clamp=self.clamp,
            codec=self.coding,
            mode=self.mode,
            weight_bits=self.weight_bits,
            group_size=self.group_size,
            backend=self.backend,
        )

    # -- serialization (PEFT's method names) ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (``clamp`` ranges become lists)."""
        data = asdict(self)
        if isinstance(data["clamp"], tuple):
            data["clamp"] = list(data["clamp"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpikingConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (never silently dropped)."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
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
        """Read the ``spiking_config.json`` that :meth:`save_pretrained` wrote into ``directory``."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path (str or os.PathLike), got {type(directory).__name__}")
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
