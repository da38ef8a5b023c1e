"""Argument checks shared by the layers of :mod:`sb_layers` (on top of :mod:`sb_neurons.validation`)."""

from __future__ import annotations

import torch

from sb_neurons.validation import check_int, check_tensor


def check_head_layout(hidden_size: int, num_heads: int, num_kv_heads: int | None, head_dim: int | None) -> tuple[int, int]:
    """Validate an attention layer's head layout; returns ``(num_kv_heads, head_dim)`` with defaults filled.

    ``num_kv_heads`` defaults to ``num_heads`` and must divide it (grouped-query attention);
    ``head_dim`` defaults to ``hidden_size / num_heads``, which must then be an integer.
    """
    check_int(hidden_size, "hidden_size", minimum=1)
    check_int(num_heads, "num_heads", minimum=1)
    num_kv_heads = num_heads if num_kv_heads is None else check_int(num_kv_heads, "num_kv_heads", minimum=1)
    if num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
    if head_dim is None:
        if hidden_size % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size} (or give head_dim)")
        head_dim = hidden_size // num_heads
    check_int(head_dim, "head_dim", minimum=1)
    return num_kv_heads, head_dim


def check_attention_mask(attention_mask: object, batch: int, length: int) -> None:
    """``attention_mask`` must be None or a ``[B, L]`` tensor of zeros and ones (bool, int or float)."""
    if attention_mask is None:
        return
    mask = check_tensor(attention_mask, "attention_mask")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have shape (B, L) = {(batch, length)}, got {tuple(mask.shape)}")
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")


def check_hidden_states(hidden_states: object, hidden_size: int) -> torch.Tensor:
    """``hidden_states`` must be a floating ``[B, L, hidden_size]`` tensor."""
    x = check_tensor(hidden_states, "hidden_states")
    if not x.is_floating_point():
        raise TypeError(f"hidden_states must be a floating tensor, got {x.dtype}")
    if x.ndim != 3 or x.shape[-1] != hidden_size:
        raise ValueError(f"hidden_states must be [B, L, {hidden_size}], got {tuple(x.shape)}")
    return x
