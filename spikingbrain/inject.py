"""The ``report`` and ``sweep-k`` subcommands of ``spikingbrain``: inject spiking into a HuggingFace
model from the command line (``python -m sb_adapters`` is an alias of ``spikingbrain``, same parser).

- ``spikingbrain report``: inject, print which modules were spike-coded and which were kept dense, run
  the batches and print the per-layer spiking report merged over them (``--json`` to save it). With
  ``--choose-dense-layers`` it first chooses the layers to keep dense (:func:`sb_adapters.choose_dense_layers`,
  bounded by ``--max-relative-error`` / ``--min-top1-agreement``), prints that table, and reports the
  model with those layers dense.
- ``spikingbrain sweep-k``: the accuracy / energy trade-off of ``k`` (:func:`sb_adapters.sweep_k`):
  prints the table, writes ``sweep_k.json`` and ``sweep_k.png`` into ``--out``, and with
  ``--max-relative-error`` / ``--min-top1-agreement`` recommends the cheapest ``k`` that meets them.

The model is ``--tiny ARCH`` (a random model built from a config, :mod:`sb_adapters.tiny`) or ``--model
DIR_OR_ID``: a local directory holding a saved model (``config.json``), or a HuggingFace hub id already
in the local cache (its cached snapshot is loaded as a local folder). Nothing is downloaded: fetch a
hub model first, e.g. with ``hf download NAME``. Inputs are the ``--text`` strings through the model's
tokenizer (the folder must hold its files), or random token ids when no text is given. The
:class:`SpikingConfig` comes from ``--config`` (a directory holding ``spiking_config.json``, or that
file), from the options, or, for a ``--model`` folder saved from an injected model (``spiking_config.json``
and ``spiking_state.safetensors`` beside the weights), from that folder: the model is reported as saved
(``sweep-k`` starts from its configuration), and a spiking option given on the command line that
contradicts the saved value overrides it, with a warning naming both.

The spiking options are named as :class:`SpikingConfig`'s keywords (``--k``, ``--codec``, ``--weight-bits``,
``--group-size``, ``--target-modules``, ``--exclude-modules``, ``--dense-layers``), and the bounds as the
keywords of ``KSweep.recommend`` and ``choose_dense_layers`` (``--max-relative-error``,
``--min-top1-agreement``). ``--group-size auto`` (the default) picks the largest of 128, 64, 32, ..., 1
that divides the ``in_features`` of every module to be injected (128 as released, when it fits; 32 on
the tiny models).

Every argument that names a file or folder is checked while the command line is parsed, before any work:
files to read must exist and be readable, output files and folders must be creatable and writable
(:mod:`spikingbrain.arguments`, whose types every subcommand shares). Errors are argparse usage errors
(exit status 2) naming the argument. Building the parsers imports neither torch nor the libraries (their
choices and defaults are :mod:`spikingbrain.constants`); running a command does.

:func:`add_parsers` adds both subcommands to the ``spikingbrain`` parser; :func:`spikingbrain.inject_run.run_command`
runs the parsed arguments (they carry ``inject_command``). These commands use sb_adapters through its public
modules only (the dependency direction of ``docs/architecture.md``).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

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
)
from .constants import CODEC_NAMES, CONFIG_NAME, DEFAULT_CODEC, DEFAULT_KS, STATE_NAME, TINY_ARCHS

GROUP_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)
"""Candidates of ``--group-size auto``, largest first."""

GIVEN = "given_options"
"""The attribute of the parsed arguments holding the ``dest`` of every spiking option the user wrote (the
others hold their defaults): only those override the configuration saved with a ``--model`` folder."""

SPIKING_FLAGS = {
    "k": "--k", "codec": "--codec", "weight_bits": "--weight-bits", "group_size": "--group-size",
    "target_modules": "--target-modules", "exclude_modules": "--exclude-modules", "dense_layers": "--dense-layers",
}
"""The spiking options by their :class:`SpikingConfig` keyword (``dest``), each named as that keyword."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json")
"""Files of which a model folder holds at least one (or a ``*.tiktoken`` file) when it holds a tokenizer."""


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


def _codec(text: str) -> str:
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
    from sb_adapters import SpikingConfig  # imported only when --config is given: --help stays light

    try:
        SpikingConfig.from_json_string(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        raise argparse.ArgumentTypeError(f"{os.fspath(path)!r} is not a valid SpikingConfig: {message}") from None
    return path


class _Given(argparse.Action):
    """argparse's ``store``, which also records that the option was given (in :data:`GIVEN`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN, frozenset(getattr(namespace, GIVEN, frozenset())) | {self.dest})


# --- the parsers -----------------------------------------------------------------------------------


_SOURCE_HELP = f"""\
The model: --tiny ARCH (a tiny random model built from a config: nothing downloaded) or --model DIR_OR_ID:
a local folder holding a saved model (config.json), or a HuggingFace hub id such as 'gpt2' that is
already in the local cache. Nothing is downloaded: fetch a hub model first (e.g. `hf download gpt2`).
Inputs: the --text strings through the model's tokenizer (its files must be in the folder), or random
token ids (--batches x 2 x --length).
Spiking: --config (a {CONFIG_NAME} or its folder, e.g. from SpikingConfig.save_pretrained) or the
options below. A --model folder saved from an injected model (model.save_pretrained writes {CONFIG_NAME}
and {STATE_NAME} beside the weights) runs as saved; a spiking option given here that contradicts the
saved value overrides it, with a warning. Every file and folder argument is checked before the model
is loaded."""

REPORT_DESCRIPTION = f"""\
Inject spiking into a HuggingFace model, print which modules were spike-coded and which were kept dense
(and why), run the inputs and print the per-layer spiking report merged over them: firing rate,
sparsity, spikes per channel, silent channels, time steps, MACs, and the energy per MAC against FP16 and
INT8 arithmetic (45 nm model). With --choose-dense-layers, first choose the layers to keep dense so that
the model meets --max-relative-error and/or --min-top1-agreement against the dense model (each layer's
sensitivity, then the most sensitive kept dense until the bound holds), print that table, and report the
model with those layers dense.

{_SOURCE_HELP}

examples:
  spikingbrain report --tiny gpt2 --weight-bits 8
  spikingbrain report --model path/to/saved-model --text "Hello" --k 3 --json report.json
  spikingbrain report --model path/to/saved-spiking-model     # as saved: its spiking_config.json
  spikingbrain report --tiny llama --choose-dense-layers --max-relative-error 0.05
  spikingbrain report --tiny llama --config path/to/spiking-config-folder"""

SWEEP_DESCRIPTION = f"""\
Measure the accuracy / energy trade-off of k: inject at each k, compare the outputs with the dense
model's (largest and relative logit error, cosine similarity, top-1 agreement) against firing rate and
energy per MAC; print the table, write sweep_k.json and sweep_k.png into --out, and with
--max-relative-error / --min-top1-agreement recommend the cheapest k that meets them (exit status 1 when
none does).

{_SOURCE_HELP}

examples:
  spikingbrain sweep-k --tiny llama --k 1 2 4 8 32 --out sweep-k --max-relative-error 0.05
  spikingbrain sweep-k --model path/to/saved-model --text "Hello" --min-top1-agreement 0.9"""


def _add_common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", choices=TINY_ARCHS, help="a tiny random model built from a config (no download)")
    source.add_argument(
        "--model", type=model_source, metavar="DIR_OR_ID",
        help="a local saved-model folder (with config.json), or a HuggingFace hub id already in the local cache (nothing is downloaded)",
    )
    parser.add_argument("--text", action="append", help="an input text (repeatable; needs --model and its tokenizer files); default: random token ids")
    parser.add_argument("--batches", type=positive_int, default=4, help="random batches of 2 sequences when no --text")
    parser.add_argument("--length", type=positive_int, default=16, help="random sequence length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tiny model and random ids")
    parser.add_argument(
        "--config", type=spiking_config_source, metavar="PATH",
        help=f"a {CONFIG_NAME} or the folder holding it (SpikingConfig.save_pretrained); replaces the options below",
    )
    spiking = parser.add_argument_group(
        "spiking options (ignored with --config; given with a saved spiking --model, they override its values)"
    )
    spiking.add_argument("--target-modules", type=_targets, default="all-linear", action=_Given, help="regex, comma-separated names, or all-linear (every linear layer but the output head)")
    spiking.add_argument("--exclude-modules", type=_targets, default=None, action=_Given, help="regex or comma-separated names never spike-coded (default: none)")
    spiking.add_argument("--codec", type=_codec, choices=CODEC_NAMES, default=DEFAULT_CODEC, action=_Given, metavar="CODEC", help=f"spike codec, one of: {', '.join(CODEC_NAMES)}")
    spiking.add_argument("--weight-bits", type=_weight_bits, default=None, action=_Given, metavar="{2..8}", help="weight quantization width (default: float weights)")
    spiking.add_argument(
        "--group-size", type=_group_size, default="auto", action=_Given, metavar="{auto,none,N}",
        help=(
            "input features per weight scale with --weight-bits: auto = the largest of "
            f"{', '.join(map(str, GROUP_SIZES[:4]))}, ..., 1 that divides the in_features of every injected module "
            "(128 as released where it fits); none = one scale per output row; N must divide them all (default: auto)"
        ),
    )
    spiking.add_argument("--dense-layers", type=_nonnegative_int, nargs="+", default=None, action=_Given, metavar="INDEX", help="layer indices kept dense (default: none)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``report`` and ``sweep-k`` subcommands to an argparse subparsers object (the
    ``spikingbrain`` parser's); run the parsed arguments with :func:`run_command`."""
    report = sub.add_parser(
        "report", help="inject spiking into a HuggingFace model, list what was injected and print its spiking report",
        description=REPORT_DESCRIPTION, formatter_class=HelpFormatter,
    )
    _add_common(report)
    report.add_argument("--k", type=positive_float, default=3.0, action=_Given, help="threshold divisor k of V_th = mean|x| / k (ignored with --config)")
    report.add_argument("--json", type=output_file, metavar="FILE", help="also write the report as JSON to this file (missing folders are created)")
    choose = report.add_argument_group("choosing the layers kept dense (sb_adapters.choose_dense_layers)")
    choose.add_argument(
        "--choose-dense-layers", action="store_true",
        help="measure each layer's sensitivity and keep the most sensitive layers dense until the model meets "
             "--max-relative-error and/or --min-top1-agreement; print that table, then report the model with those layers dense",
    )
    choose.add_argument("--max-relative-error", type=nonnegative_float, help="with --choose-dense-layers: the largest relative error of the output against the dense model's")
    choose.add_argument("--min-top1-agreement", type=fraction, help="with --choose-dense-layers: the least top-1 agreement with the dense model, in [0, 1]")
    sweep = sub.add_parser(
        "sweep-k", help="accuracy / energy trade-off of k against the dense model (table, JSON, plot)",
        description=SWEEP_DESCRIPTION, formatter_class=HelpFormatter,
    )
    _add_common(sweep)
    sweep.add_argument("--k", type=positive_float, nargs="+", default=list(DEFAULT_KS), action=_Given, help="values of k, no repeats")
    sweep.add_argument("--out", type=output_dir, default="sweep-k", metavar="DIR", help="folder for sweep_k.json and sweep_k.png (created if missing)")
    sweep.add_argument("--max-relative-error", type=nonnegative_float, help="recommend the cheapest k within this relative logit error")
    sweep.add_argument("--min-top1-agreement", type=fraction, help="recommend the cheapest k with at least this top-1 agreement, in [0, 1]")
    for parser in (report, sweep):
        parser.set_defaults(inject_command=parser.prog.rsplit(" ", 1)[-1])
