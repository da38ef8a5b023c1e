"""One mixer protocol: ``mixer(hidden_states, attention_mask, cache) -> hidden_states``.

Every token mixer of this package (:class:`GatedLinearAttention`, :class:`SlidingWindowAttention`,
:class:`ParallelMixer`) and the :class:`HybridBlock` around it is called the same way, as transformers'
attention layers are: the streaming state of every layer lives in one :class:`MixerCache` (the model's
:class:`sb_layers.models.spikingbrain.SpikingBrainCache` is one), each mixer knows its ``layer_idx``
and reads and updates its own entry in place; the call returns the hidden states alone. A whole sequence
without kept state is a call with a fresh cache (``MixerCache(1)`` for a standalone layer) or with
``cache=None``: the same output from a zero state, nothing kept. Any other ``cache`` is a ``TypeError``.

Entries (what :meth:`MixerCache.layer_state` returns): a GLA recurrent state ``[B, H, Dk, Dv]``, an
object following :class:`CacheEntry` (a :class:`sb_layers.RollingKVCache`: it selects batch rows and fills
its window itself), or, for a :class:`ParallelMixer`, a ``(gla_state, kv_cache)`` pair whose parts its two
mixers own (their ``cache_part`` 0 and 1). The cache imports no mixer module.

A mixer (what :class:`sb_layers.HybridBlock` accepts, checked by :func:`check_mixer`) is an
``nn.Module`` with an int ``hidden_size`` and an int ``layer_idx`` whose ``forward(hidden_states,
attention_mask, cache)`` returns the hidden states ``[B, L, hidden_size]`` and keeps its state, if any,
in the cache entry at :func:`cache_key` (``layer_idx``, or ``(layer_idx, cache_part)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

LayerKey = int | tuple[int, int]


class CacheEntry(Protocol):
    """What an entry object of a :class:`MixerCache` does itself (:class:`sb_layers.RollingKVCache` is one):
    the cache holds it and calls these, without knowing its type."""

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor the entry holds (for :meth:`MixerCache.memory_bytes`)."""
        ...

    def select_batch(self, index: torch.Tensor) -> CacheEntry:
        """A new entry of batch rows ``index`` (kept and reordered; beam search)."""
        ...

    def fill_windows(self) -> None:
        """Fix the shapes a decode step reads and writes (same outputs), or nothing if they are fixed."""
        ...


def tensors_of(state: Any) -> Iterator[torch.Tensor]:
    """Every tensor of one layer entry (a GLA state tensor, a :class:`CacheEntry`, a tuple of those)."""
    if state is None:
        return
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, tuple):
        for part in state:
            yield from tensors_of(part)
    else:
        yield from state.tensors()


def select_batch(state: Any, index: torch.Tensor) -> Any:
    """One layer entry restricted/reordered to batch rows ``index``."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, tuple):
        return tuple(select_batch(part, index) for part in state)
    return state.select_batch(index)


def fill_windows(state: Any) -> None:
    """:meth:`CacheEntry.fill_windows` on every entry object of one layer entry (a state tensor has fixed shapes)."""
    if state is None or isinstance(state, torch.Tensor):
        return
    if isinstance(state, tuple):
        for part in state:
            fill_windows(part)
    else:
        state.fill_windows()


class MixerCache:
    """The streaming state of a stack of mixers: one entry per layer index, owned here.

    Args:
        num_layers: number of layers (mixers with ``layer_idx`` in ``0 .. num_layers - 1``).

    Attributes:
        states: one entry per layer, ``None`` before the layer's first call.
    """

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        self.states: list[Any] = [None] * num_layers

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_layers={len(self.states)}, bytes={self.memory_bytes()})"

    def _split(self, key: LayerKey) -> tuple[int, int | None]:
        layer, part = (key, None) if not isinstance(key, tuple) else key
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(self.states):
            raise ValueError(f"layer_idx must be an int in [0, {len(self.states)}) for this cache of {len(self.states)} layers, got {layer!r}")
        return layer, part

    def layer_state(self, key: LayerKey) -> Any:
        """The entry of layer ``key`` (an int ``layer_idx``, or ``(layer_idx, part)`` for one mixer of a
        :class:`ParallelMixer`), None before its first call."""
        layer, part = self._split(key)
        state = self.states[layer]
        if part is None or state is None:
            return state
        return state[part] if part < len(state) else None

    def update_layer_state(self, key: LayerKey, state: Any) -> None:
        """Store the new entry of layer ``key`` (see :meth:`layer_state`)."""
        layer, part = self._split(key)
        if part is None:
            self.states[layer] = state
            return
        parts = list(self.states[layer] or ())
        parts += [None] * (part + 1 - len(parts))
        parts[part] = state
        self.states[layer] = tuple(parts)

    def memory_bytes(self) -> int:
        """Bytes held by all layer states."""
        return sum(t.numel() * t.element_size() for state in self.states for t in tensors_of(state))

    def fill_windows(self) -> None:
        """:meth:`RollingKVCache.fill_window` on every sliding-window state: same outputs, fixed shapes.

        After it, each decode step reads and writes tensors of unchanging shapes, so one step can be
        captured as a CUDA graph and replayed. Full-attention caches (window None) are left as they are.
        """
        for state in self.states:
            fill_windows(state)

    def select_batch(self, index: torch.Tensor) -> None:
        """Keep (and reorder to) batch rows ``index`` of every entry."""
        self.states = [select_batch(state, index) for state in self.states]


def cache_key(mixer: Any) -> LayerKey:
    """Where ``mixer`` keeps its state in a :class:`MixerCache`: ``layer_idx``, or ``(layer_idx, part)``."""
    part = getattr(mixer, "cache_part", None)
    return mixer.layer_idx if part is None else (mixer.layer_idx, part)


def check_layer_idx(layer_idx: Any) -> int:
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise ValueError(f"layer_idx must be an int >= 0, got {layer_idx!r}")
    return layer_idx


def check_cache(owner: str, cache: Any) -> MixerCache | None:
    """``cache`` if it is a :class:`MixerCache` or None, else a ``TypeError`` naming ``owner``'s ``cache``."""
    if cache is not None and not isinstance(cache, MixerCache):
        raise TypeError(f"{owner}: cache must be a MixerCache (e.g. SpikingBrainCache) or None, got {type(cache).__name__}")
    return cache


def mix_on_cache(mixer: Any, hidden_states: Any, attention_mask: Any, cache: Any):
    """The protocol ``forward`` of a single mixer whose ``_mix(hidden_states, attention_mask, layer_state)``
    returns ``(output, new_layer_state)``: with a :class:`MixerCache`, the mixer's entry (:func:`cache_key`)
    is read and replaced by the new state; with ``cache=None`` the mixer starts from a zero state and keeps
    nothing. Returns the output alone."""
    check_cache(type(mixer).__name__, cache)
    if cache is None:
        return mixer._mix(hidden_states, attention_mask, None)[0]
    key = cache_key(mixer)
    out, new_state = mixer._mix(hidden_states, attention_mask, cache.layer_state(key))
    cache.update_layer_state(key, new_state)
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


__all__ = ["CacheEntry", "MixerCache", "cache_key", "check_mixer"]
