"""``spikingbrain generate``: run a SpikingBrain-7B checkpoint from a local folder (wired into
:mod:`spikingbrain.cli`).

The folder is the release's layout (``config.json`` with ``model_type: "gla_swa"``, safetensors shards,
bf16 or W8ASpike: told apart by the ``weight_quantizer.scales`` keys) or ours (``model_type:
"spikingbrain"``, ``save_pretrained``), with the tokenizer in the same folder. The prompt is encoded as
it is (no chat template), the continuation is decoded greedily and streamed to stdout; the loading
line, tokens/s and the peak memory go to stderr, so ``> out.txt`` keeps the text alone. No flash-attn:
attention runs on PyTorch's SDPA (and the library's Triton decode kernels on a GPU); on a GPU the
one-token steps are replayed from a CUDA graph (:class:`GraphedDecoder`) unless ``--no-cuda-graph``.

Parsing imports neither torch nor transformers (``spikingbrain generate --help`` and usage errors come at
once): :func:`add_generate_parser` checks the folder (it exists, holds config.json, safetensors weights
and tokenizer files) while the command line is parsed; :func:`run_generate_command` imports the
libraries and raises ``ValueError`` with a one-line message for what a user can fix (a device that is
not there or has too little memory, a tokenizer that does not fit the model, weights of the wrong
shape, an empty prompt); :mod:`spikingbrain.cli` prints it as a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .arguments import HelpFormatter, _check_readable, _path, input_file, positive_int

WEIGHT_FILE = "model.safetensors"
WEIGHT_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("spiece.model",), ("vocab.txt",))
"""Any one of these sets of files makes a tokenizer (the release's, Qwen2's, has the first two)."""
DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
WORKING_MEMORY = 0.05
"""Memory for the prompt, the cache and the logits, as a share of the weights' bytes (about 0.7 GiB for
the 7B in bf16: its peak after a 1k-token prompt was 14.9 GiB with 14.2 GiB of weights)."""

GENERATE_HELP = "run a SpikingBrain-7B checkpoint (the release's or ours) from a local folder: stream text, tokens/s, peak memory"
GENERATE_DESCRIPTION = """\
Load a SpikingBrain-7B checkpoint from a local folder, encode the prompt with the tokenizer of the same
folder, decode greedily and stream the text to stdout; then print, on stderr, tokens/s (overall, time to
the first token, decode rate) and the peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the
process's peak resident memory).

--model is a folder in the release's layout (config.json with model_type "gla_swa" and safetensors
shards; bf16 or W8ASpike, told apart by the weights' names) or ours (save_pretrained, model_type
"spikingbrain"), holding the tokenizer files too (the release's is Qwen2's: tokenizer.json, or vocab.json
and merges.txt). Nothing is downloaded. The weights are loaded in --dtype whatever they are stored in
(the scales of W8ASpike stay float32). No flash-attn: attention runs on PyTorch's SDPA; on a GPU the
decode steps are replayed from a CUDA graph.

Before loading, the weights' size (read from the safetensors headers) in --dtype is compared with the
memory the device has free; a device without enough, a missing folder, a folder without tokenizer files
and weights whose shapes do not fit config.json are one-line errors (exit status 2).

examples:
  spikingbrain generate --model /models/SpikingBrain-7B --prompt "The capital of France is"
  spikingbrain generate --model /models/SpikingBrain-7B-W8ASpike --file prompt.txt --max-new-tokens 256
  spikingbrain generate --model /models/SpikingBrain-7B --device cpu --dtype bfloat16"""


# --- argparse types (no torch, no transformers) ----------------------------------------------------


def _tokenizer_files(folder: Path) -> bool:
    return any(all((folder / name).is_file() for name in names) for names in TOKENIZER_FILES)


def checkpoint_folder(text: str) -> Path:
    """argparse type of ``--model``: an existing, readable folder holding ``config.json``, safetensors
    weights (``model.safetensors`` or ``model.safetensors.index.json`` with its shards) and tokenizer files."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(
            f"no such folder: {text!r} (a local folder of the released checkpoint or of ours; nothing is downloaded)"
        )
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a checkpoint folder, got the file {text!r}")
    _check_readable(path)
    if not (path / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"folder {text!r} holds no config.json: not a saved checkpoint")
    if not (path / WEIGHT_FILE).is_file() and not (path / WEIGHT_INDEX).is_file():
        raise argparse.ArgumentTypeError(f"folder {text!r} holds no safetensors weights ({WEIGHT_FILE} or {WEIGHT_INDEX})")
    if not _tokenizer_files(path):
        raise argparse.ArgumentTypeError(
            f"folder {text!r} holds no tokenizer files (tokenizer.json, or vocab.json and merges.txt, or tokenizer.model): "
            "copy the tokenizer that came with the checkpoint into it"
        )
    return path


def prompt_file(text: str) -> Path | str:
    """argparse type of ``--file``: a readable file, or ``-`` for stdin."""
    return "-" if text == "-" else input_file(text)


def device_name(text: str) -> str:
    """argparse type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it is there is
    checked when the command runs, when torch is imported)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_generate_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``spikingbrain generate`` on an argparse subparsers object (imports no heavy library)."""
    parser = sub.add_parser("generate", help=GENERATE_HELP, description=GENERATE_DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--model", type=checkpoint_folder, required=True, metavar="DIR",
                        help="local checkpoint folder: config.json, safetensors weights and the tokenizer")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="Spiking neurons", metavar="TEXT", help="the prompt, used as is (default: %(default)r)")
    prompt.add_argument("--file", type=prompt_file, metavar="F", help="read the prompt from this file (as is), or from stdin with -")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, metavar="N", help="new tokens at most; generation stops earlier at the end-of-sequence token")
    parser.add_argument("--device", type=device_name, default="auto", metavar="{auto,cpu,cuda,cuda:N}", help="auto: the first CUDA GPU if torch sees one, else the CPU")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="dtype of the loaded weights, whatever the checkpoint stores; auto: bfloat16 (float16 on a GPU without bfloat16)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="on a GPU, decode with eager steps (model.generate) instead of a CUDA graph")
    return parser


# --- memory: what the weights need, what the device has ---------------------------------------------


def _safetensors_header(file: Path) -> dict[str, Any]:
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


_STORED_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                 "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_FLOATS = {"F64", "F32", "F16", "BF16"}


def weight_bytes(folder: Path, dtype: str, device: str = "cpu") -> tuple[int, int]:
    """``(bytes of the weights in dtype, bytes of the int8 weight codes)`` the loaded model holds, from the
    safetensors headers (no tensor is read): floating weights take ``dtype``'s size (the W8ASpike scales
    stay float32); on a GPU, the W8ASpike projections also keep their int8 codes (1 byte per weight)."""
    entries: dict[str, tuple[str, int]] = {}
    file = folder / (WEIGHT_FILE if (folder / WEIGHT_FILE).is_file() else WEIGHT_INDEX)
    try:
        if file.name == WEIGHT_FILE:
            files = [file]
        else:
            files = [folder / name for name in sorted(set(json.loads(file.read_text(encoding="utf-8"))["weight_map"].values()))]
        for file in files:
            for name, entry in _safetensors_header(file).items():
                if name != "__metadata__":
                    numel = 1
                    for size in entry["shape"]:
                        numel *= size
                    entries[name] = (entry["dtype"], numel)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as error:
        raise ValueError(f"cannot read the weights' shapes from {os.fspath(file)!r} (missing, truncated or not safetensors?): {error}") from None
    weights = codes = 0
    for name, (stored, numel) in entries.items():
        if name.endswith("weight_quantizer.scales"):
            if ".mlp.down_proj." in name:
                continue  # stored by the release, not used by its forward, not loaded
            weights += numel * _STORED_BYTES.get(stored, 4)
            if device.startswith("cuda"):
                codes += entries.get(name.replace("weight_quantizer.scales", "weight"), ("", 0))[1]
        elif stored in _FLOATS:
            weights += numel * DTYPE_BYTES[dtype]
        else:
            weights += numel * _STORED_BYTES.get(stored, 8)
    return weights, codes


def _cgroup_available() -> int | None:
    """Memory the process's cgroup (v2) still allows, when it sets a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_memory(device: str) -> int | None:
    """Bytes free on ``device``: ``torch.cuda.mem_get_info`` on a GPU; on the CPU ``MemAvailable`` of
    /proc/meminfo (else ``os.sysconf``), capped by a cgroup limit. None when it cannot be told."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    group = _cgroup_available()
    return free if group is None else min(free, group)


def peak_resident_bytes() -> int | None:
    """The process's peak resident memory (``ru_maxrss``: KiB on Linux, bytes on macOS); None where the
    platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def format_bytes(size: float) -> str:
    """``15.23 GB``, ``157.2 kB``: decimal units, as disk sizes are given."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB"


# --- running -------------------------------------------------------------------------------------------


def _resolve_device(text: str) -> str:
    import torch

    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
        raise ValueError(f"--device {text}: torch sees no CUDA GPU ({build}); use --device cpu")
    index = int(text.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {text}: torch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return f"cuda:{index}"


def _resolve_dtype(text: str, device: str) -> str:
    if text != "auto":
        return text
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16"


def _read_prompt(args: argparse.Namespace) -> str:
    if args.file is None:
        prompt = args.prompt
    elif args.file == "-":
        prompt = sys.stdin.read()
    else:
        try:
            prompt = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--file {os.fspath(args.file)!r} cannot be read as UTF-8 text: {error}") from None
    if not prompt.strip():
        raise ValueError("the prompt is empty: give --prompt TEXT or a --file holding text")
    return prompt


def check_memory(folder: Path, dtype: str, device: str) -> tuple[int, int]:
    """Raise ``ValueError`` when the weights in ``dtype`` (plus the int8 codes and :data:`WORKING_MEMORY`)
    do not fit the memory ``device`` has free; returns :func:`weight_bytes`."""
    weights, codes = weight_bytes(folder, dtype, device)
    needed = weights + codes + int(WORKING_MEMORY * weights)
    free = available_memory(device)
    if free is not None and needed > free:
        on_gpu = device.startswith("cuda")
        parts = f"{format_bytes(weights)} of {dtype} weights" + (f", {format_bytes(codes)} of int8 weight codes" if codes else "")
        tries = (["--dtype bfloat16"] if dtype == "float32" else []) + (
            ["another GPU (--device cuda:N)", "--device cpu"] if on_gpu else ["--device cuda", "closing other programs"]
        )
        raise ValueError(
            f"not enough memory on {'the GPU' if on_gpu else 'the CPU'} ({device}): the model needs about "
            f"{format_bytes(needed)} ({parts}, {format_bytes(int(WORKING_MEMORY * weights))} to run) and {format_bytes(free)} are free; "
            f"try {', '.join(tries[:-1])} or {tries[-1]}"
        )
    return weights, codes


class _TimedStreamer:
    """transformers' TextStreamer that notes when each new token arrives (the first ``put`` is the prompt)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import TextStreamer

        self._streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        self._streamer.put(value)
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        self._streamer.end()


@contextlib.contextmanager
def _logged_info(name: str) -> Iterator[list[str]]:
    """The messages of INFO level and above that the logger ``name`` emits inside the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger(name), Collect(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = model.config.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _generate_eager(model: Any, ids: Any, max_new_tokens: int, streamer: _TimedStreamer, pad_token_id: int | None) -> None:
    from transformers import GenerationConfig

    eos = sorted(_eos_ids(model))
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
        pad_token_id=pad_token_id if pad_token_id is not None else (eos[0] if eos else None),
        bos_token_id=model.generation_config.bos_token_id,
    )
    model.generate(ids, attention_mask=ids.new_ones(ids.shape), generation_config=config, streamer=streamer)


def _generate_graphed(model: Any, ids: Any, max_new_tokens: int, streamer: _TimedStreamer, use_cuda_graph: bool = True) -> bool:
    """Greedy decode with the steps replayed from a CUDA graph; False, before anything is streamed, when
    the model's layout has no graphed decode (a state that grows) or the capture fails.
    ``use_cuda_graph=False`` runs the same steps eagerly (how the tests check this loop on a CPU)."""
    from sb_layers.models.spikingbrain import GraphedDecoder

    import torch

    try:
        decoder = GraphedDecoder.from_prompt(model, ids, use_cuda_graph=use_cuda_graph)
    except torch.cuda.OutOfMemoryError:
        raise
    except (ValueError, RuntimeError) as error:  # a layout whose state grows, or a capture that failed
        print(f"no CUDA graph ({' '.join(str(error).split())}): decoding with eager steps", file=sys.stderr)
        return False
    eos = _eos_ids(model)
    streamer.put(ids.cpu())
    for index in range(max_new_tokens):
        token = decoder.next_tokens[0].cpu()  # the step's greedy choice (reads the device)
        streamer.put(token)
        if int(token[0]) in eos or index + 1 == max_new_tokens:
            break
        decoder.step()
    streamer.end()
    return True


def run_generate_command(args: argparse.Namespace) -> int:
    """``spikingbrain generate``: load, stream the continuation, print the figures; returns 0.

    Raises:
        ValueError: (one line) no such device, not enough memory on it, a config or tokenizer that
            cannot be read or does not fit the model, weights of the wrong shape, an empty prompt.
    """
    prompt = _read_prompt(args)
    import torch
    import transformers

    from sb_layers.models.spikingbrain import GLASwaConfig, SpikingBrainConfig, SpikingBrainForCausalLM  # registers the types

    folder = args.model
    device = _resolve_device(args.device)
    dtype = _resolve_dtype(args.dtype, device)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"--model {os.fspath(folder)!r}: config.json cannot be read: {error}") from None
    if not isinstance(config, SpikingBrainConfig):
        raise ValueError(
            f"--model {os.fspath(folder)!r} is not a SpikingBrain checkpoint: its config.json has model_type "
            f"{config.model_type!r} (the release's is 'gla_swa', ours 'spikingbrain')"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"--model {os.fspath(folder)!r}: its tokenizer cannot be loaded: {error}") from None
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"--model {os.fspath(folder)!r}: the tokenizer has {len(tokenizer)} tokens, more than the model's "
            f"vocab_size {config.vocab_size}: it is not this checkpoint's tokenizer"
        )
    weights, codes = check_memory(folder, dtype, device)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens")

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    options: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if device != "cpu":
        options["device_map"] = device
    try:
        with _logged_info(SpikingBrainForCausalLM.__module__) as messages:  # its count of weight codes past int8
            model = SpikingBrainForCausalLM.from_pretrained(folder, local_files_only=True, **options).eval()
    except torch.cuda.OutOfMemoryError:
        raise ValueError(f"not enough memory on the GPU ({device}) while loading the weights; try --device cpu") from None
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"--model {os.fspath(folder)!r}: {error}") from None
    loaded = time.perf_counter() - start

    layout = "the release's layout (gla_swa)" if isinstance(config, GLASwaConfig) else "our layout (spikingbrain)"
    coding = model.config.coding
    if model.config.spiking and coding.weight_bits:
        kind = f"W8ASpike: int{coding.weight_bits} weight groups of {coding.group_size}, spike-coded activations"
    else:
        kind = "spike-coded activations" if model.config.spiking else "bf16 layout: float weights"
    print(f"loaded {os.fspath(folder)}: {layout}, {kind}; as {dtype} on {device} in {loaded:.1f} s, "
          f"weights {format_bytes(weights)}" + (f" + int8 codes {format_bytes(codes)}" if codes else ""), file=sys.stderr)
    for message in messages:
        if "weight codes past int8" in message:
            print(message.partition(": ")[2], file=sys.stderr)

    streamer = _TimedStreamer(tokenizer)
    ids = ids.to(device)
    mode = "eager steps"
    try:
        with torch.inference_mode():
            start = time.perf_counter()
            if device.startswith("cuda") and not args.no_cuda_graph and _generate_graphed(model, ids, args.max_new_tokens, streamer):
                mode = "CUDA graph"
            else:
                _generate_eager(model, ids, args.max_new_tokens, streamer, tokenizer.pad_token_id)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            end = time.perf_counter()
    except torch.cuda.OutOfMemoryError:
        raise ValueError(f"not enough memory on the GPU ({device}) while generating; try a shorter prompt or --device cpu") from None
    sys.stdout.flush()

    new = len(streamer.times)
    line = f"{new} new tokens in {end - start:.2f} s: {new / (end - start):.2f} tokens/s"
    if new:
        line += f" (prompt of {ids.shape[1]} tokens, first token after {streamer.times[0] - start:.2f} s"
        if new > 1:
            line += f", then {(new - 1) / (streamer.times[-1] - streamer.times[0]):.2f} tokens/s decoding, {mode}"
        line += ")"
    print(line, file=sys.stderr)
    resident = peak_resident_bytes()
    host = "peak resident memory of the process " + ("unknown on this platform" if resident is None else _gib(resident))
    if device.startswith("cuda"):
        print(f"peak memory: {_gib(torch.cuda.max_memory_allocated(device))} on {device} "
              f"(torch.cuda.max_memory_allocated); {host}", file=sys.stderr)
    else:
        print(f"peak memory: {host} (CPU)", file=sys.stderr)
    return 0


__all__ = [
    "GENERATE_DESCRIPTION",
    "GENERATE_HELP",
    "add_generate_parser",
    "available_memory",
    "check_memory",
    "checkpoint_folder",
    "format_bytes",
    "run_generate_command",
    "weight_bytes",
]
