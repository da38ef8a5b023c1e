"""Deprecated names kept for one release: each use warns with a ``DeprecationWarning`` naming the new one.

Shared by every package of the project (``sb_neurons`` is the one they all may import): a renamed public
name stays importable under its old name through a module ``__getattr__`` built by :func:`module_aliases`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (removed in the next release)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning, stacklevel=stacklevel)


def module_aliases(module_name: str, aliases: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving deprecated names: ``aliases[old] = (new name, getter of the object)``."""

    def __getattr__(name: str) -> Any:
        if name in aliases:
            new, get = aliases[name]
            warn_renamed(f"{module_name}.{name}", new)
            return get()
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


__all__ = ["module_aliases", "warn_renamed"]
