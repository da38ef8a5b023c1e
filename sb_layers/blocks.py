"""Hybrid blocks: pre-norm residual blocks around a token mixer and a feed-forward part.

- Inter-layer hybrid (SpikingBrain-7B): each :class:`HybridBlock` holds one mixer, a
  :class:`GatedLinearAttention` or a :class:`SlidingWindowAttention`, alternating over depth.
- Intra-layer parallel hybrid (SpikingBrain-76B): :class:`ParallelMixer` runs linear attention beside
  sliding-window (or full) attention on the same input, normalizes each output, and sums them.

Block: ``h = x + mixer(attn_norm(x))``; ``out = h + mlp(mlp_norm(h))`` (release names ``attn_norm``,
``attn``, ``mlp_norm``, ``mlp``). The mixer's streaming state passes through unchanged in kind: a GLA
state tensor, a :class:`RollingKVCache`, or a ``(gla_state, kv_cache)`` pair for a parallel mixer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._checks import check_hidden_states
from .linear_attention import GatedLinearAttention
from .rms_norm import RMSNorm
from .sliding_window import RollingKVCache, SlidingWindowAttention

MixerState = Any  # torch.Tensor | RollingKVCache | tuple[torch.Tensor | None, RollingKVCache | None] | None


def run_mixer(mixer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, state: MixerState):
    """Call any of this package's mixers with its own kind of state; returns ``(output, new_state)``."""
    if isinstance(mixer, GatedLinearAttention):
        return mixer(hidden_states, attention_mask=attention_mask, state=state)
    if isinstance(mixer, SlidingWindowAttention):
        return mixer(hidden_states, attention_mask=attention_mask, cache=state)
    if isinstance(mixer, ParallelMixer):
        return mixer(hidden_states, attention_mask=attention_mask, state=state)
    raise TypeError(f"unsupported mixer {type(mixer).__name__}")


class ParallelMixer(nn.Module):
    """``norm_linear(linear_attn(x)) + norm_softmax(softmax_attn(x))`` (the 76B intra-layer hybrid).

    ``softmax_attn`` is a :class:`SlidingWindowAttention` (``window=None`` for the full-attention layers).
    State: ``(gla_state, kv_cache)``.
    """

    def __init__(self, linear_attn: GatedLinearAttention, softmax_attn: SlidingWindowAttention, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(linear_attn, GatedLinearAttention):
            raise TypeError(f"linear_attn must be a GatedLinearAttention, got {type(linear_attn).__name__}")
        if not isinstance(softmax_attn, SlidingWindowAttention):
            raise TypeError(f"softmax_attn must be a SlidingWindowAttention, got {type(softmax_attn).__name__}")
        if linear_attn.hidden_size != softmax_attn.hidden_size:
            raise ValueError("linear_attn and softmax_attn must share hidden_size")
        ref = linear_attn.o_proj.weight
        self.linear_attn, self.softmax_attn = linear_attn, softmax_attn
        self.linear_norm = RMSNorm(linear_attn.hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)
        self.softmax_norm = RMSNorm(linear_attn.hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)

    def forward(self, hidden_states, attention_mask=None, state=None):
        gla_state, kv_cache = (None, None) if state is None else state
        linear_out, gla_state = self.linear_attn(hidden_states, attention_mask=attention_mask, state=gla_state)
        softmax_out, kv_cache = self.softmax_attn(hidden_states, attention_mask=attention_mask, cache=kv_cache)
        return self.linear_norm(linear_out) + self.softmax_norm(softmax_out), (gla_state, kv_cache)


class HybridBlock(nn.Module):
    """Pre-norm residual block: ``attn_norm``, ``attn`` (the mixer), ``mlp_norm``, ``mlp``.

    ``forward(hidden_states [B, L, hidden], attention_mask, state) -> (output [B, L, hidden], new_state)``.
    The MLP may be a :class:`GLUMLP` or a :class:`MoE` (any module mapping ``[..., hidden]`` to itself).
    """

    def __init__(self, hidden_size: int, mixer: nn.Module, mlp: nn.Module, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if not isinstance(mixer, (GatedLinearAttention, SlidingWindowAttention, ParallelMixer)):
            raise TypeError(f"mixer must be a GatedLinearAttention, SlidingWindowAttention or ParallelMixer, got {type(mixer).__name__}")
        mixer_width = mixer.linear_attn.hidden_size if isinstance(mixer, ParallelMixer) else mixer.hidden_size
        if mixer_width != hidden_size:
            raise ValueError(f"hidden_size={hidden_size} differs from the mixer's hidden_size={mixer_width}")
        ref = next(mixer.parameters())
        self.attn_norm = RMSNorm(hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)
        self.attn = mixer
        self.mlp_norm = RMSNorm(hidden_size, norm_eps, device=ref.device, dtype=ref.dtype)
        self.mlp = mlp

    def forward(self, hidden_states, attention_mask=None, state: MixerState = None):
        check_hidden_states(hidden_states, self.attn_norm.weight.shape[0])
        mixed, state = run_mixer(self.attn, self.attn_norm(hidden_states), attention_mask, state)
        normed, hidden_states = self.mlp_norm.add_forward(mixed, hidden_states)  # hidden_states + mixed, normed
        return hidden_states + self.mlp(normed), state


__all__ = ["HybridBlock", "ParallelMixer", "RollingKVCache", "run_mixer"]
