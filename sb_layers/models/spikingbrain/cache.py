"""SpikingBrainCache: the streaming state of a whole model, one entry per layer.

Each entry is the state its layer returns (:func:`sb_layers.run_mixer`): a GLA recurrent state tensor
``[B, H, Dk, Dv]`` (constant size), a :class:`sb_layers.RollingKVCache` (at most ``sliding_window``
keys/values plus sinks), or a ``(gla_state, kv_cache)`` pair for the intra-layer hybrid. Memory
therefore stops growing once the window is full, except for full-attention layers (76B style), whose
cache holds every token by definition.

It subclasses ``transformers.Cache`` so that ``generate()`` accepts and returns it, but it holds none of
transformers' per-layer KV objects: the layers own their state formats. Recurrent state cannot be rolled
back, so ``crop`` (assisted decoding) raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from transformers import Cache

from sb_layers.sliding_window import RollingKVCache


def _tensors_of(state: Any) -> Iterator[torch.Tensor]:
    if state is None:
        return
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, RollingKVCache):
        for name in ("keys", "values", "key_mask", "key_index", "sink_keys", "sink_values", "seen_tokens"):
            tensor = getattr(state, name)
            if tensor is not None:
                yield tensor
    elif isinstance(state, tuple):
        for part in state:
            yield from _tensors_of(part)
    else:
        raise TypeError(f"unsupported layer state {type(state).__name__}")


def _select_batch(state: Any, index: torch.Tensor) -> Any:
    """``state`` restricted/reordered to batch rows ``index``."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, RollingKVCache):
        pick = lambda t: None if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
        return RollingKVCache(
            window=state.window, keys=pick(state.keys), values=pick(state.values), key_mask=pick(state.key_mask),
            # key_index is per position, not per row: cloned, since decode steps write into it in place.
            key_index=None if state.key_index is None else state.key_index.clone(),
            sink_keys=pick(state.sink_keys), sink_values=pick(state.sink_values),
            seen_tokens=pick(state.seen_tokens), length=state.length, maybe_masked=state.maybe_masked,
            in_ring_order=state.in_ring_order,
        )
    return tuple(_select_batch(part, index) for part in state)


class SpikingBrainCache(Cache):
    """Per-layer streaming states of :class:`SpikingBrainForCausalLM`.

    Args:
        num_layers: number of decoder layers (``config.num_hidden_layers``).

    Attributes:
        states: one entry per layer, ``None`` before the layer's first call.
        seen_tokens: sequence positions consumed so far (padding included, sink tokens excluded).
        real_tokens: ``[B]`` int64 non-padding tokens consumed per row (the next rotary position), or None.
    """

    def __init__(self, num_layers: int) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        # transformers' base keeps a list of its own layer objects; ours are opaque to it, so it stays empty.
        self.layers = []
        self.layer_class_to_replicate = None
        self.offloading = False
        self.states: list[Any] = [None] * num_layers
        self.seen_tokens = 0
        self.real_tokens: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        return f"SpikingBrainCache(num_layers={len(self.states)}, seen_tokens={self.seen_tokens}, bytes={self.memory_bytes()})"

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return self.seen_tokens > 0

    @property
    def max_batch_size(self) -> int:
        return -1 if self.real_tokens is None else int(self.real_tokens.shape[0])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Sequence positions consumed so far (what ``generate`` slices new input ids against)."""
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def memory_bytes(self) -> int:
        """Bytes held by all layer states: bounded by the window, independent of context length."""
        return sum(t.numel() * t.element_size() for state in self.states for t in _tensors_of(state))

    def advance(self, attention_mask: torch.Tensor) -> None:
        """Record that the rows of ``attention_mask`` ``[B, L]`` (1 real, 0 pad) were consumed."""
        consumed = attention_mask.to(torch.int64).sum(dim=1)
        self.real_tokens = consumed if self.real_tokens is None else self.real_tokens + consumed
        self.seen_tokens += attention_mask.shape[1]

    def fill_windows(self) -> None:
        """:meth:`RollingKVCache.fill_window` on every sliding-window state: same outputs, fixed shapes.

        After it, each decode step reads and writes tensors of unchanging shapes, so one step can be
        captured as a CUDA graph and replayed. Full-attention caches (window None) are left as they are.
        """
        for state in self.states:
            for part in state if isinstance(state, tuple) else (state,):
                if isinstance(part, RollingKVCache) and part.window is not None:
                    part.fill_window()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch rows (beam search)."""
        self.states = [_select_batch(state, beam_idx) for state in self.states]
        if self.real_tokens is not None:
            self.real_tokens = self.real_tokens.index_select(0, beam_idx.to(self.real_tokens.device))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("SpikingBrainCache holds recurrent states, which cannot be rolled back")

    def reset(self) -> None:
        self.states = [None] * len(self.states)
        self.seen_tokens = 0
        self.real_tokens = None


__all__ = ["SpikingBrainCache"]
