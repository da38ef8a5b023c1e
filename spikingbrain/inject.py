"""The ``report`` and ``sweep-k`` subcommands of ``spikingbrain``: inject spiking into a HuggingFace
model from the command line (``python -m sb_adapters`` is an alias of ``spikingbrain``, same parser).

- ``spikingbrain report``: inject, print which modules were spike-coded and which were kept dense, run
  the batches and print the per-layer spiking report merged over them (``--json`` to save it).
- ``spikingbrain sweep-k``: the accuracy / energy trade-off of ``k`` (:func:`sb_adapters.sweep_k`):
  prints the table, writes ``sweep_k.json`` and ``sweep_k.png`` into ``--out``, and with
  ``--max-relative-error`` / ``--min-top1`` recommends the cheapest ``k`` that meets them.

The model is ``--tiny ARCH`` (a random model built from a config, :mod:`sb_adapters.tiny`) or ``--model
DIR_OR_ID``: a local directory holding a saved model (``config.json``), or a HuggingFace hub id already
in the local cache (its cached snapshot is loaded as a local folder). Nothing is downloaded: fetch a
hub model first, e.g. with ``hf download NAME``. Inputs are the ``--text`` strings through the model's
tokenizer, or random token ids when no text is given. The :class:`SpikingConfig` comes from ``--config``
(a directory holding ``spiking_config.json``, or that file) or from the options.

``--group-size auto`` (the default) picks the largest of 128, 64, 32, ..., 1 that divides the
``in_features`` of every module to be injected (128 as released, when it fits; 32 on the tiny models).

Every argument that names a file or folder is checked while the command line is parsed, before any work:
files to read must exist and be readable, output files and folders must be creatable and writable
(:mod:`spikingbrain.arguments`, whose types every subcommand shares). Errors are argparse usage errors
(exit status 2) naming the argument.

:func:`add_parsers` adds both subcommands to the ``spikingbrain`` parser; :func:`run_command` runs the
parsed arguments (they carry ``inject_command``). These commands use sb_adapters through its public
modules only (the dependency direction of ``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sb_adapters import SpikingConfig, inject_spiking, spiking_summary, sweep_k
from sb_adapters.config import CONFIG_NAME
from sb_adapters.matching import iter_targets
from sb_adapters.report import record_batches
from sb_adapters.sweep import DEFAULT_KS
from sb_adapters.tiny import TINY_ARCHS, tiny_batches, tiny_model
from sb_layers import SpikeCoding
from sb_neurons import CODEC_NAMES

from .arguments import (
    HelpFormatter,
    _check_readable,
    _path,
    fraction,
    input_file,
    nonnegative_float,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    write_text,
)

GROUP_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)
"""Candidates of ``--group-size auto``, largest first."""


# --- argparse types of these commands --------------------------------------------------------------


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a layer index (an integer >= 0), got {text!r}")
    return value


def _weight_bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 8:
        raise argparse.ArgumentTypeError(f"must be an integer in [2, 8] (int8 storage), got {text!r}")
    return value


def _group_size(text: str) -> int | str | None:
    """``auto``, ``none`` (one scale per output row) or an integer >= 1."""
    if text.lower() in ("auto", "none"):
        return text.lower() if text.lower() == "auto" else None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto', 'none' or an integer >= 1, got {text!r}")
    return value


def _coding(text: str) -> str:
    if text not in CODEC_NAMES:
        raise argparse.ArgumentTypeError(f"unknown spike codec {text!r}: choose from {', '.join(CODEC_NAMES)}")
    return text


def _targets(text: str) -> str | list[str]:
    """``"all-linear"`` or a regex stay strings; ``"q_proj,v_proj"`` becomes a list of names."""
    if "," in text:
        names = [name.strip() for name in text.split(",")]
        if not all(names):
            raise argparse.ArgumentTypeError(f"comma-separated module names must not be empty, got {text!r}")
        return names
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a valid regular expression: {text!r} ({error})") from None
    return text


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def model_source(text: str) -> str:
    """argparse type of ``--model``: a local model folder (holding ``config.json``), or, when no such
    path exists, a HuggingFace hub id (``name`` or ``org/name``) already in the local cache. Returns the
    folder to load: the given one, or the cached snapshot's (so loading needs no network)."""
    path = _path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"must be a model folder (holding config.json), got the file {text!r}")
        _check_readable(path)
        if not (path / "config.json").is_file():
            raise argparse.ArgumentTypeError(f"folder {text!r} holds no config.json: not a saved HuggingFace model")
        return os.fspath(path)
    if not (_HUB_ID.fullmatch(text) and ".." not in text and "--" not in text and not text.endswith(".")):
        raise argparse.ArgumentTypeError(
            f"no such folder {text!r} (expected a local model folder or a HuggingFace hub id such as 'gpt2' or 'org/name')"
        )
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(text, "config.json")
    except ValueError:  # huggingface_hub's repo id validation
        cached = None
    if not isinstance(cached, str):
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a local folder nor a HuggingFace hub model in the local cache; nothing is "
            f"downloaded: fetch it first (e.g. `hf download {text}`) or pass a saved model's folder"
        )
    return os.fspath(Path(cached).parent)  # the cached snapshot: loaded as a local folder, no network


def spiking_config_source(text: str) -> Path:
    """argparse type of ``--config``: a folder holding ``spiking_config.json``, or a JSON file, that
    holds a valid :class:`SpikingConfig` (read and checked here; returns the file's path)."""
    path = _path(text)
    if path.is_dir():
        _check_readable(path)
        path = path / CONFIG_NAME
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"folder {text!r} holds no {CONFIG_NAME}")
    else:
        path = input_file(text)
    try:
        SpikingConfig.from_json_string(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        raise argparse.ArgumentTypeError(f"{os.fspath(path)!r} is not a valid SpikingConfig: {message}") from None
    return path


# --- the parsers -----------------------------------------------------------------------------------


_SOURCE_HELP = """\
The model: --tiny ARCH (a tiny random model built from a config: nothing downloaded) or --model DIR_OR_ID:
a local folder holding a saved model (config.json), or a HuggingFace hub id such as 'gpt2' that is
already in the local cache. Nothing is downloaded: fetch a hub model first (e.g. `hf download gpt2`).
Inputs: the --text strings through the model's tokenizer, or random token ids (--batches x 2 x --length).
Spiking: --config (a spiking_config.json or its folder, e.g. from SpikingConfig.save_pretrained) or the
options below; every file and folder argument is checked before the model is loaded."""

REPORT_DESCRIPTION = f"""\
Inject spiking into a HuggingFace model, print which modules were spike-coded and which were kept dense
(and why), run the inputs and print the per-layer spiking report merged over them: firing rate,
sparsity, spikes per channel, silent channels, time steps, MACs, and the energy per MAC against FP16 and
INT8 arithmetic (45 nm model).

{_SOURCE_HELP}

examples:
  spikingbrain report --tiny gpt2 --weight-bits 8
  spikingbrain report --model path/to/saved-model --text "Hello" --k 3 --json report.json
  spikingbrain report --tiny llama --config path/to/spiking-config-folder"""

SWEEP_DESCRIPTION = f"""\
Measure the accuracy / energy trade-off of k: inject at each k, compare the outputs with the dense
model's (largest and relative logit error, cosine similarity, top-1 agreement) against firing rate and
energy per MAC; print the table, write sweep_k.json and sweep_k.png into --out, and with
--max-relative-error / --min-top1 recommend the cheapest k that meets them (exit status 1 when none does).

{_SOURCE_HELP}

examples:
  spikingbrain sweep-k --tiny llama --k 1 2 4 8 32 --out sweep-k --max-relative-error 0.05
  spikingbrain sweep-k --model path/to/saved-model --text "Hello" --min-top1 0.9"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", choices=TINY_ARCHS, help="a tiny random model built from a config (no download)")
    source.add_argument(
        "--model", type=model_source, metavar="DIR_OR_ID",
        help="a local saved-model folder (with config.json), or a HuggingFace hub id already in the local cache (nothing is downloaded)",
    )
    parser.add_argument("--text", action="append", help="an input text (repeatable; needs --model); default: random token ids")
    parser.add_argument("--batches", type=positive_int, default=4, help="random batches of 2 sequences when no --text")
    parser.add_argument("--length", type=positive_int, default=16, help="random sequence length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny model and random ids")
    parser.add_argument(
        "--config", type=spiking_config_source, metavar="PATH",
        help=f"a {CONFIG_NAME} or the folder holding it (SpikingConfig.save_pretrained); replaces the options below",
    )
    spiking = parser.add_argument_group("spiking options (ignored with --config)")
    spiking.add_argument("--target-modules", type=_targets, default="all-linear", help="regex, comma-separated names, or all-linear (every linear layer but the output head)")
    spiking.add_argument("--exclude-modules", type=_targets, default=None, help="regex or comma-separated names never spike-coded (default: none)")
    spiking.add_argument("--coding", type=_coding, choices=CODEC_NAMES, default="bitwise_bidirectional", metavar="CODEC", help=f"spike codec, one of: {', '.join(CODEC_NAMES)}")
    spiking.add_argument("--weight-bits", type=_weight_bits, default=None, metavar="{2..8}", help="weight quantization width (default: float weights)")
    spiking.add_argument(
        "--group-size", type=_group_size, default="auto", metavar="{auto,none,N}",
        help=(
            "input features per weight scale with --weight-bits: auto = the largest of "
            f"{', '.join(map(str, GROUP_SIZES[:4]))}, ..., 1 that divides the in_features of every injected module "
            "(128 as released where it fits); none = one scale per output row; N must divide them all (default: auto)"
        ),
    )
    spiking.add_argument("--dense-layers", type=_nonnegative_int, nargs="+", default=None, metavar="INDEX", help="layer indices kept dense (default: none)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` and ``sweep-k`` subcommands to an argparse subparsers object (the
    ``spikingbrain`` parser's); run the parsed arguments with :func:`run_command`."""
    report = sub.add_parser(
        "report", help="inject spiking into a HuggingFace model, list what was injected and print its spiking report",
        description=REPORT_DESCRIPTION, formatter_class=HelpFormatter,
    )
    _add_common(report)
    report.add_argument("--k", type=positive_float, default=3.0, help="threshold divisor k of V_th = mean|x| / k (ignored with --config)")
    report.add_argument("--json", type=output_file, metavar="FILE", help="also write the report as JSON to this file (missing folders are created)")
    sweep = sub.add_parser(
        "sweep-k", help="accuracy / energy trade-off of k against the dense model (table, JSON, plot)",
        description=SWEEP_DESCRIPTION, formatter_class=HelpFormatter,
    )
    _add_common(sweep)
    sweep.add_argument("--k", type=positive_float, nargs="+", default=list(DEFAULT_KS), help="values of k, no repeats")
    sweep.add_argument("--out", type=output_dir, default="sweep-k", metavar="DIR", help="folder for sweep_k.json and sweep_k.png (created if missing)")
    sweep.add_argument("--max-relative-error", type=nonnegative_float, help="recommend the cheapest k within this relative logit error")
    sweep.add_argument("--min-top1", type=fraction, help="recommend the cheapest k with at least this top-1 agreement, in [0, 1]")
    for parser in (report, sweep):
        parser.set_defaults(inject_command=parser.prog.rsplit(" ", 1)[-1])


# --- running a parsed command ----------------------------------------------------------------------


def _in_features(module: torch.nn.Module) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.in_features
    return getattr(module, "nx", None)  # transformers' Conv1D(nf, nx)


def fitting_group_size(in_features: Sequence[int]) -> int:
    """The largest of :data:`GROUP_SIZES` (128, 64, ..., 1) that divides every entry of ``in_features``."""
    return next(size for size in GROUP_SIZES if all(features % size == 0 for features in in_features))


def _config(args: argparse.Namespace, model: torch.nn.Module, k: float = 3.0) -> SpikingConfig:
    """The config of ``--config`` or of the options, its group size fitted to ``model`` (``auto``) or
    checked against it (a ``ValueError`` naming ``--group-size`` when it does not divide)."""
    if args.config is not None:
        config = SpikingConfig.from_json_string(Path(args.config).read_text(encoding="utf-8"))
        source = f"group_size={config.coding.group_size} of --config {os.fspath(args.config)!r}"
        fix = "set group_size in that file to"
    else:
        group = args.group_size
        coding = SpikeCoding(  # --coding names the codec
            k=k, codec=args.coding, weight_bits=args.weight_bits, group_size=128 if group == "auto" else group
        )
        config = SpikingConfig(
            target_modules=args.target_modules, exclude_modules=args.exclude_modules, coding=coding,
            dense_layers=args.dense_layers,
        )
        source = f"--group-size {group}"
        fix = "use --group-size auto (the default), none, or"
    if config.coding.weight_bits is None:
        return config  # float weights: no groups
    features = {name: f for name, module in iter_targets(model, config) if (f := _in_features(module)) is not None}
    if not features:
        return config  # nothing to inject: inject_spiking names the targets
    fitting = fitting_group_size(list(features.values()))
    if args.config is None and args.group_size == "auto":
        return dataclasses.replace(config, coding=dataclasses.replace(config.coding, group_size=fitting))
    bad = [(name, f) for name, f in features.items() if config.coding.group_size is not None and f % config.coding.group_size]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(
            f"{source} does not divide in_features={bad[0][1]} of {bad[0][0]}{more}: {fix} {fitting} "
            "(the largest power of two dividing every injected module's in_features)"
        )
    return config


def _load_model(name: str) -> torch.nn.Module:
    import transformers

    try:
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(name, local_files_only=True)
        except ValueError:  # not a causal LM (an encoder): its base model
            model = transformers.AutoModel.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"--model {name!r} could not be loaded: {message}") from None
    return model.eval()


def _model_and_batches(args: argparse.Namespace) -> tuple[torch.nn.Module, list[Any]]:
    if args.tiny is not None:
        model = tiny_model(args.tiny, seed=args.seed)
    else:
        model = _load_model(args.model)
    vocab = model.config.vocab_size
    if args.text:
        import transformers

        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, local_files_only=True)
        except (OSError, ValueError) as error:
            message = " ".join(str(error).split())
            raise ValueError(f"--text needs the tokenizer of --model {args.model!r}, which could not be loaded: {message}") from None
        return model, [dict(tokenizer(text, return_tensors="pt")) for text in args.text]
    batches = tiny_batches(args.batches, batch=2, length=args.length, seed=args.seed)
    for batch in batches:
        batch["input_ids"] = batch["input_ids"] % vocab
    return model, batches


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``report`` / ``sweep-k`` command; returns the exit status (1: no k meets the bounds).

    Raises:
        ValueError: ``--text`` with ``--tiny`` (a tiny model has no tokenizer), repeated ``--k`` values,
            a model that cannot be loaded, a ``--group-size`` that does not fit, or a bad config value.
        TypeError: ``--target-modules`` selects a module that is not a linear layer.
    """
    if args.text and args.tiny:
        raise ValueError("--text needs a tokenizer: use --model (a tiny model takes random token ids)")
    if args.inject_command == "sweep-k" and len(set(args.k)) != len(args.k):
        raise ValueError(f"--k values must not repeat, got {' '.join(f'{k:g}' for k in args.k)}")
    model, batches = _model_and_batches(args)
    if args.inject_command == "report":
        inject_spiking(model, _config(args, model, k=args.k))
        print(spiking_summary(model))  # what was spike-coded, what was kept dense and why
        print()
        report, _ = record_batches(model, batches)  # merged over the batches, as if one
        print(report)
        if args.json is not None:
            write_text(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    sweep = sweep_k(model, batches, ks=args.k, config=_config(args, model))
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
