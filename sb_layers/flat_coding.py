"""The previous release's flat spike fields, now the nested ``coding`` (a :class:`sb_layers.SpikeCoding`).

Both configs that carry a coding, :class:`sb_layers.models.spikingbrain.SpikingBrainConfig` and
``sb_adapters.SpikingConfig``, accepted flat fields in the previous release (``spike_k``, ``spike_codec``,
... and ``k``, ``mode``, ...). Each keeps a table ``old name -> SpikeCoding field`` and these helpers do the
rest: pop the old fields out of keywords or saved JSON (:func:`pop_flat_fields`), merge them into a coding
(:func:`coding_with`), and serve them as deprecated attributes (:func:`flat_coding_properties`). What each
config's warning says where the old fields arrive stays with the config. Removed with the flat fields in
the next release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sb_neurons.deprecation import warn_renamed

from .spiking_linear import SpikeCoding


def coding_with(coding: SpikeCoding | dict | None, updates: Mapping[str, Any] | None = None, *, label: str | None = None) -> SpikeCoding:
    """``coding`` (a SpikeCoding, a dict of its fields, or None for the defaults) with the SpikeCoding fields
    ``updates`` set. With ``label``, a bad update raises its ``TypeError`` / ``ValueError`` prefixed by it
    (``"coding.k: k must be ..."``)."""
    base = SpikeCoding() if coding is None else coding
    if isinstance(base, dict):
        base = SpikeCoding.from_dict(base)
    if not isinstance(base, SpikeCoding):
        raise TypeError(f"coding must be a SpikeCoding or a dict of its fields, got {type(base).__name__}")
    if not updates:
        return base
    try:
        return SpikeCoding.from_dict(dict(updates), base=base)
    except (TypeError, ValueError) as exc:
        if label is None:
            raise
        raise type(exc)(f"{label}: {exc}") from exc


def pop_flat_fields(data: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """Remove the flat fields ``names`` (old name -> SpikeCoding field) from ``data``: ``{old name: value}``."""
    return {name: data.pop(name) for name in list(data) if name in names}


def flat_updates(old: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The SpikeCoding fields of flat values ``old`` (old name -> value); a name ``names`` lacks is a field already."""
    return {names.get(name, name): value for name, value in old.items()}


def flat_coding_properties(
    names: Mapping[str, str], *, set_hint: str, tuples_as_lists: bool = False, label_errors: bool = False
) -> Callable[[type], type]:
    """A class decorator adding each flat field of ``names`` as a deprecated attribute of ``coding``.

    Reading ``config.<old>`` warns ``"<Class>.<old> is deprecated ...; use <Class>.coding.<field>"`` and
    returns ``config.coding.<field>`` (a tuple as a list with ``tuples_as_lists``: the JSON value the old
    field held); writing it warns ``"<Class>.<old> = ... is deprecated ...; use <set_hint>"`` (``set_hint`` a
    format string of ``owner``, ``new``, ``new_repr``) and sets ``config.coding`` to the coding with that field
    changed (errors prefixed ``coding.<field>`` with ``label_errors``).
    """

    def prop(old: str, new: str) -> property:
        def getter(self: Any) -> Any:
            owner = type(self).__name__
            warn_renamed(f"{owner}.{old}", f"{owner}.coding.{new}")
            value = getattr(self.coding, new)
            return list(value) if tuples_as_lists and isinstance(value, tuple) else value

        def setter(self: Any, value: Any) -> None:
            owner = type(self).__name__
            warn_renamed(f"{owner}.{old} = ...", set_hint.format(owner=owner, new=new, new_repr=repr(new)))
            self.coding = coding_with(self.coding, {new: value}, label=f"coding.{new}" if label_errors else None)

        return property(getter, setter, doc=f"Deprecated: ``coding.{new}``.")

    def decorate(cls: type) -> type:
        for old, new in names.items():
            setattr(cls, old, prop(old, new))
        return cls

    return decorate


__all__ = ["coding_with", "flat_coding_properties", "flat_updates", "pop_flat_fields"]
