"""``python -m sb_adapters``: inject spiking into a HuggingFace model from the command line.

- ``report``: inject, run the batches, print the per-layer spiking report merged over them (``--json``
  to save it).
- ``sweep-k``: the accuracy / energy trade-off of ``k`` (:func:`sb_adapters.sweep_k`): prints the table,
  writes ``sweep_k.json`` and ``sweep_k.png`` into ``--out``, and with ``--max-relative-error`` /
  ``--min-top1`` recommends the cheapest ``k`` that meets them.

The model is ``--tiny ARCH`` (a random model built from a config, :mod:`sb_adapters.tiny`: nothing is
downloaded) or ``--model NAME_OR_PATH`` (``from_pretrained``: a causal LM, else a base model). Inputs are
the ``--text`` strings through the model's tokenizer, or random token ids when no text is given.
The :class:`SpikingConfig` comes from ``--config DIR`` (a ``spiking_config.json``) or from the options.

Another command line can host both subcommands: ``add_parsers(subparsers)``, then
``run_command(args)`` when ``args`` has ``sb_adapters_command``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .config import SpikingConfig
from .injector import inject_spiking
from .report import record_batches
from .sweep import DEFAULT_KS, sweep_k
from .tiny import TINY_ARCHS, tiny_batches, tiny_model


def positive_float(text: str) -> float:
    """argparse type: a float > 0 (a usage error names the value otherwise)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _targets(text: str) -> str | list[str]:
    """``"all-linear"`` or a regex stay strings; ``"q_proj,v_proj"`` becomes a list of names."""
    return text.split(",") if "," in text else text


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", choices=TINY_ARCHS, help="a tiny random model built from a config (no download)")
    source.add_argument("--model", help="a HuggingFace model name or local directory (from_pretrained)")
    parser.add_argument("--text", action="append", help="an input text (repeatable); default: random token ids")
    parser.add_argument("--batches", type=positive_int, default=4, help="random batches when no --text (default: %(default)s)")
    parser.add_argument("--length", type=positive_int, default=16, help="random sequence length (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny model and random ids (default: %(default)s)")
    parser.add_argument("--config", type=Path, help="a directory holding spiking_config.json (overrides the options below)")
    parser.add_argument("--target-modules", type=_targets, default="all-linear", help="regex, comma-separated names, or all-linear")
    parser.add_argument("--exclude-modules", type=_targets, default=None, help="regex or comma-separated names")
    parser.add_argument("--coding", default="bitwise_bidirectional", help="spike codec (default: %(default)s)")
    parser.add_argument("--weight-bits", type=int, default=None, help="weight quantization width (default: float weights)")
    parser.add_argument("--group-size", type=int, default=128, help="input features per weight scale (default: %(default)s)")
    parser.add_argument("--dense-layers", type=int, nargs="+", default=None, help="layer indices kept dense")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` and ``sweep-k`` subcommands to another program's subparsers (the
    ``spikingbrain`` command can host them); run the parsed arguments with :func:`run_command`."""
    report = sub.add_parser("report", help="inject spiking into a HuggingFace model and print its spiking report")
    _add_common(report)
    report.add_argument("--k", type=positive_float, default=3.0, help="threshold divisor k (default: %(default)s)")
    report.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    sweep = sub.add_parser("sweep-k", help="accuracy / energy trade-off of k against the dense model")
    _add_common(sweep)
    sweep.add_argument("--k", type=positive_float, nargs="+", default=list(DEFAULT_KS), help="values of k (default: %(default)s)")
    sweep.add_argument("--out", type=Path, default=Path("sweep-k"), help="folder for sweep_k.json and sweep_k.png")
    sweep.add_argument("--max-relative-error", type=float, help="recommend the cheapest k within this relative error")
    sweep.add_argument("--min-top1", type=float, help="recommend the cheapest k with at least this top-1 agreement")
    for parser in (report, sweep):
        parser.set_defaults(sb_adapters_command=parser.prog.rsplit(" ", 1)[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sb_adapters", description="Spike-code a HuggingFace model's projections.")
    add_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    return parser


def _config(args: argparse.Namespace, k: float = 3.0) -> SpikingConfig:
    if args.config is not None:
        return SpikingConfig.from_pretrained(args.config)
    return SpikingConfig(
        target_modules=args.target_modules, exclude_modules=args.exclude_modules, k=k, coding=args.coding,
        weight_bits=args.weight_bits, group_size=args.group_size, dense_layers=args.dense_layers,
    )


def _model_and_batches(args: argparse.Namespace) -> tuple[torch.nn.Module, list[Any]]:
    if args.tiny is not None:
        model = tiny_model(args.tiny, seed=args.seed)
        vocab = model.config.vocab_size
    else:
        import transformers

        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(args.model)
        except ValueError:  # not a causal LM (an encoder): its base model
            model = transformers.AutoModel.from_pretrained(args.model)
        model.eval()
        vocab = model.config.vocab_size
    if args.text:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model if args.model else None)
        return model, [dict(tokenizer(text, return_tensors="pt")) for text in args.text]
    batches = tiny_batches(args.batches, batch=2, length=args.length, seed=args.seed)
    for batch in batches:
        batch["input_ids"] = batch["input_ids"] % vocab
    return model, batches


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``report`` / ``sweep-k`` command; returns the exit status (1: no k meets the bounds).

    Raises:
        ValueError: ``--text`` with ``--tiny`` (a tiny model has no tokenizer), or a bad config value.
    """
    if args.text and args.tiny:
        raise ValueError("--text needs a tokenizer: use --model (a tiny model takes random token ids)")
    model, batches = _model_and_batches(args)
    if args.sb_adapters_command == "report":
        inject_spiking(model, _config(args, k=args.k))
        report, _ = record_batches(model, batches)  # merged over the batches, as if one
        print(report)
        if args.json is not None:
            args.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        return 0
    sweep = sweep_k(model, batches, ks=args.k, config=_config(args))
    print(sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_k.json").write_text(json.dumps(sweep.as_dict(), indent=2) + "\n", encoding="utf-8")
    sweep.plot(args.out / "sweep_k.png")
    print(f"wrote {args.out / 'sweep_k.json'} and {args.out / 'sweep_k.png'}")
    if args.max_relative_error is not None or args.min_top1 is not None:
        try:
            best = sweep.recommend(max_relative_error=args.max_relative_error, min_top1_agreement=args.min_top1)
        except ValueError as err:
            print(f"no recommendation: {err}", file=sys.stderr)
            return 1
        print(f"recommended k = {best.k:g}: relative error {best.relative_error:.4g}, {best.energy_pj_per_mac:.4f} pJ/MAC")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except ValueError as err:  # bad inputs: argparse's usage error (exit status 2), not a traceback
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
