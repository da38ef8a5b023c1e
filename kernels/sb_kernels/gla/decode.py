"""One token of gated linear attention (a decode step) in one kernel: feature map, log decay, grouped
key/value heads, state update and output.

Per query head ``h`` (key/value head ``kh = h // G``), with ``phi`` the feature map and the log decay
``gk = logsigmoid(+-g) / normalizer`` (``-g`` for SpikingBrain's gate tied to the key logits):

    S'[h] = diag(exp(gk[kh])) S[h] + phi(k[kh])^T v[kh],        o[h] = (scale * phi(q[h])) S'[h]

A masked token (``keep`` False) leaves the state as it was (``v = 0``, ``gk = 0``, as the layers do for
padding) and still reads it out. Identity: for one token this is :func:`sb_kernels.gla_recurrent` with
the same ``phi(q), phi(k), v, gk`` (:func:`gla_decode_step_reference` computes it that way).

Why a kernel: the chunked prefill path (fla's ``chunk_gla``) handles one token with its whole chain of
chunk kernels, after the layer has repeated the key/value heads, applied the feature maps and the decay
in separate kernels and made every input time-major: about 15 launches per GLA layer and token, each a
few microseconds for 2 MB of state. Here program ``(b * H + h, j)`` reads head ``h``'s ``[Dk, BLOCK_V]``
slice of the float32 state once, writes the new one and the output columns it owns. Forward only, no
host read (capturable in a CUDA graph); the state stays float32.

Non-finite inputs are not checked (no host read): NaN in any input, and Inf in ``q``, ``k``, ``v`` or
``state``, propagate by IEEE arithmetic into the output and the new state, on both paths (the kernel's
relu keeps NaN, as ``F.relu`` does). An infinite gate logit ``g`` is the gate's limit, not an error:
``logsigmoid(+inf) = 0`` keeps the state whole (decay 1) and ``logsigmoid(-inf) = -inf`` forgets it
(decay 0), both finite, on both paths (``-g`` with ``negate_gate``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sb_neurons.validation import check_positive, check_same_device, describe
from sb_neurons.spike import compute_dtype

from ..device import round_to, to_dtype
from ..dispatch import Backend, lazy_jit, needs_grad, resolve_forward_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

FEATURE_MAPS = ("relu", "sigmoid", "identity")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK_V = 32  # output columns per program: 4 programs per head at D = 128, so ~4 x H programs per token


def _feature(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    if feature_map == "relu":
        return F.relu(x)
    if feature_map == "sigmoid":
        return torch.sigmoid(x)
    return x


def gla_decode_step_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, state: torch.Tensor | None, *,
    scale: float, feature_map: str = "relu", negate_gate: bool = False, gate_normalizer: float = 1.0,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gla_decode_step` in PyTorch, in float32 (float64 when ``v`` is float64): same arguments, checked
    the same way (all tensors on one device)."""
    _check(q, k, v, g, state, scale, feature_map, gate_normalizer, keep)
    _check_devices(q, k, v, g, state, keep)
    compute = compute_dtype(v.dtype)
    groups = q.shape[1] // k.shape[1]
    qf = _feature(q.to(compute), feature_map)
    kf = _feature(k.to(compute), feature_map).repeat_interleave(groups, dim=1)
    vf = v.to(compute).repeat_interleave(groups, dim=1)
    gf = g.to(compute)
    gk = (F.logsigmoid(-gf if negate_gate else gf) / gate_normalizer).repeat_interleave(groups, dim=1)
    if keep is not None:
        row = keep.to(compute)[:, None, None]
        vf, gk = vf * row, gk * row
    if state is None:
        state = torch.zeros(*q.shape, v.shape[-1], dtype=compute, device=v.device)
    new_state = state.to(compute) * gk.exp()[..., None] + kf[..., None] * vf[..., None, :]
    out = torch.einsum("bhk,bhkv->bhv", qf * scale, new_state)
    return out.to(v.dtype), new_state


if triton is not None:

    @lazy_jit
    def _gla_decode_kernel(
        q_ptr, k_ptr, v_ptr, g_ptr, keep_ptr, state_ptr, new_state_ptr, o_ptr,
        heads, groups, dk, dv, scale, normalizer,
        q_sb, q_sh, k_sb, k_sh, v_sb, v_sh, g_sb, g_sh, o_sb, o_sh,
        FEATURE: tl.constexpr, NEGATE: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_STATE: tl.constexpr,
        BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        bh = tl.program_id(0)
        block = tl.program_id(1)
        b = (bh // heads).to(tl.int64)
        h = (bh % heads).to(tl.int64)
        kh = h // groups
        rows = tl.arange(0, BLOCK_K)
        cols = block * BLOCK_V + tl.arange(0, BLOCK_V)
        row_ok = rows < dk
        col_ok = cols < dv
        q = tl.load(q_ptr + b * q_sb + h * q_sh + rows, mask=row_ok, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + b * k_sb + kh * k_sh + rows, mask=row_ok, other=0.0).to(tl.float32)
        if FEATURE == 0:  # relu that keeps NaN, as F.relu does (tl.maximum(nan, 0) would give 0)
            q, k = tl.where(q < 0.0, 0.0, q), tl.where(k < 0.0, 0.0, k)
        elif FEATURE == 1:  # sigmoid(0) = 1/2: the rows past Dk must stay 0, or they would add up
            q = tl.where(row_ok, 1.0 / (1.0 + tl.exp(-q)), 0.0)
            k = tl.where(row_ok, 1.0 / (1.0 + tl.exp(-k)), 0.0)
        g = tl.load(g_ptr + b * g_sb + kh * g_sh + rows, mask=row_ok, other=0.0).to(tl.float32)
        if NEGATE:
            g = -g
        # logsigmoid(g) = min(g, 0) - log(1 + exp(-|g|)), without overflow for either sign.
        gk = (tl.minimum(g, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(g)))) / normalizer
        v = tl.load(v_ptr + b * v_sb + kh * v_sh + cols, mask=col_ok, other=0.0).to(tl.float32)
        if HAS_KEEP:
            kept = tl.load(keep_ptr + b) != 0
            v = tl.where(kept, v, 0.0)
            gk = tl.where(kept, gk, 0.0)
        tile = bh.to(tl.int64) * dk * dv + rows[:, None] * dv + cols[None, :]
        tile_ok = row_ok[:, None] & col_ok[None, :]
        update = k[:, None] * v[None, :]
        if HAS_STATE:
            s = tl.load(state_ptr + tile, mask=tile_ok, other=0.0)
            update += tl.exp(gk)[:, None] * s
        tl.store(new_state_ptr + tile, update, mask=tile_ok)
        out = tl.sum((q * scale)[:, None] * update, axis=0)
        dt = o_ptr.dtype.element_ty
        # Rounded to the output dtype here, so that the interpreter (which truncates) rounds as CUDA does.
        tl.store(o_ptr + b * o_sb + h * o_sh + cols, to_dtype(round_to(out, dt), dt), mask=col_ok)


def _check(q, k, v, g, state, scale, feature_map, gate_normalizer, keep) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point [B, heads, D] tensor, got {describe(t)}")
    batch, heads, dk = q.shape
    if k.shape[0] != batch or k.shape[2] != dk or g.shape != k.shape:
        raise ValueError(f"k and g must be [B, Hkv, Dk] matching q {tuple(q.shape)}, "
                         f"got {tuple(k.shape)}, {tuple(g.shape)}")
    if k.shape[1] == 0 or heads % k.shape[1]:
        raise ValueError(f"the key/value heads ({k.shape[1]}) must divide the query heads ({heads})")
    if v.shape[:2] != k.shape[:2] or v.shape[2] == 0:
        raise ValueError(f"v must be [B, Hkv, Dv] with B, Hkv of k {tuple(k.shape[:2])}, got {tuple(v.shape)}")
    if len({q.dtype, k.dtype, v.dtype, g.dtype}) != 1:
        raise ValueError(f"q, k, v and g must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}, {g.dtype}")
    if state is not None:
        expected = (batch, heads, dk, v.shape[2])
        if not isinstance(state, torch.Tensor) or tuple(state.shape) != expected or not state.is_floating_point():
            raise ValueError(f"state must be a floating-point tensor of shape (B, H, Dk, Dv) = {expected} "
                             f"(B, H, Dk of q, Dv of v), got {describe(state)}")
    check_positive(scale, "scale")
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    check_positive(gate_normalizer, "gate_normalizer")
    if keep is not None and (not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != (batch,)):
        raise ValueError(f"keep must be a bool tensor of shape ({batch},) or None, got {describe(keep)}")


def _check_devices(q, k, v, g, state, keep) -> None:
    check_same_device([("q", q), ("k", k), ("v", v), ("g", g), ("state", state), ("keep", keep)])


def gla_decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None,
    *,
    scale: float,
    feature_map: str = "relu",
    negate_gate: bool = False,
    gate_normalizer: float = 1.0,
    keep: torch.Tensor | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GLA token per row, from the projections' raw outputs (see the module docstring).

    Args:
        q: ``[B, H, Dk]`` query logits (before the feature map); the last dimension contiguous.
        k: ``[B, Hkv, Dk]`` key logits, ``Hkv`` dividing ``H`` (query head ``h`` uses ``h // (H // Hkv)``).
        v: ``[B, Hkv, Dv]`` values.
        g: ``[B, Hkv, Dk]`` gate logits: the log decay is ``logsigmoid(+-g) / gate_normalizer``.
        state: ``[B, H, Dk, Dv]`` the state before the token (float32 for the Triton kernel), or None
            (zeros).
        scale: multiplies the query (SpikingBrain: ``Dk ** -0.5``).
        feature_map: ``"relu"``, ``"sigmoid"`` or ``"identity"`` (inputs already mapped, e.g. spike-coded).
        negate_gate: use ``-g`` (SpikingBrain-7B's decay tied to the key: ``log(1 - sigmoid(k))``).
        gate_normalizer: divides the log decay (``> 0``).
        keep: bool ``[B]``, False for a padded token (the state passes through unchanged), or None.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`); the kernel is
            forward only and takes float16, bfloat16 or float32 inputs sharing one dtype.

    Returns:
        ``(o [B, H, Dv] in v.dtype, new_state [B, H, Dk, Dv])``: a new state tensor, float32 from the
        kernel (float64 from the reference for float64 input); ``state`` is not modified.
    """
    _check(q, k, v, g, state, scale, feature_map, gate_normalizer, keep)
    unsupported = None
    if state is not None and state.dtype != torch.float32:
        unsupported = f"it keeps the state in float32, got {state.dtype}"
    elif needs_grad(state):
        unsupported = "the Triton kernel is forward only and the state requires grad"
    chosen = resolve_forward_backend(
        backend, q, k, v, g, op="gla_decode_step", dtypes=TRITON_DTYPES, unsupported=unsupported,
        device_only=(state, keep),
    )
    if chosen == "torch":
        return gla_decode_step_reference(
            q, k, v, g, state, scale=scale, feature_map=feature_map, negate_gate=negate_gate,
            gate_normalizer=gate_normalizer, keep=keep,
        )
    _check_devices(q, k, v, g, state, keep)  # one CUDA device (resolve_forward_backend: all on CUDA)
    batch, heads, dk = q.shape
    dv = v.shape[2]
    q, k, v, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, g))
    if state is not None and not state.is_contiguous():
        state = state.contiguous()
    new_state = torch.empty(batch, heads, dk, dv, dtype=torch.float32, device=q.device)
    out = torch.empty(batch, heads, dv, dtype=v.dtype, device=q.device)
    flags = keep.contiguous().view(torch.uint8) if keep is not None else new_state  # any pointer when absent
    compiled = q.is_cuda
    _gla_decode_kernel[(batch * heads, triton.cdiv(dv, BLOCK_V))](
        q, k, v, g, flags, new_state if state is None else state, new_state, out,
        heads, heads // k.shape[1], dk, dv, float(scale), float(gate_normalizer),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), g.stride(0), g.stride(1),
        out.stride(0), out.stride(1),
        FEATURE=FEATURE_MAPS.index(feature_map), NEGATE=bool(negate_gate), HAS_KEEP=keep is not None,
        HAS_STATE=state is not None, BLOCK_K=max(16, triton.next_power_of_2(dk)), BLOCK_V=BLOCK_V,
        num_warps=4 if compiled else 1,
    )
    return out, new_state


__all__ = ["FEATURE_MAPS", "gla_decode_step", "gla_decode_step_reference"]
