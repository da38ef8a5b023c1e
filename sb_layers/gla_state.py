"""GLAState: the streaming state of one gated-linear-attention layer (its recurrent state ``S``).

It is a cache entry of :mod:`sb_layers.mixer_cache` (and a capturable one): it owns its tensor, its batch
selection and its (trivially fixed) shapes. The layer, :class:`sb_layers.GatedLinearAttention`, never
changes a GLAState: every call returns a new one, which replaces the old entry in the cache. An entry
saved before a call therefore still holds the state that call started from, which is what the model's
gradient checkpointing replays from (``_from_state`` in :mod:`sb_layers.models.spikingbrain.modeling`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from sb_neurons.validation import check_float_tensor, check_int, describe

from .mixer_cache import check_batch_index


def _check_recurrent(recurrent: object, name: str) -> torch.Tensor:
    # No finiteness check: a state is held per layer and decode step, and reading it back would wait for
    # the device (and break a CUDA graph capture); the layer's math propagates a NaN visibly instead.
    check_float_tensor(recurrent, name, finite=False)
    if recurrent.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions [B, H, Dk, Dv], got {describe(recurrent)}")
    return recurrent


@dataclass(eq=False)
class GLAState:
    """The recurrent state of one GLA layer, constant in size whatever the sequence length.

    Args:
        recurrent: ``S`` of every row and head, ``[B, H, Dk, Dv]``, a floating tensor; the layer keeps it
            in its compute dtype (float32, or float64 for a float64 layer), whatever the activations' dtype.

    Identity (what the layer guarantees): feeding a sequence in pieces, each call starting from the
    GLAState the previous one returned, gives the outputs and final state of one call on the whole.
    """

    recurrent: torch.Tensor

    def __post_init__(self) -> None:
        _check_recurrent(self.recurrent, "recurrent")

    def __repr__(self) -> str:
        return f"GLAState(recurrent={describe(self.recurrent)})"

    # --- the cache-entry protocol (sb_layers.mixer_cache.CacheEntry) ----------------------------------

    def tensors(self) -> Iterator[torch.Tensor]:
        """The state tensor."""
        yield self.recurrent

    def select_batch(self, index: torch.Tensor) -> GLAState:
        """A new state of batch rows ``index`` (``[n]`` int64; kept and reordered): ``recurrent[index]``."""
        check_batch_index(index)
        return GLAState(self.recurrent.index_select(0, index.to(self.recurrent.device)))

    def fill_windows(self) -> None:
        """Nothing: a GLA state has the same shape at every step."""

    # --- captured decode steps (sb_layers.mixer_cache.CapturableEntry) ---------------------------------

    def step_tensors(self) -> tuple[torch.Tensor, ...]:
        """``(recurrent,)``: the one tensor a decode step reads (and replaces by a new GLAState)."""
        return (self.recurrent,)

    def use_step_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        """Hold ``tensors[0]`` (the shape and dtype of ``recurrent``) as the state: the static storage of a
        captured step (:class:`sb_layers.models.spikingbrain.GraphedDecoder` owns the cache then)."""
        if len(tensors) != 1:
            raise ValueError(f"tensors must hold the 1 tensor of step_tensors(), got {len(tensors)}")
        recurrent = _check_recurrent(tensors[0], "tensors[0]")
        if recurrent.shape != self.recurrent.shape or recurrent.dtype != self.recurrent.dtype:
            raise ValueError(f"tensors[0] must be a {describe(self.recurrent)} (the state it replaces), got {describe(recurrent)}")
        self.recurrent = recurrent

    def count_decode_steps(self, steps: int) -> None:
        """Nothing to count: the state is all tensor (``steps`` is checked)."""
        check_int(steps, "steps")


__all__ = ["GLAState"]
