"""Rotary position embedding, half-rotation convention (as Qwen2 and the SpikingBrain release).

``rope(x)_i = x_i cos(p w_i) - x_{i + D/2} sin(p w_i)`` for the first half of the head dimension and
``x_i cos(p w_{i-D/2}) + x_{i-D/2} sin(p w_{i-D/2})`` for the second, ``w_i = theta^(-2i / D)``. Angles are
computed in float32 (float64 for float64 activations) and cast to the activation dtype, as released.
:func:`apply_rotary` is :func:`sb_kernels.apply_rotary` (one Triton pass on CUDA, PyTorch elsewhere).
"""

from __future__ import annotations

import torch

from sb_kernels.rotary import apply_rotary, rotate_half

__all__ = ["apply_rotary", "rotary_cos_sin", "rotate_half"]


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos, sin`` of shape ``[*positions.shape, head_dim]`` for integer ``positions``."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
    if not theta > 0:
        raise ValueError(f"rope_theta must be > 0, got {theta}")
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=compute, device=positions.device) / head_dim))
    angles = positions.to(compute).unsqueeze(-1) * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)
