"""The argparse types every subcommand of ``spikingbrain`` shares, and its help formatter.

Values: :func:`positive_int`, :func:`positive_float`, :func:`fraction`, :func:`nonnegative_float`. Paths,
checked while the command line is parsed (before any work starts): :func:`input_file`, :func:`input_dir`
(must exist and be readable), :func:`output_file`, :func:`output_dir` (must be writable, or creatable:
missing folders are created when the command writes, :func:`write_text`). A bad value raises
``argparse.ArgumentTypeError`` naming the value: argparse turns it into a usage error (exit status 2)
naming the argument.

Only the command line uses these; the libraries (sb_neurons, sb_kernels, sb_layers, sb_adapters) never
import this package.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

__all__ = [
    "HelpFormatter",
    "fraction",
    "input_dir",
    "input_file",
    "nonnegative_float",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "write_text",
]


# --- values ----------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    """argparse type: a float > 0 (a usage error names the value otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (NaN and infinities refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# --- paths -----------------------------------------------------------------------------------------


def _path(text: str) -> Path:
    if not text:
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return Path(text).expanduser()


def _check_readable(path: Path) -> None:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with open(path, "rb"):
                pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {os.fspath(path)!r}: {error.strerror}") from None


def _check_writable_folder(path: Path, for_what: Path) -> None:
    """``path`` (an existing folder, or the nearest existing ancestor of one to create) accepts new files."""
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(
            f"cannot write {os.fspath(for_what)!r}: folder {os.fspath(path)!r} is not writable ({error.strerror})"
        ) from None


def _nearest_existing(path: Path, for_what: Path) -> Path:
    """The nearest existing ancestor of the missing ``path``; it must be a folder."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {os.fspath(for_what)!r}: {os.fspath(ancestor)!r} is a file, not a folder")
    return ancestor


def input_file(text: str) -> Path:
    """argparse type: an existing, readable file."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"must be a file, got the folder {text!r}")
    _check_readable(path)
    return path


def input_dir(text: str) -> Path:
    """argparse type: an existing, readable folder."""
    path = _path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a folder, got the file {text!r}")
    _check_readable(path)
    return path


def output_file(text: str) -> Path:
    """argparse type: a file that can be written: an existing writable file, or a new file whose folder
    exists or can be created (missing folders are created when the file is written)."""
    path = _path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a file to write, got the folder {text!r}")
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as error:
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: {error.strerror}") from None
        return path
    folder = path.parent if path.parent.is_dir() else _nearest_existing(path.parent / "_", path)
    _check_writable_folder(folder, path)
    return path


def output_dir(text: str) -> Path:
    """argparse type: a folder to write into: an existing writable folder, or one that can be created
    (it is created when the command writes)."""
    path = _path(text)
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"must be a folder, got the file {text!r}")
        _check_writable_folder(path, path)
        return path
    _check_writable_folder(_nearest_existing(path, path), path)
    return path


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (checked by :func:`output_file`), creating missing folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- help ------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (examples keep their lines); ``(default: ...)`` appended to every option
    whose default is a value (not ``None`` / ``False``) and whose help does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return action.help
        return super()._get_help_string(action)
