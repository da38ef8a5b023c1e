"""Rotary position embedding, half-rotation convention (as Qwen2 and the SpikingBrain release).

``rope(x)_i = x_i cos(p w_i) - x_{i + D/2} sin(p w_i)`` for the first half of the head dimension and
``x_i cos(p w_{i-D/2}) + x_{i-D/2} sin(p w_{i-D/2})`` for the second, ``w_i = theta^(-2i / D)``. Angles are
computed in float32 (float64 for float64 activations) and cast to the activation dtype, as released.
:func:`apply_rotary` is :func:`sb_kernels.apply_rotary` (one Triton pass on CUDA, PyTorch elsewhere).
"""

from __future__ import annotations

import torch

from sb_kernels.rotary import apply_rotary, rotate_half
from sb_neurons.validation import check_int, check_positive, check_tensor
from sb_neurons.spike import compute_dtype

__all__ = ["apply_rotary", "rotary_cos_sin", "rotate_half"]

_INVERSE_FREQUENCIES: dict[tuple, torch.Tensor] = {}


def _inverse_frequencies(head_dim: int, theta: float, compute: torch.dtype, device: torch.device) -> torch.Tensor:
    """``w_i = theta^(-2i / D)`` (``[D / 2]``), kept per shape, dtype and device: a decode step would
    otherwise spend four small kernels per layer recomputing them."""
    key = (head_dim, theta, compute, device)
    cached = _INVERSE_FREQUENCIES.get(key)
    if cached is not None:
        return cached
    with torch.inference_mode(False):  # a plain tensor, usable later with autograd on
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=compute, device=device) / head_dim))
    # One made inside a CUDA graph capture holds its values only when that graph replays: not kept.
    if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        _INVERSE_FREQUENCIES[key] = inv_freq
    return inv_freq


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[*positions.shape, head_dim]`` for integer ``positions``."""
    check_tensor(positions, "positions")
    check_int(head_dim, "head_dim", minimum=2)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
    check_positive(theta, "theta")
    compute = compute_dtype(dtype)
    angles = positions.to(compute).unsqueeze(-1) * _inverse_frequencies(head_dim, float(theta), compute, positions.device)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
