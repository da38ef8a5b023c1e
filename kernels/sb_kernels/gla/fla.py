"""Gated linear attention on GPU through flash-linear-attention (``fla``, the ``gpu`` extra).

Convention (ours, and fla's): per head, with per-channel log decays ``gk <= 0``,

    S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t,        o_t = (scale * q_t) S_t,        S: [Dk, Dv]

Layouts. Ours is head-major ``[B, H, L, D]`` (the references :func:`sb_kernels.gla_recurrent` /
:func:`sb_kernels.gla_chunked`); fla's kernels take time-major ``[B, L, H, D]`` tensors, apply ``scale``
to ``q`` themselves (``None`` means ``Dk ** -0.5``, so the scale is always passed explicitly here) and
keep the state as ``[B, H, Dk, Dv]`` (``state_v_first=False``). This module only converts layouts and
checks arguments (the references' :func:`~sb_kernels.gla.reference.check_gla_inputs`, then CUDA); the
computation is fla's: ``fused_recurrent_gla`` for one token (decoding), ``chunk_gla`` otherwise. fla is
imported when a call runs, never at module import.
"""

from __future__ import annotations

import functools
import inspect

import torch

from .reference import check_gla_inputs


@functools.cache
def fla_available() -> bool:
    """Whether flash-linear-attention's GLA kernels (``fla.ops.gla.chunk_gla`` and ``fused_recurrent_gla``)
    can be imported (cached: ``GatedLinearAttention(mode="auto")`` asks on every CUDA forward)."""
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla  # noqa: F401
    except ImportError:
        return False
    return True


def gla_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """flash-linear-attention's GLA kernels in our ``[B, H, L, D]`` layout (CUDA).

    Same function as :func:`sb_kernels.gla_recurrent`: ``fused_recurrent_gla`` for a single token
    (decoding), ``chunk_gla`` otherwise.

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

    Raises ``RuntimeError`` when the tensors are not on CUDA or fla is not installed (the argument
    checks run first).
    """
    check_gla_inputs(q, k, v, gk, initial_state, scale)
    if not all(t.is_cuda for t in (q, k, v, gk)):
        raise RuntimeError("gla_fla runs fla's Triton kernels and needs CUDA tensors; use sb_kernels.gla_chunked on CPU")
    if not fla_available():
        raise RuntimeError("gla_fla needs flash-linear-attention (package 'fla'): pip install 'spikingbrain[gpu]'")
    from fla.ops.gla import chunk_gla, fused_recurrent_gla

    kernel = fused_recurrent_gla if q.shape[2] == 1 else chunk_gla
    gate_name = "gk" if kernel is fused_recurrent_gla else "g"
    layout = {}
    if "head_first" in inspect.signature(kernel).parameters:
        layout["head_first"] = False  # older fla releases default to [B, H, L, D]; say which we pass
    time_major = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731  [B, H, L, D] -> [B, L, H, D]
    o, final_state = kernel(
        time_major(q), time_major(k), time_major(v),
        **{gate_name: time_major(gk)},
        scale=float(scale),
        initial_state=None if initial_state is None else initial_state.float().contiguous(),
        output_final_state=bool(output_final_state),
        **layout,
    )
    return o.transpose(1, 2).to(v.dtype), final_state


__all__ = ["fla_available", "gla_fla"]
