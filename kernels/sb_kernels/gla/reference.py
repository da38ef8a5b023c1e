"""Gated linear attention (GLA): the float references, in head-major ``[B, H, L, D]`` layout.

Per head, with a per-channel log decay ``g_t <= 0`` (``gk``), keys ``k_t``, values ``v_t``, queries ``q_t``:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          S: [Dk, Dv]
    o_t = (scale * q_t) S_t

Three forms compute the same outputs and final state: :func:`gla_recurrent` (token by token),
:func:`gla_chunked` (parallel within chunks, recurrent across them; pure PyTorch, any length and
chunk size) and flash-linear-attention's ``chunk_gla`` kernel (:func:`sb_kernels.gla_fla`, GPU,
optional). Feeding a sequence in pieces with the state carried gives the same outputs as one call. They
compute in float32, or float64 for float64 input (the precision the kernels are tested against).

Spike-coded linear attention: with q and k spike-coded per head vector (``q = v_th_q * c_q``), the
spiking form :func:`gla_event_driven` expands the counts into spike trains and runs the recurrence one
spike event at a time; it equals :func:`gla_recurrent` on ``v_th * counts`` because the recurrence is
linear in q and in k and every codec decodes exactly (``sum_tau w_tau s_tau = c``).
"""

from __future__ import annotations

import torch

from sb_neurons import Codec, get_codec
from sb_neurons.validation import check_float_tensor, check_int, check_positive, check_same_device, check_tensor, describe
from sb_neurons.spike import compute_dtype


def check_gla_inputs(q, k, v, gk, initial_state, scale=1.0, integer_qk=False) -> None:
    """The argument checks of the GLA forms: shapes ``[B, H, L, D]`` that agree, floating dtypes (q/k may hold integer counts when
    ``integer_qk``), a state ``[B, H, Dk, Dv]`` or None, and a finite ``scale > 0``."""
    for name, t in (("q", q), ("k", k), ("v", v), ("gk", gk)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-d tensor [B, H, L, D], got {describe(t)}")
        if not t.is_floating_point() and not (integer_qk and name in ("q", "k")):
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    check_positive(scale, "scale")
    check_same_device((("q", q), ("k", k), ("v", v), ("gk", gk), ("initial_state", initial_state)))
    if initial_state is not None:
        check_tensor(initial_state, "initial_state")
        if not initial_state.is_floating_point():
            raise TypeError(f"initial_state must be a floating tensor, got {initial_state.dtype}")
    if q.shape != k.shape or gk.shape != k.shape:
        raise ValueError(f"q, k and gk must share one shape [B, H, L, Dk]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(gk.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, L, Dv] with B, H, L of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    batch, heads, _, dk = q.shape
    expected = (batch, heads, dk, v.shape[-1])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(f"initial_state must have shape (B, H, Dk, Dv) = {expected}, got {tuple(initial_state.shape)}")


def _start_state(initial_state: torch.Tensor | None, shape: tuple[int, ...], compute: torch.dtype, device) -> torch.Tensor:
    """The recurrent state ``[B, H, Dk, Dv]`` a GLA form starts from, in its ``compute`` dtype (zeros if none)."""
    if initial_state is None:
        return torch.zeros(shape, dtype=compute, device=device)
    return initial_state.to(compute)


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token GLA. ``q, k, gk``: ``[B, H, L, Dk]``; ``v``: ``[B, H, L, Dv]``; state ``[B, H, Dk, Dv]``.

    Returns ``(o [B, H, L, Dv] in v.dtype, final_state [B, H, Dk, Dv] in float32/float64)``.
    """
    check_gla_inputs(q, k, v, gk, initial_state, scale)
    compute = compute_dtype(v.dtype)
    batch, heads, length, dk = q.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    q, k, v, gk = (t.to(compute) for t in (q, k, v, gk))
    outputs = []
    for t in range(length):
        state = state * gk[:, :, t].exp().unsqueeze(-1) + k[:, :, t].unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t] * scale, state))
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return o.to(v.dtype), state


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel GLA, equal to :func:`gla_recurrent` (same arguments, plus ``chunk_size >= 1``).

    Within a chunk, with inclusive cumulative log decays ``b_t = sum_{r <= t} g_r``:
    ``o_t = (scale q_t * exp(b_t)) S_0 + sum_{s <= t} (scale q_t . (k_s * exp(b_t - b_s))) v_s``. Decay
    differences ``b_t - b_s <= 0`` are exponentiated pairwise, so no term overflows however strong the
    decay (at the cost of a ``[chunk, chunk, Dk]`` intermediate).
    """
    check_gla_inputs(q, k, v, gk, initial_state, scale)
    check_int(chunk_size, "chunk_size", minimum=1)
    compute = compute_dtype(v.dtype)
    batch, heads, length, dk = q.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    q, k, v, gk = (t.to(compute) for t in (q, k, v, gk))
    outputs = []
    for start in range(0, length, chunk_size):
        qc, kc, vc = q[:, :, start : start + chunk_size] * scale, k[:, :, start : start + chunk_size], v[:, :, start : start + chunk_size]
        b = gk[:, :, start : start + chunk_size].cumsum(dim=2)  # [B, H, C, Dk]
        size = b.shape[2]
        # s <= t, built by comparison: Tensor.tril costs ~15 ms a call on some CPU builds of torch
        steps = torch.arange(size, device=q.device)
        causal = steps[:, None] >= steps[None, :]
        # decay[t, s] = exp(b_t - b_s) for s <= t (masked to 0 above the diagonal before exp)
        diff = (b.unsqueeze(3) - b.unsqueeze(2)).masked_fill(~causal[..., None], float("-inf"))
        scores = torch.einsum("bhtk,bhsk,bhtsk->bhts", qc, kc, diff.exp())
        inter = torch.einsum("bhtk,bhkv->bhtv", qc * b.exp(), state)
        outputs.append(inter + scores @ vc)
        total = b[:, :, -1]  # [B, H, Dk]
        carry = (total.unsqueeze(2) - b).exp() * kc  # k_s * exp(b_C - b_s)
        state = state * total.exp().unsqueeze(-1) + carry.transpose(-1, -2) @ vc
    o = torch.cat(outputs, dim=2) if outputs else v.new_zeros(v.shape, dtype=compute)
    return o.to(v.dtype), state


def gla_event_driven(
    q_counts: torch.Tensor,
    q_v_th: torch.Tensor,
    k_counts: torch.Tensor,
    k_v_th: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    codec: str | Codec = "bitwise_bidirectional",
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token GLA whose queries and keys arrive as spike trains (spike-coded linear attention).

    With ``s^q_tau``, ``s^k_tau`` the ``codec`` trains of the counts and ``w_tau`` its step weights:

        S_t = diag(exp(g_t)) S_{t-1} + k_v_th_t * sum_tau w_tau (s^k_{tau,t})^T v_t
        o_t = scale * q_v_th_t * sum_tau w_tau (s^q_{tau,t} S_t)

    Each spike writes (or reads) one row of the state: an add, no multiply by an activation.
    Identity: ``gla_event_driven(...) == gla_recurrent(q_v_th * q_counts, k_v_th * k_counts, v, gk, scale,
    initial_state)`` to float rounding (exact in integer arithmetic before the ``v_th`` scales).

    Args:
        q_counts: integer counts ``[B, H, L, Dk]`` (integer dtype or whole floats; non-negative for an
            unsigned codec, as ReLU/sigmoid feature maps give).
        q_v_th: thresholds ``[B, H, L, 1]`` (one per head vector).
        k_counts: integer counts ``[B, H, L, Dk]``.
        k_v_th: thresholds ``[B, H, L, 1]``.
        v: values ``[B, H, L, Dv]``.
        gk: log decays ``[B, H, L, Dk]``.
        scale: multiplies the queries (``head_dim ** -0.5``).
        codec: codec of the trains, one of :data:`sb_neurons.CODEC_NAMES`.
        initial_state: ``[B, H, Dk, Dv]`` or None.

    Returns:
        ``(o [B, H, L, Dv] in v.dtype, final_state [B, H, Dk, Dv] in float32/float64)``, as :func:`gla_recurrent`.
    """
    for name, counts in (("q_counts", q_counts), ("k_counts", k_counts)):
        if not isinstance(counts, torch.Tensor) or counts.ndim != 4:
            raise ValueError(f"{name} must be a 4-d tensor [B, H, L, Dk], got {getattr(counts, 'shape', type(counts))}")
    check_gla_inputs(q_counts, k_counts, v, gk, initial_state, scale, integer_qk=True)
    for name, v_th in (("q_v_th", q_v_th), ("k_v_th", k_v_th)):
        check_float_tensor(v_th, name, finite=False)  # NaN propagates, as in the float forms
        check_same_device(((name, v_th), ("v", v)))
        if tuple(v_th.shape) != tuple(q_counts.shape[:3]) + (1,):
            raise ValueError(f"{name} must have shape [B, H, L, 1] = {tuple(q_counts.shape[:3]) + (1,)}, got {tuple(v_th.shape)}")
    codec = get_codec(codec)
    compute = compute_dtype(v.dtype)
    q_train, k_train = codec.encode(q_counts), codec.encode(k_counts)  # [T, B, H, L, Dk] int8, validated
    q_weights = codec.step_weights(q_train.shape[0], dtype=compute, device=v.device)
    k_weights = codec.step_weights(k_train.shape[0], dtype=compute, device=v.device)
    batch, heads, length, dk = q_counts.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    v, gk, q_v_th, k_v_th = (t.to(compute) for t in (v, gk, q_v_th, k_v_th))
    outputs = []
    for t in range(length):
        written = torch.zeros_like(state)
        for tau in range(k_train.shape[0]):
            spikes = k_train[tau, :, :, t].to(compute)  # [B, H, Dk]: rows of the state this step writes
            written = written + k_weights[tau] * spikes.unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        state = state * gk[:, :, t].exp().unsqueeze(-1) + k_v_th[:, :, t].unsqueeze(-1) * written
        read = torch.zeros_like(v[:, :, t])
        for tau in range(q_train.shape[0]):
            spikes = q_train[tau, :, :, t].to(compute)  # rows of the state this step reads
            read = read + q_weights[tau] * torch.einsum("bhk,bhkv->bhv", spikes, state)
        outputs.append(scale * q_v_th[:, :, t] * read)
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return o.to(v.dtype), state


__all__ = ["check_gla_inputs", "gla_chunked", "gla_event_driven", "gla_recurrent"]
