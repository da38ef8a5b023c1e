"""Learnable attention-sink tokens (SpikingBrain-76B, facts section 5).

The 76B model prepends 128 learnable sink tokens to every sequence: every token attends them, and they
attend each other without a causal mask. :class:`SinkTokens` holds the learnable embeddings and
prepends them (at the model input, before the first layer); a :class:`~sb_layers.SlidingWindowAttention`
built with ``num_sinks=S`` treats the first S tokens of a stream's first call as those sinks (see its
docstring for the exact attention pattern), and :meth:`SinkTokens.strip` removes them from the output.
"""

from __future__ import annotations

import torch
from torch import nn

from sb_neurons.validation import check_int

from ._checks import check_attention_mask, check_hidden_states


class SinkTokens(nn.Module):
    """``num_sinks`` learnable embeddings ``weight [S, hidden_size]``, prepended to a sequence.

    Args:
        num_sinks: S >= 1 (128 in the 76B model).
        hidden_size: model width.
        init_std: standard deviation of the normal initialization.
    """

    def __init__(self, num_sinks: int, hidden_size: int, init_std: float = 0.02, device=None, dtype=None) -> None:
        super().__init__()
        self.num_sinks = check_int(num_sinks, "num_sinks", minimum=1)
        self.hidden_size = check_int(hidden_size, "hidden_size", minimum=1)
        self.weight = nn.Parameter(torch.randn(num_sinks, hidden_size, device=device, dtype=dtype) * init_std)

    def prepend(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, L, hidden] -> [B, S + L, hidden]`` with the sinks first; the mask gains S ones in front.

        Sinks go before any left padding, so a left-padded sample still starts with its sinks.
        """
        check_hidden_states(hidden_states, self.hidden_size)
        batch, length, _ = hidden_states.shape
        check_attention_mask(attention_mask, batch, length)
        sinks = self.weight.to(hidden_states.dtype).expand(batch, -1, -1)
        hidden_states = torch.cat([sinks, hidden_states], dim=1)
        if attention_mask is not None:
            ones = attention_mask.new_ones(batch, self.num_sinks)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
        return hidden_states, attention_mask

    def strip(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Drop the first S positions: ``[B, S + L, ...] -> [B, L, ...]``."""
        if hidden_states.ndim < 2 or hidden_states.shape[1] < self.num_sinks:
            raise ValueError(f"hidden_states must hold the {self.num_sinks} sinks along dim 1, got {tuple(hidden_states.shape)}")
        return hidden_states[:, self.num_sinks :]

    def extra_repr(self) -> str:
        return f"num_sinks={self.num_sinks}, hidden_size={self.hidden_size}"
