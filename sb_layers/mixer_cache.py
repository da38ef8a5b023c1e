"""One mixer protocol: ``mixer(hidden_states, attention_mask, cache) -> hidden_states``.

Every token mixer of this package (:class:`GatedLinearAttention`, :class:`SlidingWindowAttention`,
:class:`ParallelMixer`) and the :class:`HybridBlock` around it is called the same way, as transformers'
attention layers are: the streaming state of every layer lives in one :class:`MixerCache` (the model's
:class:`sb_layers.models.spikingbrain.SpikingBrainCache` is one), each mixer knows its ``layer_idx``
and reads and replaces its own entry; the call returns the hidden states alone. A whole sequence
without kept state is a call with a fresh cache (``MixerCache(1)`` for a standalone layer) or with
``cache=None``: the same output from a zero state, nothing kept. Any other ``cache`` is a ``TypeError``.

Entries (what :meth:`MixerCache.layer_state` returns) follow :class:`CacheEntry`: each owns its tensors
and answers for them (which tensors it holds, a selection of batch rows, filling its windows to fixed
shapes), so the cache holds entries without knowing their types and imports no mixer module. This
package's entries are :class:`sb_layers.GLAState` (a GLA layer's recurrent state),
:class:`sb_layers.RollingKVCache` (a sliding-window layer's keys and values) and
:class:`sb_layers.ParallelState` (a :class:`ParallelMixer`'s pair of the two); all three also follow
:class:`CapturableEntry`, what a decode step captured as a CUDA graph needs.

A mixer (what :class:`sb_layers.HybridBlock` accepts, checked by :func:`check_mixer`) is an
``nn.Module`` with an int ``hidden_size`` and an int ``layer_idx`` whose ``forward(hidden_states,
attention_mask, cache)`` returns the hidden states ``[B, L, hidden_size]`` and keeps its state, if any,
as the entry ``layer_idx`` of the cache (:meth:`MixerCache.layer_state`, :meth:`MixerCache.update_layer_state`;
:func:`mix_on_cache` does both for a mixer written as a function of its state).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from sb_neurons.validation import check_int, describe

_ENTRY_METHODS = ("tensors", "select_batch", "fill_windows")
_CAPTURE_METHODS = ("step_tensors", "use_step_tensors", "count_decode_steps")


class CacheEntry(Protocol):
    """What every entry of a :class:`MixerCache` does itself: the cache holds it and calls these, without
    knowing its type (:func:`check_entry` checks that an object has them)."""

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor the entry holds (for :meth:`MixerCache.memory_bytes`)."""
        ...

    def select_batch(self, index: torch.Tensor) -> CacheEntry:
        """A new entry of batch rows ``index`` (``[n]`` integer indices, kept and reordered; beam search) that
        shares no tensor with this one, so that later calls on either leave the other as it is. Selecting
        every row in order is therefore a copy (what the model's gradient checkpointing replays from)."""
        ...

    def fill_windows(self) -> None:
        """Fix the shapes a one-token decode step reads and writes (same outputs), or nothing if they are fixed."""
        ...


class CapturableEntry(CacheEntry, Protocol):
    """A :class:`CacheEntry` whose one-token decode step a CUDA graph can capture
    (:class:`sb_layers.models.spikingbrain.GraphedDecoder`).

    A replayed graph repeats the step's kernels, not its Python: the tensors the step reads must stay in one
    storage (:meth:`step_tensors`, :meth:`use_step_tensors`), and the host-side values the step would have
    advanced are advanced by the replaying code (:meth:`count_decode_steps`).
    """

    def step_tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors a one-token decode step reads and then replaces or writes in place, in a fixed order;
        their shapes are fixed once :meth:`fill_windows` ran. Raises ``ValueError`` saying why when no
        filling can fix them (the entry grows every step, or holds nothing yet)."""
        ...

    def use_step_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Hold ``tensors`` (the shapes and dtypes of :meth:`step_tensors`, in its order) in their places: the
        static storage of a captured step. The one change of an entry in place that its layer never makes."""
        ...

    def count_decode_steps(self, steps: int) -> None:
        """Advance the host-side values (Python numbers) as ``steps`` one-token decode steps would, for steps
        whose tensor work ran without Python (graph replays); a negative ``steps`` takes back the count of
        steps whose Python ran but whose tensor effects were undone (warm-up and capture)."""
        ...


def _missing(entry: object, methods: tuple[str, ...]) -> list[str]:
    return [name for name in methods if not callable(getattr(entry, name, None))]


def check_entry(entry: object, name: str = "entry") -> CacheEntry:
    """``entry`` if it follows :class:`CacheEntry` (has its methods), else a ``TypeError`` naming ``name``.

    A check of what the object has, not of its class. It runs on every layer call, so it reads three
    attributes (0.4 us on this project's CPU) instead of ``isinstance`` on a ``runtime_checkable``
    protocol (3.8 us)."""
    missing = _missing(entry, _ENTRY_METHODS)
    if missing:
        raise TypeError(
            f"{name} must be a cache entry (sb_layers.mixer_cache.CacheEntry: {', '.join(_ENTRY_METHODS)}; "
            f"e.g. sb_layers.GLAState, RollingKVCache), got {describe(entry)} without {', '.join(missing)}"
        )
    return entry


def is_capturable(entry: object) -> bool:
    """Whether ``entry`` follows :class:`CapturableEntry` (has its methods; its :meth:`~CapturableEntry.step_tensors`
    may still refuse)."""
    return not _missing(entry, _ENTRY_METHODS + _CAPTURE_METHODS)


def check_batch_index(index: object, name: str = "index") -> torch.Tensor:
    """``index`` if it is a 1-D integer tensor (batch rows to keep), else an error naming ``name``. Values are
    not read (that would wait for the device); ``index_select`` raises for a row out of range."""
    if not isinstance(index, torch.Tensor) or index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be an int64 or int32 tensor of batch rows, got {describe(index)}")
    if index.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one batch row per entry), got shape {tuple(index.shape)}")
    return index


class MixerCache:
    """The streaming state of a stack of mixers: one entry per layer index, each a :class:`CacheEntry`.

    Args:
        num_layers: number of layers (mixers with ``layer_idx`` in ``0 .. num_layers - 1``).

    Attributes:
        states: one entry per layer, ``None`` before the layer's first call.
    """

    def __init__(self, num_layers: int) -> None:
        check_int(num_layers, "num_layers", minimum=1)
        self.states: list[CacheEntry | None] = [None] * num_layers

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_layers={len(self.states)}, bytes={self.memory_bytes()})"

    def _check_layer(self, layer_idx: object) -> int:
        return check_int(layer_idx, f"layer_idx (this cache holds {len(self.states)} layers)", minimum=0, maximum=len(self.states) - 1)

    def layer_state(self, layer_idx: int) -> CacheEntry | None:
        """The entry of layer ``layer_idx``, None before its first call."""
        return self.states[self._check_layer(layer_idx)]

    def update_layer_state(self, layer_idx: int, state: CacheEntry | None) -> None:
        """Store ``state`` (a :class:`CacheEntry`, or None to forget the layer's state) as the entry of layer
        ``layer_idx``."""
        layer = self._check_layer(layer_idx)
        self.states[layer] = None if state is None else check_entry(state, "state")

    def memory_bytes(self) -> int:
        """Bytes held by all layer states."""
        return sum(t.numel() * t.element_size() for state in self.states if state is not None for t in state.tensors())

    def fill_windows(self) -> None:
        """:meth:`CacheEntry.fill_windows` of every entry: same outputs, fixed shapes.

        After it, each decode step reads and writes tensors of unchanging shapes wherever an entry can
        have them (a :class:`RollingKVCache` with a bounded window, filled with masked placeholders; a GLA
        state always has them), so one step can be captured as a CUDA graph and replayed.
        """
        for state in self.states:
            if state is not None:
                state.fill_windows()

    def select_batch(self, index: torch.Tensor) -> None:
        """Keep (and reorder to) batch rows ``index`` (``[n]`` int64) of every entry."""
        check_batch_index(index)
        self.states = [None if state is None else state.select_batch(index) for state in self.states]


def check_layer_idx(layer_idx: Any) -> int:
    return check_int(layer_idx, "layer_idx", minimum=0)


def check_cache(owner: str, cache: Any) -> MixerCache | None:
    """``cache`` if it is a :class:`MixerCache` or None, else a ``TypeError`` naming ``owner``'s ``cache``."""
    if cache is not None and not isinstance(cache, MixerCache):
        raise TypeError(f"{owner}: cache must be a MixerCache (e.g. SpikingBrainCache) or None, got {type(cache).__name__}")
    return cache


def mix_on_cache(mixer: Any, hidden_states: Any, attention_mask: Any, cache: Any):
    """The protocol ``forward`` of a mixer whose ``_mix(hidden_states, attention_mask, entry)`` returns
    ``(output, new_entry)``: with a :class:`MixerCache`, entry ``mixer.layer_idx`` is read and replaced by the
    new one; with ``cache=None`` the mixer starts from a zero state and keeps nothing. Returns the output alone."""
    check_cache(type(mixer).__name__, cache)
    if cache is None:
        return mixer._mix(hidden_states, attention_mask, None)[0]
    out, new_state = mixer._mix(hidden_states, attention_mask, cache.layer_state(mixer.layer_idx))
    cache.update_layer_state(mixer.layer_idx, new_state)
    return out


def check_mixer(mixer: Any) -> Any:
    """``mixer`` if it follows the mixer protocol (see the module docstring), checked by what it has and
    how it is called, not by its class; else a ``TypeError`` saying what is missing."""
    name = type(mixer).__name__
    if not isinstance(mixer, nn.Module):
        raise TypeError(f"mixer must be an nn.Module following the mixer protocol, got {name}")
    missing = [attr for attr in ("hidden_size", "layer_idx") if not isinstance(getattr(mixer, attr, None), int)]
    if missing:
        raise TypeError(f"mixer {name} does not follow the mixer protocol: no int {' or '.join(missing)}")
    try:
        inspect.signature(mixer.forward).bind(None, None, None)
    except TypeError:
        raise TypeError(f"mixer {name} does not follow the mixer protocol: forward(hidden_states, attention_mask, cache) does not take three arguments") from None
    return mixer


__all__ = ["CacheEntry", "CapturableEntry", "MixerCache", "check_entry", "check_mixer", "is_capturable"]
