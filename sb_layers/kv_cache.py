"""RollingKVCache: the streaming state of one sliding-window attention layer (its keys and values).

It owns its tensors and every write to them: appending a call's entries (and evicting the oldest), the
in-place ring write of a decode step onto a full window, batch selection, and filling the window with
masked placeholders for fixed shapes. It is a cache entry of :mod:`sb_layers.mixer_cache`, and a
capturable one when its window is bounded and it holds no sinks. Unlike a :class:`sb_layers.GLAState`, the
layer updates it in place (appending to a window is cheaper than copying it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from sb_kernels import rotate_and_write_ring
from sb_neurons.validation import check_int, describe

from .mixer_cache import check_batch_index

# The tensors a decode step onto a full window reads and writes (write_ring), in step_tensors' order.
_STEP_SLOTS = ("keys", "values", "key_mask", "key_index", "seen_tokens")


@dataclass
class RollingKVCache:
    """Streaming state of one SWA layer: rotated keys and values of at most ``window`` recent tokens.

    Attributes:
        window: the layer's window (None: keep everything).
        keys, values: ``[B, Hkv, n, D]`` regular entries, ``n <= window``.
        key_mask: ``[B, n]`` bool, False for padded tokens.
        key_index: ``[n]`` int64 sequence index of each entry.
        sink_keys, sink_values: ``[B, Hkv, S, D]`` sink entries (never evicted), or None.
        seen_tokens: ``[B]`` int64 real (unpadded) tokens seen: the next rotary position.
        length: tokens appended so far (sinks excluded): the next sequence index.
        maybe_masked: True once an entry may be masked (a call with an ``attention_mask``, or
            :meth:`fill_window`'s placeholders); while False every entry is a real token, which lets a
            prefill take the unmasked :func:`sb_layers.attention.windowed_attention` path without reading the mask back.
        in_ring_order: True after a decode step wrote over the oldest entry in place
            (:func:`sb_kernels.rotate_and_write_ring`): entries are no longer sorted by index
            (:meth:`sort` restores the order, which every other path assumes).
    """

    window: int | None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None
    key_index: torch.Tensor | None = None
    sink_keys: torch.Tensor | None = None
    sink_values: torch.Tensor | None = None
    seen_tokens: torch.Tensor | None = None
    length: int = 0
    maybe_masked: bool = False
    in_ring_order: bool = False

    def __post_init__(self) -> None:
        if self.window is not None:
            check_int(self.window, "window", minimum=1)
        check_int(self.length, "length", minimum=0)

    @property
    def num_entries(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def fill_window(self) -> None:
        """Pad to exactly ``window`` entries with masked placeholders in front of the real ones.

        Placeholders are never attended (``key_mask`` False) and are the first evicted; their indices
        continue the real ones downwards, so the run of indices stays contiguous. Outputs are unchanged,
        but from now on every call of the same length has the same shapes (what a captured CUDA graph of
        a decode step needs). Raises ``ValueError`` for an unbounded window or an empty cache.
        """
        if self.window is None:
            raise ValueError("fill_window needs a bounded window (window=None keeps every token)")
        if self.keys is None or self.key_index is None or not self.key_index.numel():
            raise ValueError("fill_window needs at least one cached token (call it after the prefill)")
        missing = self.window - self.keys.shape[2]
        if missing <= 0:
            return
        self.sort()
        batch, heads, _, dim = self.keys.shape
        self.maybe_masked = True
        self.keys = torch.cat([self.keys.new_zeros(batch, heads, missing, dim), self.keys], dim=2)
        self.values = torch.cat([self.values.new_zeros(batch, heads, missing, self.values.shape[3]), self.values], dim=2)
        self.key_mask = torch.cat([self.key_mask.new_zeros(batch, missing), self.key_mask], dim=1)
        below = torch.arange(-missing, 0, device=self.key_index.device, dtype=self.key_index.dtype)
        self.key_index = torch.cat([self.key_index[:1] + below, self.key_index])

    def can_write_over_oldest(self) -> bool:
        """Whether a one-token step may write over the oldest entry in place now (the decode path of
        :class:`sb_layers.SlidingWindowAttention`, :meth:`write_ring`): a bounded window
        already full, no sinks, and in-place writes allowed (no autograd; inference tensors only in
        inference mode)."""
        if self.window is None or self.keys is None or self.sink_keys is not None or self.keys.shape[2] != self.window:
            return False
        if torch.is_grad_enabled():
            return False
        return torch.is_inference_mode_enabled() or not self.keys.is_inference()

    def sort(self) -> None:
        """Entries back in increasing index order after ring writes (a no-op otherwise)."""
        if not self.in_ring_order:
            return
        order = self.key_index.argsort()
        self.keys, self.values = self.keys.index_select(2, order), self.values.index_select(2, order)
        self.key_mask, self.key_index = self.key_mask.index_select(1, order), self.key_index.index_select(0, order)
        self.in_ring_order = False

    def append(
        self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, *,
        real: int | torch.Tensor = 0, masked: bool = False,
    ) -> None:
        """Add entries (``keys, values [B, Hkv, n, D]``, ``mask [B, n]``, sequence ``index [n]``) and evict
        all but the newest ``window``; ``length`` grows by ``n``, ``seen_tokens`` by ``real`` (an int, or
        ``[B]`` real tokens per row), and ``masked`` (the call had an ``attention_mask``) sets
        ``maybe_masked``."""
        self.maybe_masked = self.maybe_masked or masked
        if self.keys is None:
            self.keys, self.values, self.key_mask, self.key_index = keys, values, mask, index
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)
            self.values = torch.cat([self.values, values], dim=2)
            self.key_mask = torch.cat([self.key_mask, mask], dim=1)
            self.key_index = torch.cat([self.key_index, index])
        if self.window is not None and self.keys.shape[2] > self.window:
            keep = slice(self.keys.shape[2] - self.window, None)
            self.keys, self.values = self.keys[:, :, keep], self.values[:, :, keep]
            self.key_mask, self.key_index = self.key_mask[:, keep], self.key_index[keep]
        self.length += index.shape[0]
        if self.seen_tokens is not None:
            self.seen_tokens = self.seen_tokens + real

    def begin_call(self, batch: int, device: torch.device) -> None:
        """Check (or, on the first call, set up) the per-row token counts for a call of ``batch`` rows."""
        if self.seen_tokens is None:
            self.seen_tokens = torch.zeros(batch, dtype=torch.int64, device=device)
        elif self.seen_tokens.shape[0] != batch:
            raise ValueError(f"cache holds batch size {self.seen_tokens.shape[0]}, input has {batch}")

    def set_sinks(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Keep the sink entries ``[B, Hkv, S, D]`` (never evicted)."""
        self.sink_keys, self.sink_values = keys, values

    def next_indices(self, count: int, device: torch.device) -> torch.Tensor:
        """``[count]`` int64 sequence indices of the next ``count`` entries (call after :meth:`sort`).

        They continue from the cached indices on the device, so no host value enters the graph of a decode
        step and a captured step stays right when replayed: the largest index + 1 == ``length``."""
        index = torch.arange(count, device=device)
        if self.key_index is not None and self.key_index.numel():
            return index + (self.key_index[-1] + 1)
        return index + self.length

    def write_ring(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, inv_freq: torch.Tensor, *,
        keep: torch.Tensor | None = None, spike_query_k: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step onto a full window (:meth:`can_write_over_oldest`): ``q [B, H, D]``, ``k, v [B, Hkv,
        D]`` unrotated, ``keep [B]`` bool (False: a padded token) or None. Rotates q and k at each row's next
        position and writes k, v over the oldest entry in place (:func:`sb_kernels.rotate_and_write_ring`: one
        kernel on CUDA, its PyTorch reference elsewhere; ``spike_query_k``: the W8ASpike attention's coding).
        Returns ``(q_rot [B, H, 1, D], allowed [B, window])``, the keys the query sees."""
        q_rot, allowed, self.seen_tokens = rotate_and_write_ring(
            q, k, v, self.keys, self.values, self.key_mask, self.key_index, self.seen_tokens, inv_freq,
            keep=keep, spike_query_k=spike_query_k,
        )
        self.in_ring_order = True
        self.maybe_masked = self.maybe_masked or keep is not None
        self.length += 1
        return q_rot, allowed

    # --- the cache-entry protocol (sb_layers.mixer_cache.CacheEntry) ----------------------------------

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor this entry holds."""
        for name in ("keys", "values", "key_mask", "key_index", "sink_keys", "sink_values", "seen_tokens"):
            tensor = getattr(self, name)
            if tensor is not None:
                yield tensor

    def select_batch(self, index: torch.Tensor) -> RollingKVCache:
        """A new cache of batch rows ``index`` (``[n]`` int64; kept and reordered): every per-row tensor
        indexed by ``index`` along its first dimension, ``key_index`` copied, the counters kept."""
        check_batch_index(index)
        pick = lambda t: None if t is None else t.index_select(0, index.to(t.device))  # noqa: E731
        return RollingKVCache(
            window=self.window, keys=pick(self.keys), values=pick(self.values), key_mask=pick(self.key_mask),
            # key_index is per position, not per row: cloned, since decode steps write into it in place.
            key_index=None if self.key_index is None else self.key_index.clone(),
            sink_keys=pick(self.sink_keys), sink_values=pick(self.sink_values),
            seen_tokens=pick(self.seen_tokens), length=self.length, maybe_masked=self.maybe_masked,
            in_ring_order=self.in_ring_order,
        )

    def fill_windows(self) -> None:
        """:meth:`fill_window` if the window is bounded (full attention, ``window=None``, stays as it is)."""
        if self.window is not None:
            self.fill_window()

    # --- captured decode steps (sb_layers.mixer_cache.CapturableEntry) ---------------------------------

    def step_tensors(self) -> tuple[torch.Tensor, ...]:
        """``(keys, values, key_mask, key_index, seen_tokens)``: what a decode step onto a full window reads
        and writes (:meth:`write_ring` writes the first four in place and replaces the row counts); their
        shapes are fixed after :meth:`fill_window`. Raises ``ValueError`` for an unbounded window (it grows
        every step), sinks (entries beside the window) or an empty cache (nothing to fill yet)."""
        if self.window is None:
            raise ValueError("window=None keeps every token, so the cache grows every step (captured steps need bounded sliding windows)")
        if self.sink_keys is not None:
            raise ValueError("the cache holds sink tokens beside its window (captured steps need bounded sliding windows without sinks)")
        if self.keys is None or self.seen_tokens is None:
            raise ValueError("the cache holds no token yet (capture the decode steps after the prefill)")
        return tuple(getattr(self, name) for name in _STEP_SLOTS)

    def use_step_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Hold ``tensors`` (the shapes and dtypes of :meth:`step_tensors`, in its order) as keys, values,
        key mask, key indices and row counts: the static storage of a captured step."""
        current = self.step_tensors()
        if len(tensors) != len(current):
            raise ValueError(f"tensors must hold the {len(current)} tensors of step_tensors(), got {len(tensors)}")
        for position, (name, old, new) in enumerate(zip(_STEP_SLOTS, current, tensors)):
            if not isinstance(new, torch.Tensor) or new.shape != old.shape or new.dtype != old.dtype:
                raise ValueError(f"tensors[{position}] ({name}) must be a {describe(old)}, got {describe(new)}")
        for name, new in zip(_STEP_SLOTS, tensors):
            setattr(self, name, new)

    def count_decode_steps(self, steps: int) -> None:
        """``length`` grows by ``steps`` (a negative ``steps`` takes them back), and after a step forward the
        entries are in ring order, as :meth:`write_ring` leaves them."""
        check_int(steps, "steps")
        if self.length + steps < 0:
            raise ValueError(f"steps={steps} would take length={self.length} below 0")
        self.length += steps
        if steps > 0:
            self.in_ring_order = True


__all__ = ["RollingKVCache"]
