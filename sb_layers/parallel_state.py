"""ParallelState: the streaming state of one intra-layer hybrid layer (:class:`sb_layers.ParallelMixer`),
the pair of its linear attention's :class:`sb_layers.GLAState` and its softmax attention's
:class:`sb_layers.RollingKVCache`.

It is a cache entry of :mod:`sb_layers.mixer_cache` (and a capturable one) that answers for its two parts
by asking each of them. The mixer never changes a ParallelState: every call returns a new pair (holding
the new GLA state and the window it updated), which replaces the old entry in the cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from sb_neurons.validation import check_int

from .gla_state import GLAState
from .kv_cache import RollingKVCache
from .mixer_cache import check_batch_index


@dataclass(eq=False)
class ParallelState:
    """The entry of one :class:`sb_layers.ParallelMixer` in a :class:`sb_layers.MixerCache`.

    Args:
        linear: the linear attention's state (``recurrent [B, H, Dk, Dv]``), or None before its first call.
        softmax: the softmax attention's window (keys and values ``[B, Hkv, n, D]``, sinks), or None before
            its first call.
    """

    linear: GLAState | None = None
    softmax: RollingKVCache | None = None

    def __post_init__(self) -> None:
        if self.linear is not None and not isinstance(self.linear, GLAState):
            raise TypeError(f"linear must be a GLAState or None, got {type(self.linear).__name__}")
        if self.softmax is not None and not isinstance(self.softmax, RollingKVCache):
            raise TypeError(f"softmax must be a RollingKVCache or None, got {type(self.softmax).__name__}")

    def _parts(self) -> tuple[GLAState | RollingKVCache, ...]:
        return tuple(part for part in (self.linear, self.softmax) if part is not None)

    # --- the cache-entry protocol (sb_layers.mixer_cache.CacheEntry) ----------------------------------

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor of both parts."""
        for part in self._parts():
            yield from part.tensors()

    def select_batch(self, index: torch.Tensor) -> ParallelState:
        """A new pair of batch rows ``index`` (``[n]`` int64; kept and reordered), each part selected by itself."""
        check_batch_index(index)
        return ParallelState(
            linear=None if self.linear is None else self.linear.select_batch(index),
            softmax=None if self.softmax is None else self.softmax.select_batch(index),
        )

    def fill_windows(self) -> None:
        """Each part's :meth:`~sb_layers.mixer_cache.CacheEntry.fill_windows` (the window's; the GLA state's shape is fixed)."""
        for part in self._parts():
            part.fill_windows()

    # --- captured decode steps (sb_layers.mixer_cache.CapturableEntry) ---------------------------------

    def step_tensors(self) -> tuple[torch.Tensor, ...]:
        """The linear part's step tensors, then the softmax part's. Raises ``ValueError`` before both parts
        exist, or as the window does (an unbounded window or sinks grow or keep extra entries)."""
        if self.linear is None or self.softmax is None:
            raise ValueError("the parallel mixer has not run yet: its pair holds no state to capture")
        return self.linear.step_tensors() + self.softmax.step_tensors()

    def use_step_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Hold ``tensors`` (in the order of :meth:`step_tensors`): the first ones go to the linear part, the
        rest to the softmax part."""
        expected = len(self.step_tensors())
        if len(tensors) != expected:
            raise ValueError(f"tensors must hold the {expected} tensors of step_tensors(), got {len(tensors)}")
        split = len(self.linear.step_tensors())
        self.linear.use_step_tensors(tensors[:split])
        self.softmax.use_step_tensors(tensors[split:])

    def count_decode_steps(self, steps: int) -> None:
        """Each part's count of ``steps`` decode steps."""
        check_int(steps, "steps")
        for part in self._parts():
            part.count_decode_steps(steps)


__all__ = ["ParallelState"]
