"""A measured run of ``benchmarks/ttft.py`` beside the cost model: its JSON schema (:func:`validate_run`,
:func:`load_run`), the model shape it describes (:func:`shape_from_run`), the measured sparsity of a
spike-statistics file (:func:`sparsity_from_stats`) and the theoretical speedups beside the measured ones
(:func:`compare_run`). The arithmetic is :mod:`~sb_layers.models.spikingbrain.cost_model`'s."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sb_neurons.validation import check_int, check_positive, check_real

from .cost_model import Estimate, ModelShape, active_from_sparsity, estimate

RUN_MODELS = ("qwen2", "qwen2-cudnn", "spikingbrain-bf16", "spikingbrain-w8aspike")
"""The ``model`` names a ``benchmarks/ttft.py`` run may hold."""


def _from_file(check: Callable[..., Any], value: Any, where: str, **bounds: Any) -> Any:
    """``check(value, where, **bounds)`` for a value read from a run file, where a wrong type is a bad
    value of the file (``ValueError``, which the command line reports as such) rather than a bad argument."""
    try:
        return check(value, where, **bounds)
    except TypeError as error:
        raise ValueError(str(error)) from None


def _read_json(path: str | os.PathLike, what: str) -> object:
    """The parsed JSON of the file ``path``; ``ValueError`` naming ``what`` if it is missing or not JSON."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} must be an existing file, got {os.fspath(path)!r}")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {os.fspath(path)!r} is not valid JSON: {error}") from None


def sparsity_from_stats(path: str | os.PathLike) -> float:
    """The measured sparsity in a spike-statistics JSON: the fraction of silent channels (activation
    elements whose spike count is zero), ``silent_channel_fraction`` of ``SpikingReport.as_dict()`` (its
    ``total``) or of ``SpikeStats.as_dict()`` (see :func:`sb_layers.models.spikingbrain.spike_report`).

    This is the sparsity ``benchmarks/ttft.py`` records as ``spike_sparsity``, so that ``a`` is the share
    of neurons that fire at all. (The report's 69.15% is a per-time-step figure of T = 3 trains,
    ``SpikeStats.sparsity``; pass it with ``--sparsity`` to use that definition instead.)
    """
    data = _read_json(path, "spike statistics file")
    stats = data.get("total", data) if isinstance(data, dict) else None
    if not isinstance(stats, dict) or "silent_channel_fraction" not in stats:
        raise ValueError(
            f"spike statistics file {os.fspath(path)!r} must hold 'silent_channel_fraction' "
            "(or 'total': {'silent_channel_fraction': ...})"
        )
    return _from_file(check_real, stats["silent_channel_fraction"], "spike statistics 'silent_channel_fraction'", minimum=0, maximum=1)


# --- a measured run (benchmarks/ttft.py) -----------------------------------------------------------


def _field(mapping: Mapping, key: str, where: str) -> Any:
    if key not in mapping:
        raise ValueError(f"{where} lacks the field {key!r}")
    return mapping[key]


def _count_field(value: Any, where: str) -> int:
    """A layer count, or a list of layer indices (its length)."""
    if isinstance(value, list):
        return len(value)
    return _from_file(check_int, value, where, minimum=0)


def validate_run(run: Any) -> dict:
    """Check the ``benchmarks/ttft.py`` JSON schema; errors name the offending field and its range."""
    if not isinstance(run, dict):
        raise ValueError(f"run must be a JSON object, got {type(run).__name__}")
    for key in ("device", "date"):
        if not isinstance(_field(run, key, "run"), str):
            raise ValueError(f"run['{key}'] must be a string, got {run[key]!r}")
    config = _field(run, "config", "run")
    if not isinstance(config, dict):
        raise ValueError(f"run['config'] must be an object, got {type(config).__name__}")
    for key in ("num_layers", "gla_layers", "swa_layers", "window", "hidden_size", "num_experts"):
        value = _field(config, key, "run['config']")
        if key in ("gla_layers", "swa_layers"):
            _count_field(value, f"run['config']['{key}']")
        else:
            _from_file(check_int, value, f"run['config']['{key}']", minimum=0 if key == "num_experts" else 1)
    _from_file(check_positive, _field(run, "matmul_tflops", "run"), "run['matmul_tflops']")
    rows = _field(run, "rows", "run")
    if not isinstance(rows, list) or not rows:
        raise ValueError("run['rows'] must be a non-empty list")
    for index, row in enumerate(rows):
        where = f"run['rows'][{index}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where} must be an object, got {type(row).__name__}")
        if _field(row, "model", where) not in RUN_MODELS:
            raise ValueError(f"{where}['model'] must be one of {RUN_MODELS}, got {row['model']!r}")
        _from_file(check_int, _field(row, "context", where), f"{where}['context']", minimum=1)
        for key in ("ttft_ms", "peak_mem_gib"):
            value = row.get(key)
            if value is not None:
                _from_file(check_positive, value, f"{where}['{key}'] (null or a number)")
    sparsity = run.get("spike_sparsity")
    if sparsity is not None:
        _from_file(check_real, sparsity, "run['spike_sparsity']", minimum=0, maximum=1)
    return run


def load_run(path: str | os.PathLike) -> dict:
    """Read and validate the JSON written by ``benchmarks/ttft.py``."""
    return validate_run(_read_json(path, "run file"))


RUN_DIMENSIONS: dict[str, tuple[str, ...]] = {  # ModelShape field -> names a run's config may use for it
    "num_heads": ("num_heads", "num_attention_heads"),
    "num_kv_heads": ("num_kv_heads", "num_key_value_heads"),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size",),
}
"""The :class:`ModelShape` fields a run's config may leave out (the keyword arguments of :func:`shape_from_run`),
each with the names the config may give it under."""


def shape_from_run(run: Mapping, **dimensions: int | None) -> ModelShape:
    """The :class:`ModelShape` of a run's ``config``.

    The schema names ``num_layers``, ``gla_layers``, ``swa_layers`` (counts or index lists), ``window``,
    ``hidden_size`` and ``num_experts``; ``full_layers = num_layers - gla_layers - swa_layers``. The head
    layout and FFN width (``num_heads``, ``num_kv_heads``, ``head_dim``, ``intermediate_size``) come from
    ``dimensions`` when given (not None), else from the run's config when it names them (also as
    ``num_attention_heads`` / ``num_key_value_heads``), else from SpikingBrain-7B, but only when the run's
    ``hidden_size`` is the 7B's: a smaller model's head layout cannot be guessed, and the error says so.
    MoE runs count every layer as MoE, with 1 routed expert per token and no shared one.
    """
    config = validate_run(dict(run))["config"]
    base = ModelShape()
    layers = config["num_layers"]
    gla = _count_field(config["gla_layers"], "gla_layers")
    swa = _count_field(config["swa_layers"], "swa_layers")
    fields: dict[str, Any] = dict(
        num_layers=layers, hidden_size=config["hidden_size"], window=config["window"], gla_layers=gla, swa_layers=swa,
        full_layers=max(0, layers - gla - swa), num_experts=config["num_experts"],
    )
    missing = []
    for name, keys in RUN_DIMENSIONS.items():
        if dimensions.get(name) is not None:
            fields[name] = dimensions[name]
            continue
        found = [config[key] for key in keys if key in config]
        if found:
            fields[name] = _from_file(check_int, found[0], f"run['config']['{keys[-1]}']", minimum=1)
        elif config["hidden_size"] == base.hidden_size:
            fields[name] = getattr(base, name)
        else:
            missing.append(name)
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ValueError(
            f"run['config'] has hidden_size={config['hidden_size']} (not SpikingBrain-7B's {base.hidden_size}) "
            f"and does not name {', '.join(missing)}: give them ({flags})"
        )
    unknown = set(dimensions) - set(RUN_DIMENSIONS)
    if unknown:
        raise TypeError(f"shape_from_run got unexpected dimensions {sorted(unknown)}")
    return ModelShape(**fields)


@dataclass(frozen=True)
class RunComparison:
    """Theory beside measurement at one context length (speedups over Qwen2; None where not measured)."""

    context: int
    bf16: Estimate
    w8aspike: Estimate | None
    measured_bf16: float | None
    measured_w8aspike: float | None
    qwen2_ttft_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "qwen2_ttft_ms": self.qwen2_ttft_ms,
            "theory_bf16": self.bf16.as_dict(),
            "measured_bf16": self.measured_bf16,
            "theory_w8aspike": None if self.w8aspike is None else self.w8aspike.as_dict(),
            "measured_w8aspike": self.measured_w8aspike,
        }


def compare_run(
    run: Mapping,
    shape: ModelShape | None = None,
    *,
    alpha: float | None = None,
    attended: float | None = None,
    sparsity: float | None = None,
    experts: float | None = None,
) -> list[RunComparison]:
    """Per context length of the run: the theoretical speedups (bf16 with ``a = 1``; W8ASpike with
    ``a = 1 - sparsity``, sparsity given or the run's ``spike_sparsity``) and the measured ones
    (Qwen2's time to first token over ours)."""
    run = validate_run(dict(run))
    shape = shape or shape_from_run(run)
    if sparsity is None:
        sparsity = run.get("spike_sparsity")
    active = None if sparsity is None else active_from_sparsity(sparsity)
    times: dict[tuple[str, int], float | None] = {}
    for row in run["rows"]:
        times[(row["model"], row["context"])] = row.get("ttft_ms")
    contexts = sorted({row["context"] for row in run["rows"]})
    comparisons = []
    for context in contexts:
        common = dict(phase="prefill", alpha=alpha, attended=attended, experts=experts)
        qwen = times.get(("qwen2", context))

        def measured(model: str) -> float | None:
            ours = times.get((model, context))
            return None if qwen is None or ours is None else qwen / ours

        comparisons.append(
            RunComparison(
                context=context,
                bf16=estimate(shape, context, active=1.0, **common),
                w8aspike=None if active is None else estimate(shape, context, active=active, **common),
                measured_bf16=measured("spikingbrain-bf16"),
                measured_w8aspike=measured("spikingbrain-w8aspike"),
                qwen2_ttft_ms=qwen,
            )
        )
    return comparisons


__all__ = ["RUN_DIMENSIONS", "RUN_MODELS", "RunComparison", "compare_run", "load_run", "shape_from_run", "sparsity_from_stats", "validate_run"]
