"""SpikingBrainCache: the streaming state of a whole model, one entry per layer.

It is the model's :class:`sb_layers.MixerCache`: every mixer reads and replaces its own entry (at its
``layer_idx``), the mixer protocol of :mod:`sb_layers.mixer_cache`. Each entry is a cache entry that
answers for its own tensors: a :class:`sb_layers.GLAState` (``[B, H, Dk, Dv]``, constant size), a
:class:`sb_layers.RollingKVCache` (at most ``sliding_window`` keys/values plus sinks), or a
:class:`sb_layers.ParallelState` (the pair of both) for the intra-layer hybrid. Memory therefore stops
growing once the window is full, except for full-attention layers (76B style), whose cache holds every
token by definition.

It subclasses ``transformers.Cache`` so that ``generate()`` accepts and returns it, but it holds none of
transformers' per-layer KV objects: the layers own their state formats. Recurrent state cannot be rolled
back, so ``crop`` (assisted decoding) raises.
"""

from __future__ import annotations

import torch
from transformers import Cache

from sb_layers.mixer_cache import MixerCache, check_batch_index


class SpikingBrainCache(Cache, MixerCache):
    """Per-layer streaming states of :class:`SpikingBrainForCausalLM`.

    Args:
        num_layers: number of decoder layers (``config.num_hidden_layers``).

    Attributes:
        states: one entry per layer, ``None`` before the layer's first call.
        seen_tokens: sequence positions consumed so far (padding included, sink tokens excluded).
        real_tokens: ``[B]`` int64 non-padding tokens consumed per row (the next rotary position), or None.
    """

    def __init__(self, num_layers: int) -> None:
        MixerCache.__init__(self, num_layers)
        # transformers' base keeps a list of its own layer objects; ours are opaque to it, so it stays empty.
        self.layers = []
        self.layer_class_to_replicate = None
        self.offloading = False
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
        return MixerCache.memory_bytes(self)

    def advance(self, attention_mask: torch.Tensor) -> None:
        """Record that the rows of ``attention_mask`` ``[B, L]`` (1 real, 0 pad) were consumed."""
        consumed = attention_mask.to(torch.int64).sum(dim=1)
        self.real_tokens = consumed if self.real_tokens is None else self.real_tokens + consumed
        self.seen_tokens += attention_mask.shape[1]

    def fill_windows(self) -> None:
        """:meth:`sb_layers.MixerCache.fill_windows` (fixed shapes for a captured decode step)."""
        MixerCache.fill_windows(self)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep (and reorder to) the batch rows ``beam_idx`` (``[n]`` int64; beam search): every entry's
        :meth:`~sb_layers.mixer_cache.CacheEntry.select_batch` and the per-row token counts."""
        check_batch_index(beam_idx, "beam_idx")
        self.select_batch(beam_idx)
        if self.real_tokens is not None:
            self.real_tokens = self.real_tokens.index_select(0, beam_idx.to(self.real_tokens.device))

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("SpikingBrainCache holds recurrent states, which cannot be rolled back")

    def reset(self) -> None:
        self.states = [None] * len(self.states)
        self.seen_tokens = 0
        self.real_tokens = None


__all__ = ["SpikingBrainCache"]
