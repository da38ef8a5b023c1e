"""``spikingbrain estimate``: the command line of the cost model (wired into :mod:`spikingbrain.cli`).

The model itself, ``R = alpha * (m/n) + (1 - alpha) * a * (k/M)`` with its FLOP-count inputs and the
comparison with a ``benchmarks/ttft.py`` run, is three library modules:
:mod:`~sb_layers.models.spikingbrain.cost_model` (the arithmetic),
:mod:`~sb_layers.models.spikingbrain.cost_runs` (a measured run) and
:mod:`~sb_layers.models.spikingbrain.cost_tables` (the tables); this module parses the flags (with the
argparse types of :mod:`spikingbrain.arguments`), derives the model shape from them, prints the tables and
writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import constants  # the cost model's values the parser shows (imported as a module: not names of this one)

if TYPE_CHECKING:  # the cost model is imported by the command that runs, not by the parser (--help stays light)
    from sb_layers.models.spikingbrain import cost_model

ESTIMATE_HELP = "theoretical speedup 1/R of the cost model, beside a measured run (benchmarks/ttft.py JSON)"
ESTIMATE_DESCRIPTION = """\
Cost of SpikingBrain relative to a dense Transformer of the same dimensions:

  R = alpha * (m/n) + (1 - alpha) * a * (k/M),    speedup = 1 / R

  alpha  attention share of the dense baseline's FLOPs at the context length
  m/n    attended fraction of the context (sliding windows; linear attention as head_dim keys per token)
  a      active-neuron fraction = 1 - spike sparsity (saved work only on event-driven hardware)
  k/M    active-expert fraction (share of the baseline's linear FLOPs computed per token)

Each input is given by its flag or derived, per context length, from the model shape (flags, --config,
or the run's config; default SpikingBrain-7B). FLOP count (2 per multiply-add): attention 4*H*d per
(query, key) pair, n(n+1)/2 pairs in prefill (sum_i min(i, w) in a window of w); linear
2*D*H*d + 4*D*K*d + 2*H*d*D (q, k, v, o) + 6*D*I per FFN (every expert in the baseline) per token;
alpha = attention / (attention + linear). See sb_layers.models.spikingbrain.cost_model and
docs/cost-model.md."""


def _context_arg(text: str) -> int:
    """``4096``, ``4k``, ``128K`` or ``1M`` (k = 1024 tokens)."""
    scale = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) * scale < 1:
        raise argparse.ArgumentTypeError(f"must be a positive token count such as 4096, 32k or 1M, got {text}")
    return int(digits) * scale


def _model_config_arg(text: str) -> Path:
    """argparse type of ``--config``: a readable config.json, or a folder holding one."""
    from .arguments import input_file

    path = Path(text).expanduser()
    if text and path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"folder {text!r} holds no config.json")
        return input_file(os.fspath(path)).parent
    return input_file(text)


def add_estimate_parser(sub: Any) -> Any:
    """Register ``spikingbrain estimate`` on an argparse subparsers object. File arguments are checked
    while parsing (before any work): ``--spike-stats`` and ``--run`` must be readable files, ``--config``
    a config.json or a folder holding one, ``--json`` a file that can be written (folders created)."""
    from .arguments import fraction, input_file, nonnegative_float, output_file

    parser = sub.add_parser(
        "estimate", help=ESTIMATE_HELP, description=ESTIMATE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    given = parser.add_argument_group("cost-model inputs (derived when not given)")
    given.add_argument("--context", type=_context_arg, nargs="+", help="context lengths n, e.g. 4k 32k 128k (default: 4k 32k 128k 512k, or the run's)")
    given.add_argument("--phase", choices=constants.PHASES, default="prefill", help="prefill of n tokens (time to first token) or decoding one token after n (default: %(default)s)")
    given.add_argument("--alpha", type=fraction, help="attention share of the baseline's cost, in [0, 1]")
    given.add_argument("--attended-fraction", type=nonnegative_float, help="m/n, >= 0")
    spikes = given.add_mutually_exclusive_group()
    spikes.add_argument("--sparsity", type=fraction, help="fraction of silent neurons (zero spike count) in [0, 1]; a = 1 - sparsity")
    spikes.add_argument("--active-fraction", type=fraction, help="a in [0, 1]")
    spikes.add_argument("--spike-stats", type=input_file, metavar="FILE", help="JSON of measured spike statistics (SpikingReport.as_dict() or SpikeStats.as_dict()): sparsity = its silent_channel_fraction")
    given.add_argument("--expert-fraction", type=fraction, help="k/M in (0, 1]")

    shape = parser.add_argument_group("model shape (default: SpikingBrain-7B)")
    shape.add_argument("--config", type=_model_config_arg, metavar="PATH", help="config.json (or its directory) of a SpikingBrain model, or of a Qwen2 / Llama / Mistral Transformer (then the SpikingBrain model converted from it); flags below override it")
    defaults = argparse.Namespace(**constants.SHAPE_7B)  # cost_model.ModelShape()'s (tests/cli/test_startup.py)
    for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                 "gla_layers", "swa_layers", "full_layers", "window", "num_experts", "experts_per_token",
                 "shared_experts", "moe_layers"):
        default = getattr(defaults, name)
        note = "" if default is None else f" (7B: {default})"
        shape.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=name.replace("_", " ") + note)

    parser.add_argument("--run", type=input_file, metavar="FILE", help="JSON written by benchmarks/ttft.py: print the theory beside the measured speedup per context")
    parser.add_argument("--json", type=output_file, metavar="FILE", help="also write the rows as JSON to this file (missing folders are created)")
    return parser


def _model_config(path: Path) -> Any:
    """The transformers config in the config.json ``path``; every error names the file."""
    from transformers import AutoConfig  # knows the model types: importing cost_model registered them

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--config {os.fspath(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ValueError(f"--config {os.fspath(path)!r} names no model_type: not a model's config.json")
    try:
        return AutoConfig.from_pretrained(os.fspath(path))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--config {os.fspath(path)!r} could not be read: {' '.join(str(error).split())}") from None


def _shape_from_args(args: Any, run: Mapping | None) -> cost_model.ModelShape:
    from sb_layers.models.spikingbrain import cost_model, cost_runs

    if args.config is not None:
        path = args.config / "config.json" if args.config.is_dir() else args.config  # the file given, not its folder's
        config = _model_config(path)
        try:
            shape = cost_model.ModelShape.from_config(config)
        except ValueError as error:
            raise ValueError(f"--config {os.fspath(path)!r}: {error}") from None
        if config.model_type in cost_model.CONVERTIBLE_MODEL_TYPES:
            print(f"--config {os.fspath(path)!r} is a {config.model_type} Transformer: the shape is that of the SpikingBrain "
                  "model converted from it (same widths; GLA and SWA layers alternating, SWA at the odd layers, as in the report)")
    elif run is not None:
        shape = cost_runs.shape_from_run(run, **{name: getattr(args, name) for name in cost_runs.RUN_DIMENSIONS})
    else:
        shape = cost_model.ModelShape()
    overrides = {name: getattr(args, name) for name in asdict(shape) if getattr(args, name, None) is not None}
    return replace(shape, **overrides) if overrides else shape


def run_estimate_command(args: Any) -> list[dict]:
    """``spikingbrain estimate``: print the table(s); returns the rows written to ``--json``."""
    from sb_layers.models.spikingbrain import cost_model, cost_runs, cost_tables

    if args.run is not None and args.phase != "prefill":
        raise ValueError("--run compares time to first token: --phase must be 'prefill'")
    if args.expert_fraction is not None and args.expert_fraction == 0:
        raise ValueError("--expert-fraction must be in (0, 1], got 0")
    sparsity = args.sparsity
    if args.spike_stats is not None:
        sparsity = cost_runs.sparsity_from_stats(args.spike_stats)
    active = args.active_fraction
    try:
        run = cost_runs.load_run(args.run) if args.run is not None else None
    except ValueError as error:  # name the file when the message does not
        message = str(error)
        raise ValueError(message if os.fspath(args.run) in message else f"--run {os.fspath(args.run)!r}: {message}") from None
    shape = _shape_from_args(args, run)
    inputs = dict(alpha=args.alpha, attended=args.attended_fraction, experts=args.expert_fraction)
    print(
        f"Model shape: {shape.num_layers} layers (GLA {shape.gla_layers}, SWA {shape.swa_layers} with window "
        f"{shape.window}, full {shape.full_layers}), hidden {shape.hidden_size}, heads {shape.num_heads}/"
        f"{shape.num_kv_heads} x {shape.head_dim}, FFN {shape.intermediate_size}"
        + (f", MoE {shape.experts_per_token}+{shape.shared_experts} of {shape.num_experts}+{shape.shared_experts} experts" if shape.num_experts else "")
    )
    print("R = alpha * (m/n) + (1 - alpha) * a * (k/M); speedup = 1/R")
    if run is not None:
        if args.phase != "prefill":
            raise ValueError("--run compares time to first token: --phase must be 'prefill'")
        if active is not None:
            sparsity = 1.0 - active
        comparisons = cost_runs.compare_run(run, shape, sparsity=sparsity, **inputs)
        if args.context:
            wanted = set(args.context)
            comparisons = [c for c in comparisons if c.context in wanted]
            if not comparisons:
                raise ValueError(f"--context {sorted(wanted)} matches no context length of the run")
        used = sparsity if sparsity is not None else run.get("spike_sparsity")
        print(f"Run: {run['device']}, {run['date']}; measured speedup = qwen2 TTFT / ours; W8ASpike a = 1 - sparsity"
              + (f" = 1 - {used:.4f}" if used is not None else " (no sparsity: theory not shown)"))
        print("(a GPU runs spike-coded matmuls densely: its W8ASpike figure is not expected to reach the theory's)\n")
        print(cost_tables.format_comparison(comparisons))
        rows = [c.as_dict() for c in comparisons]
    else:
        if sparsity is not None:
            active = cost_model.active_from_sparsity(sparsity)
        contexts = args.context or list(cost_model.DEFAULT_CONTEXTS)
        estimates = [cost_model.estimate(shape, n, phase=args.phase, active=active, **inputs) for n in contexts]
        print(f"Phase: {args.phase}; sources: " + ", ".join(f"{k} {v}" for k, v in estimates[0].sources.items()) + "\n")
        print(cost_tables.format_estimates(estimates))
        rows = [e.as_dict() for e in estimates]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"shape": asdict(shape), "rows": rows}, indent=2))
        print(f"\nWrote {args.json}")
    return rows


__all__ = ["ESTIMATE_DESCRIPTION", "ESTIMATE_HELP", "add_estimate_parser", "run_estimate_command"]
