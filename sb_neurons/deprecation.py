"""The one way to retire a public name: warn with the version that removes it.

A rename keeps the old name working until a stated version, and every use of it says which one::

    def old_name(*args, **kwargs):
        warn_deprecated("sb_layers.old_name", "sb_layers.new_name", removed_in="0.3.0")
        return new_name(*args, **kwargs)

The warning is a ``DeprecationWarning`` attributed to the caller's line (``stacklevel``), reading
``"sb_layers.old_name is deprecated and will be removed in 0.3.0; use sb_layers.new_name"``. The removal
is recorded in ``CHANGELOG.md`` when it happens. Shared by every package of the project: ``sb_neurons`` is
the one they all may import.
"""

from __future__ import annotations

import re
import warnings

from .validation import check_int

_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")


def warn_deprecated(old: str, new: str, *, removed_in: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` and goes away in version ``removed_in``.

    Args:
        old: the deprecated name or call form, as a user writes it (``"sb_layers.old_name"``).
        new: what to write instead.
        removed_in: the version that removes ``old``, ``"MAJOR.MINOR"`` or ``"MAJOR.MINOR.PATCH"``.
        stacklevel: the frame the warning points at (3: the caller of the function that calls this).

    Raises:
        TypeError: ``old``, ``new`` or ``removed_in`` is not a string, or ``stacklevel`` not an int.
        ValueError: ``old`` or ``new`` is empty, ``removed_in`` is not a version, ``stacklevel < 1``.
    """
    for name, value in (("old", old), ("new", new), ("removed_in", removed_in)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    for name, value in (("old", old), ("new", new)):
        if not value.strip():
            raise ValueError(f"{name} must name something, got {value!r}")
    if not _VERSION.fullmatch(removed_in):
        raise ValueError(f"removed_in must be a version such as '0.3.0', got {removed_in!r}")
    check_int(stacklevel, "stacklevel", minimum=1)
    warnings.warn(f"{old} is deprecated and will be removed in {removed_in}; use {new}", DeprecationWarning, stacklevel=stacklevel)


__all__ = ["warn_deprecated"]
