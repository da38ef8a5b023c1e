"""Gated linear attention on GPU through flash-linear-attention (``fla``, the ``gpu`` extra).

Convention (ours, and fla's): per head, with per-channel log decays ``gk <= 0``,

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,        o_t = (scale * q_t) S_t,        S: [Dk, Dv]

Layouts. Ours is head-major ``[B, H, L, D]`` (``sb_layers``' references ``gla_recurrent`` /
``gla_chunked``); fla's ``chunk_gla`` takes time-major ``[B, L, H, D]`` tensors, applies ``scale`` to
``q`` itself (``None`` means ``Dk ** -0.5``, so the scale is always passed explicitly here) and keeps the
state as ``[B, H, Dk, Dv]`` (``state_v_first=False``). This module only converts layouts and checks
arguments; the computation is fla's.
"""

from __future__ import annotations

import math

import torch

from sb_neurons.validation import check_float_tensor


def fla_available() -> bool:
    """Whether ``fla.ops.gla.chunk_gla`` can be imported."""
    try:
        from fla.ops.gla import chunk_gla  # noqa: F401
    except ImportError:
        return False
    return True


def _check(q, k, v, gk, scale, initial_state) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("gk", gk)):
        check_float_tensor(t, name, finite=False)
        if t.ndim != 4:
            raise ValueError(f"{name} must be 4-d [B, H, L, D], got shape {tuple(t.shape)}")
    if q.shape != k.shape or gk.shape != k.shape:
        raise ValueError(f"q, k and gk must share one shape [B, H, L, Dk]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(gk.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, L, Dv] with B, H, L of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    if initial_state is not None:
        expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
        check_float_tensor(initial_state, "initial_state", finite=False)
        if tuple(initial_state.shape) != expected:
            raise ValueError(f"initial_state must have shape (B, H, Dk, Dv) = {expected}, got {tuple(initial_state.shape)}")
    if not all(t.is_cuda for t in (q, k, v, gk)):
        raise RuntimeError("gla_fla runs fla's Triton kernels and needs CUDA tensors; use sb_layers.gla_chunked on CPU")


def gla_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's ``chunk_gla`` in our ``[B, H, L, D]`` layout.

    Args:
        q: ``[B, H, L, Dk]``, CUDA.
        k: ``[B, H, L, Dk]``.
        v: ``[B, H, L, Dv]``.
        gk: ``[B, H, L, Dk]``, the natural-log decay (``<= 0``).
        scale: multiplies ``q`` (SpikingBrain: ``Dk ** -0.5``).
        initial_state: ``[B, H, Dk, Dv]`` or None (zeros).
        output_final_state: also return the state after the last token.

    Returns:
        ``(o [B, H, L, Dv] in v.dtype, final_state [B, H, Dk, Dv] float32 or None)``.
        Differentiable through fla's backward kernels.
    """
    _check(q, k, v, gk, scale, initial_state)
    try:
        from fla.ops.gla import chunk_gla
    except ImportError as err:
        raise RuntimeError("gla_fla needs flash-linear-attention: pip install 'spikingbrain[gpu]'") from err
    time_major = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731  [B, H, L, D] -> [B, L, H, D]
    o, final_state = chunk_gla(
        time_major(q), time_major(k), time_major(v), time_major(gk),
        scale=float(scale),
        initial_state=None if initial_state is None else initial_state.float().contiguous(),
        output_final_state=bool(output_final_state),
    )
    return o.transpose(1, 2).to(v.dtype), final_state


__all__ = ["fla_available", "gla_fla"]
