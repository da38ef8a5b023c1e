"""Hybrid blocks: pre-norm residual blocks around a token mixer and a feed-forward part.

- Inter-layer hybrid (SpikingBrain-7B): each :class:`HybridBlock` holds one mixer, a
  :class:`GatedLinearAttention` or a :class:`SlidingWindowAttention`, alternating over depth.
- Intra-layer parallel hybrid (SpikingBrain-76B): :class:`ParallelMixer` runs linear attention beside
  sliding-window (or full) attention on the same input, normalizes each output, and sums them.

Block: ``h = x + mixer(attn_norm(x))``; ``out = h + mlp(mlp_norm(h))`` (release names ``attn_norm``,
``attn``, ``mlp_norm``, ``mlp``). Every mixer and block follows one protocol,
``forward(hidden_states, attention_mask, cache) -> hidden_states`` (:mod:`sb_layers.mixer_cache`): the
streaming state of each layer (a :class:`GLAState`, a :class:`RollingKVCache`, or a :class:`ParallelState`
pair of the two for a parallel mixer) lives in one :class:`MixerCache`, at the mixer's ``layer_idx``.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_hidden_states
from .linear_attention import GatedLinearAttention
from .kv_cache import RollingKVCache
from .mixer_cache import MixerCache, check_cache, check_layer_idx, check_mixer, mix_on_cache
from .parallel_state import ParallelState
from .rms_norm import RMSNorm
from .sliding_window import SlidingWindowAttention


class ParallelMixer(nn.Module):
    """``norm_linear(linear_attn(x)) + norm_softmax(softmax_attn(x))`` (the 76B intra-layer hybrid).

    ``softmax_attn`` is a :class:`SlidingWindowAttention` (``window=None`` for the full-attention layers).
    In a :class:`MixerCache` its entry ``layer_idx`` is a :class:`ParallelState`: ``linear`` (the linear
    attention's :class:`GLAState`) and ``softmax`` (the softmax attention's :class:`RollingKVCache`), which
    each call replaces by a new pair. ``layer_idx`` (default: the linear attention's) is set on both mixers.
    """

    def __init__(
        self, linear_attn: GatedLinearAttention, softmax_attn: SlidingWindowAttention, norm_eps: float = 1e-6,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(linear_attn, GatedLinearAttention):
            raise TypeError(f"linear_attn must be a GatedLinearAttention, got {type(linear_attn).__name__}")
        if not isinstance(softmax_attn, SlidingWindowAttention):
            raise TypeError(f"softmax_attn must be a SlidingWindowAttention, got {type(softmax_attn).__name__}")
        if linear_attn.hidden_size != softmax_attn.hidden_size:
            raise ValueError("linear_attn and softmax_attn must share hidden_size")
        ref = linear_attn.o_proj.weight
        self.linear_attn, self.softmax_attn = linear_attn, softmax_attn
        self.hidden_size = linear_attn.hidden_size
        self.linear_norm = RMSNorm(linear_attn.hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)
        self.softmax_norm = RMSNorm(linear_attn.hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)
        self.layer_idx = linear_attn.layer_idx if layer_idx is None else layer_idx

    @property
    def layer_idx(self) -> int:
        return self.linear_attn.layer_idx

    @layer_idx.setter
    def layer_idx(self, value: int) -> None:
        self.linear_attn.layer_idx = self.softmax_attn.layer_idx = check_layer_idx(value)

    def forward(self, hidden_states, attention_mask=None, cache: MixerCache | None = None):
        """``output [B, L, hidden]``; the :class:`ParallelState` at entry ``layer_idx`` of ``cache`` is read and
        replaced by the new pair (None: a zero state, nothing kept)."""
        return mix_on_cache(self, hidden_states, attention_mask, cache)

    def _mix(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, state: ParallelState | None,
    ) -> tuple[torch.Tensor, ParallelState]:
        """The mixer as a function of its state: ``(output, a new ParallelState)``, each part from its mixer."""
        if state is not None and not isinstance(state, ParallelState):
            raise TypeError(f"the cache entry of parallel layer {self.layer_idx} must be a ParallelState, got {type(state).__name__}")
        linear_out, linear_state = self.linear_attn._mix(hidden_states, attention_mask, None if state is None else state.linear)
        softmax_out, window = self.softmax_attn._mix(hidden_states, attention_mask, None if state is None else state.softmax)
        out = self.linear_norm(linear_out) + self.softmax_norm(softmax_out)
        return out, ParallelState(linear=linear_state, softmax=window)


class HybridBlock(nn.Module):
    """Pre-norm residual block: ``attn_norm``, ``attn`` (the mixer), ``mlp_norm``, ``mlp``.

    ``forward(hidden_states [B, L, hidden], attention_mask, cache) -> output [B, L, hidden]`` (the mixer
    protocol, :mod:`sb_layers.mixer_cache`): the mixer reads and updates its entry ``layer_idx`` of the
    :class:`MixerCache` ``cache``. The mixer is any module that follows that protocol (an int
    ``hidden_size`` and ``layer_idx``, ``forward(hidden_states, attention_mask, cache)``; checked by
    :func:`sb_layers.mixer_cache.check_mixer`), not only this package's :class:`GatedLinearAttention`,
    :class:`SlidingWindowAttention` and :class:`ParallelMixer`. The MLP may be a :class:`GLUMLP` or a :class:`MoE` (any module mapping
    ``[..., hidden]`` to itself). ``cache=None``: the mixer starts from a zero state and keeps nothing.
    """

    def __init__(self, hidden_size: int, mixer: nn.Module, mlp: nn.Module, norm_eps: float = 1e-6) -> None:
        super().__init__()
        check_mixer(mixer)
        if mixer.hidden_size != hidden_size:
            raise ValueError(f"hidden_size={hidden_size} differs from the mixer's hidden_size={mixer.hidden_size}")
        ref = next(mixer.parameters(), None)
        factory = {} if ref is None else dict(device=ref.device, dtype=ref.dtype)
        self.attn_norm = RMSNorm(hidden_size, norm_eps, **factory)
        self.attn = mixer
        self.mlp_norm = RMSNorm(hidden_size, norm_eps, **factory)
        self.mlp = mlp

    @property
    def layer_idx(self) -> int:
        """The mixer's ``layer_idx`` (its entry in a :class:`MixerCache`)."""
        return self.attn.layer_idx

    def forward(self, hidden_states, attention_mask=None, cache: MixerCache | None = None):
        check_cache(type(self).__name__, cache)
        check_hidden_states(hidden_states, self.attn_norm.weight.shape[0])
        return self._feed_forward(self.attn(self.attn_norm(hidden_states), attention_mask, cache), hidden_states)

    def _feed_forward(self, mixed: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        normed, hidden_states = self.mlp_norm.add_forward(mixed, hidden_states)  # hidden_states + mixed, normed
        return hidden_states + self.mlp(normed)


__all__ = ["HybridBlock", "MixerCache", "ParallelMixer", "RollingKVCache"]
