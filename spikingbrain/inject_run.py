"""Running the ``report`` and ``sweep-k`` subcommands of ``spikingbrain`` (their parsers and the options they
read are :mod:`spikingbrain.inject`): load the model and the batches, build the :class:`SpikingConfig`
from the options and any configuration saved with the model, inject, and print or write the results.
Unlike parsing, running imports torch and the libraries.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arguments import write_text
from .constants import CONFIG_NAME, STATE_NAME
from .inject import GIVEN, GROUP_SIZES, SPIKING_FLAGS, TOKENIZER_FILES

if TYPE_CHECKING:
    import torch

    from sb_adapters import SpikingConfig


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
