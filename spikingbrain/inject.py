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
from typing import TYPE_CHECKING, Any

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
from .constants import CODEC_NAMES, CONFIG_NAME, DEFAULT_CODEC, DEFAULT_KS, STATE_NAME, TINY_ARCHS

if TYPE_CHECKING:
    import torch

    from sb_adapters import SpikingConfig

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


# --- running a parsed command ----------------------------------------------------------------------


def _in_features(module: torch.nn.Module) -> int | None:
    import torch

    if isinstance(module, torch.nn.Linear):
        return module.in_features
    return getattr(module, "nx", None)  # transformers' Conv1D(nf, nx)


def fitting_group_size(in_features: Sequence[int]) -> int:
    """The largest of :data:`GROUP_SIZES` (128, 64, ..., 1) that divides every entry of ``in_features``."""
    return next(size for size in GROUP_SIZES if all(features % size == 0 for features in in_features))


@dataclasses.dataclass
class _Saved:
    """The spiking configuration saved with a ``--model`` folder (``model.save_pretrained`` of an injected model)."""

    folder: Path
    config: SpikingConfig

    @property
    def source(self) -> str:
        return f"the {CONFIG_NAME} saved with --model {os.fspath(self.folder)!r}"

    @property
    def state(self) -> Path:
        return self.folder / STATE_NAME


def _saved_config(args: argparse.Namespace) -> _Saved | None:
    """The configuration saved in the ``--model`` folder, or ``None`` (no ``spiking_config.json`` there)."""
    if args.model is None or not (Path(args.model) / CONFIG_NAME).is_file():
        return None
    from sb_adapters import SpikingConfig

    try:
        config = SpikingConfig.from_pretrained(args.model)
    except (OSError, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"--model {args.model!r} holds a {CONFIG_NAME} that is not a valid SpikingConfig: {message}") from None
    return _Saved(Path(args.model), config)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return " ".join(map(str, value)) if all(isinstance(v, int) for v in value) else ",".join(value)
    return "none" if value is None else str(value)


def _warn(args: argparse.Namespace, message: str) -> None:
    print(f"spikingbrain {args.inject_command}: warning: {message}", file=sys.stderr)


def _check_dense_layers(model: torch.nn.Module, config: SpikingConfig, source: str | None) -> None:
    """``dense_layers`` that name no layer of ``model``: a ``ValueError`` naming where they came from
    (``--dense-layers`` when ``source`` is ``None``), before any work."""
    from sb_adapters.injector import model_layer_indices

    present = model_layer_indices(model)
    outside = sorted(set(config.dense_layers or ()) - set(present))
    if outside:
        have = f"{present[0]}..{present[-1]}" if present else "none (no numbered module)"
        named = f"--dense-layers {_shown(outside)} names" if source is None else f"dense_layers {outside} of {source} name"
        raise ValueError(f"{named} no layer of this model: its layers are {have}")


def _config(args: argparse.Namespace, model: torch.nn.Module, saved: _Saved | None = None, k: float = 3.0) -> SpikingConfig:
    """The config of ``--config``, of the configuration saved with ``--model`` (overridden by the spiking
    options given, each override a warning), or of the options; its group size fitted to ``model``
    (``--group-size auto``) or checked against it (a ``ValueError`` naming where it came from when it does
    not divide), its ``dense_layers`` checked against the model's layers."""
    from sb_adapters import SpikingConfig
    from sb_adapters.matching import iter_targets

    given = getattr(args, GIVEN, frozenset())
    if args.config is not None:
        config = SpikingConfig.from_json_string(Path(args.config).read_text(encoding="utf-8"))
        source = f"group_size={config.coding.group_size} of --config {os.fspath(args.config)!r}"
        fix = "set group_size in that file to"
        fit = False
        if saved is not None and config != saved.config:
            _warn(args, f"--config {os.fspath(args.config)!r} replaces {saved.source}")
    elif saved is not None:
        config, fit = saved.config, False
        fields = {name: getattr(config, name) for name in ("target_modules", "exclude_modules", "dense_layers")}
        coding = {name: getattr(config.coding, name) for name in ("k", "codec", "weight_bits", "group_size")}
        for dest in SPIKING_FLAGS:
            if dest not in given or (dest == "k" and args.inject_command != "report"):
                continue  # sweep-k's --k lists the values swept, it overrides nothing
            value, old = getattr(args, dest), {**fields, **coding}[dest]
            if dest == "group_size" and value == "auto":
                fit = True  # compared below, once fitted
                continue
            new = SpikingConfig(**{dest: value}).dense_layers if dest == "dense_layers" else value
            if new != old:
                _warn(args, f"{SPIKING_FLAGS[dest]} {_shown(value)} overrides {dest}={_shown(old)} of {saved.source}")
            (fields if dest in fields else coding)[dest] = new
        config = dataclasses.replace(config, **fields, coding=dataclasses.replace(config.coding, **coding))
        source = f"group_size={config.coding.group_size} of {saved.source}"
        fix = "override it with --group-size"
    else:
        group = args.group_size
        config = SpikingConfig(  # the flat keywords of SpikingConfig, as the options are named
            target_modules=args.target_modules, exclude_modules=args.exclude_modules, k=k, codec=args.codec,
            weight_bits=args.weight_bits, group_size=128 if group == "auto" else group, dense_layers=args.dense_layers,
        )
        source = f"--group-size {group}"
        fix = "use --group-size auto (the default), none, or"
        fit = group == "auto"
    if args.config is not None:
        _check_dense_layers(model, config, f"--config {os.fspath(args.config)!r}")
    else:
        _check_dense_layers(model, config, None if "dense_layers" in given or saved is None else saved.source)
    if config.coding.weight_bits is None:
        return config  # float weights: no groups
    features = {name: f for name, module in iter_targets(model, config) if (f := _in_features(module)) is not None}
    if not features:
        return config  # nothing to inject: inject_spiking names the targets
    fitting = fitting_group_size(list(features.values()))
    if fit:
        if saved is not None and args.config is None and fitting != saved.config.coding.group_size:
            _warn(args, f"--group-size auto ({fitting}) overrides group_size={_shown(saved.config.coding.group_size)} of {saved.source}")
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


def has_tokenizer_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a tokenizer's vocabulary (one of :data:`TOKENIZER_FILES`, or a ``*.tiktoken``
    file). Without one, transformers' ``AutoTokenizer`` builds an empty tokenizer from the model's config
    alone, which turns every text into no token at all."""
    path = Path(folder)
    return any((path / name).is_file() for name in TOKENIZER_FILES) or any(path.glob("*.tiktoken"))


def _tokenized(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``--text`` strings through the tokenizer saved in the ``--model`` folder (checked before the model loads)."""
    if not has_tokenizer_files(args.model):
        raise ValueError(
            f"--text needs the tokenizer of --model {args.model!r}, but that folder holds no tokenizer files "
            f"({', '.join(TOKENIZER_FILES[:4])}, ...): save the tokenizer there (tokenizer.save_pretrained(DIR)), "
            "or leave out --text (random token ids)"
        )
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"--text needs the tokenizer of --model {args.model!r}, which could not be loaded: {message}") from None
    batches = [dict(tokenizer(text, return_tensors="pt")) for text in args.text]
    for text, batch in zip(args.text, batches):
        if batch["input_ids"].numel() == 0:
            raise ValueError(f"--text {text!r} gives no token with the tokenizer of --model {args.model!r}")
    return batches


def _model_and_batches(args: argparse.Namespace) -> tuple[torch.nn.Module, list[Any]]:
    from sb_adapters.tiny import tiny_batches, tiny_model

    if args.tiny is not None:
        model = tiny_model(args.tiny, seed=args.seed)
    else:
        texts = _tokenized(args) if args.text else None  # before the model loads: a missing tokenizer fails at once
        model = _load_model(args.model)
    vocab = model.config.vocab_size
    if args.text:
        for text, batch in zip(args.text, texts):
            if int(batch["input_ids"].max()) >= vocab:
                raise ValueError(
                    f"--text {text!r}: the tokenizer in --model {args.model!r} gives token ids up to "
                    f"{int(batch['input_ids'].max())}, past the model's vocabulary of {vocab}"
                )
        return model, texts
    batches = tiny_batches(args.batches, batch=2, length=args.length, seed=args.seed)
    for batch in batches:
        batch["input_ids"] = batch["input_ids"] % vocab
    return model, batches


def _restore_saved_state(model: torch.nn.Module, saved: _Saved, config: SpikingConfig) -> str:
    """Inject ``config`` into ``model`` with the spiking state saved beside it; what was restored, in words.

    The configuration saved: :func:`sb_adapters.load_spiking` (every saved tensor, checked). Overridden:
    the saved weight scales of the layers still injected, when the weight quantization is the saved one."""
    import torch

    from sb_adapters import inject_spiking, load_spiking, spiking_state_dict

    if config == saved.config:
        load_spiking(model, saved.folder)
        return f"as saved ({CONFIG_NAME}" + (f", {STATE_NAME})" if saved.state.is_file() else ")")
    inject_spiking(model, config)
    if not saved.state.is_file():
        return f"{CONFIG_NAME} as changed above"
    quantization = ("weight_bits", "group_size", "weight_clip")
    if any(getattr(config.coding, name) != getattr(saved.config.coding, name) for name in quantization):
        return f"{CONFIG_NAME} as changed above; {STATE_NAME} not restored (it holds the scales of the saved weight quantization)"
    from safetensors.torch import load_file

    state, expected = load_file(saved.state), spiking_state_dict(model)
    fitting = [key for key, target in expected.items() if key in state and state[key].shape == target.shape]
    with torch.no_grad():
        for key in fitting:
            expected[key].copy_(state[key].to(device=expected[key].device, dtype=expected[key].dtype))
    return f"{CONFIG_NAME} as changed above; {len(fitting)} of {len(expected)} spiking tensors restored from {STATE_NAME}"


def _check_bounds(args: argparse.Namespace) -> None:
    bounds = args.max_relative_error is not None or args.min_top1_agreement is not None
    if args.inject_command == "report" and args.choose_dense_layers and not bounds:
        raise ValueError("--choose-dense-layers needs a bound: --max-relative-error and/or --min-top1-agreement")
    if args.inject_command == "report" and bounds and not args.choose_dense_layers:
        raise ValueError("--max-relative-error and --min-top1-agreement bound --choose-dense-layers on report: add it")


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``report`` / ``sweep-k`` command; returns the exit status (1: no k meets the bounds, or
    ``--choose-dense-layers`` finds every layer must stay dense).

    Raises:
        ValueError: ``--text`` with ``--tiny`` (a tiny model has no tokenizer) or on a folder without
            tokenizer files, repeated ``--k`` values, a model that cannot be loaded, a ``--group-size``
            that does not fit, ``--dense-layers`` that name no layer, a bound without
            ``--choose-dense-layers`` (or the reverse), or a bad config value.
        TypeError: ``--target-modules`` selects a module that is not a linear layer.
    """
    if args.text and args.tiny:
        raise ValueError("--text needs a tokenizer: use --model (a tiny model takes random token ids)")
    if args.inject_command == "sweep-k" and len(set(args.k)) != len(args.k):
        raise ValueError(f"--k values must not repeat, got {' '.join(f'{k:g}' for k in args.k)}")
    _check_bounds(args)
    saved = _saved_config(args)
    model, batches = _model_and_batches(args)
    if args.inject_command == "report":
        return _report(args, model, batches, saved)
    return _sweep(args, model, batches, saved)


def _report(args: argparse.Namespace, model: torch.nn.Module, batches: list[Any], saved: _Saved | None) -> int:
    from sb_adapters import choose_dense_layers, inject_spiking, spiking_summary
    from sb_layers import record_spikes

    config = _config(args, model, saved, k=args.k)
    if args.choose_dense_layers:
        choice = choose_dense_layers(
            model, batches, config, max_relative_error=args.max_relative_error,
            min_top1_agreement=args.min_top1_agreement, progress=True,
        )
        print(choice.format())
        print()
        if not choice.spiking_layers:
            print("no layer can stay spike-coded within the bound: every layer is kept dense (the dense model)", file=sys.stderr)
            return 1
        config = choice.config
    if saved is not None:
        print(f"spiking configuration of --model {os.fspath(saved.folder)!r}: {_restore_saved_state(model, saved, config)}")
    else:
        inject_spiking(model, config)
    print(spiking_summary(model))  # what was spike-coded, what was kept dense and why
    print()
    report, _ = record_spikes(model, batches)  # merged over the batches, as if one
    print(report)
    if args.json is not None:
        write_text(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _sweep(args: argparse.Namespace, model: torch.nn.Module, batches: list[Any], saved: _Saved | None) -> int:
    from sb_adapters import sweep_k

    config = _config(args, model, saved)
    ks = list(args.k)
    if saved is not None and args.config is None:
        if "k" not in getattr(args, GIVEN, frozenset()) and saved.config.coding.k not in ks:
            ks = sorted([*ks, saved.config.coding.k])  # the saved operating point is one of the points
        print(
            f"sweep-k from the spiking configuration of --model {os.fspath(saved.folder)!r} (its k = "
            f"{saved.config.coding.k:g}; weight scales max-abs at every k)"
        )
    sweep = sweep_k(model, batches, ks=ks, config=config)
    print(sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep_k.json").write_text(json.dumps(sweep.as_dict(), indent=2) + "\n", encoding="utf-8")
    sweep.plot(args.out / "sweep_k.png")
    print(f"wrote {args.out / 'sweep_k.json'} and {args.out / 'sweep_k.png'}")
    if args.max_relative_error is not None or args.min_top1_agreement is not None:
        try:
            best = sweep.recommend(max_relative_error=args.max_relative_error, min_top1_agreement=args.min_top1_agreement)
        except ValueError as err:
            print(f"no recommendation: {err}", file=sys.stderr)
            return 1
        print(f"recommended k = {best.k:g}: relative error {best.relative_error:.4g}, {best.energy_pj_per_mac:.4f} pJ/MAC")
    return 0
