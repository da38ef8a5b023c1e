"""One-query softmax attention with grouped key/value heads, split over the keys (a decode step).

    out[b, h] = sum_j softmax_j(scale * q[b, h] . k[b, h // G, j]) v[b, h // G, j]   over the allowed j

``G = H // Hkv`` query heads share each key/value head. Identity: equal to masked softmax attention
with the keys and values repeated per group (:func:`decode_attention_reference`), to float rounding.

Why a kernel: a decode step attends one query per head over a whole window (4,096 keys in
SpikingBrain-7B). PyTorch's SDPA either repeats the window per query head (a copy of ``G`` times the
window per layer and step) or, with the query heads folded into query rows, runs one thread block per
key/value head: 4 blocks for 4 heads, 82 us per layer on an H100 for 8 MB of keys and values. Here the
keys are cut into slices (flash-decoding): program ``(b * Hkv + kh, s)`` holds the ``G`` query heads of
key/value head ``kh`` as the rows of one tile, runs an online softmax over its slice (``tl.dot`` for the
scores and for the values, float32 accumulation) and writes a float32 partial output and its
log-sum-exp; a second kernel (one program per query head) merges the slices with weights ``exp(lse_s - logsumexp_s lse_s)`` (a
slice without an allowed key has ``lse = -inf``, weight 0). Forward only, no host read: a step that
uses it can be captured in a CUDA graph. As with SDPA, a row needs at least one allowed key (else NaN).
"""

from __future__ import annotations

import torch

from sb_neurons.validation import check_same_device
from sb_neurons.spike import compute_dtype

from .device import round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend, sm_count

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK_N = 128  # keys per step of a program
MERGE_CHUNK = 32  # slices the merge kernel reads per load
PROGRAMS_PER_SM = 2  # the key slices give about this many programs per SM
INTERPRETER_SMS = 4  # stands in for the SM count under Triton's CPU interpreter


def decode_attention_reference(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Masked softmax attention of one query per head over keys repeated per group, in float32 (float64
    for float64 ``q``); arguments as :func:`decode_attention` (checked the same way, all on one device).
    Returns ``[B, H, 1, D]`` in ``q.dtype``."""
    _check(q, keys, values, allowed, scale)
    check_same_device([("q", q), ("keys", keys), ("values", values), ("allowed", allowed)])
    compute = compute_dtype(q.dtype)
    groups = q.shape[1] // keys.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k = keys.to(compute).repeat_interleave(groups, dim=1)
    v = values.to(compute).repeat_interleave(groups, dim=1)
    scores = (q.to(compute) @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed.reshape(allowed.shape[0], 1, 1, -1), float("-inf"))
    return (scores.softmax(dim=-1) @ v).to(q.dtype)


if triton is not None:

    @lazy_jit
    def _decode_attention_split_kernel(
        q_ptr, k_ptr, v_ptr, allowed_ptr, o_ptr, lse_ptr,
        kv_heads, keys_len, keys_per_split, dim, scale,
        q_sb, q_sh, k_sb, k_sh, k_sn, v_sb, v_sh, v_sn, a_sb,
        GROUPS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
        IEEE: tl.constexpr, UPCAST: tl.constexpr,
    ):
        bh = tl.program_id(0)
        split = tl.program_id(1)
        splits = tl.num_programs(1)
        b = (bh // kv_heads).to(tl.int64)
        kh = (bh % kv_heads).to(tl.int64)
        rows = tl.arange(0, BLOCK_G)
        cols = tl.arange(0, BLOCK_D)
        row_ok = rows < GROUPS
        col_ok = cols < dim
        q = tl.load(q_ptr + b * q_sb + (kh * GROUPS + rows)[:, None] * q_sh + cols[None, :],
                    mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:  # Triton's interpreter multiplies half-precision tiles wrongly: float32 there
            q = q.to(tl.float32)
        precision: tl.constexpr = "ieee" if IEEE else "tf32"
        start = split * keys_per_split
        end = tl.minimum(start + keys_per_split, keys_len)
        m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        k_base = k_ptr + b * k_sb + kh * k_sh
        v_base = v_ptr + b * v_sb + kh * v_sh
        for n0 in range(start, end, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            in_slice = n < end
            tile_ok = in_slice[:, None] & col_ok[None, :]
            k = tl.load(k_base + n.to(tl.int64)[:, None] * k_sn + cols[None, :], mask=tile_ok, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
            ok = tl.load(allowed_ptr + b * a_sb + n, mask=in_slice, other=0) != 0
            scores = tl.dot(q, tl.trans(k), input_precision=precision) * scale
            scores = tl.where(ok[None, :], scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1))
            # A row with no allowed key so far keeps m = -inf: shift by 0 instead (exp(-inf) = 0, no NaN).
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(scores - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_base + n.to(tl.int64)[:, None] * v_sn + cols[None, :], mask=tile_ok, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=precision)
            m_i = m_new
        seen = l_i > 0.0
        out = acc / tl.where(seen, l_i, 1.0)[:, None]
        lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
        part = (bh * splits + split).to(tl.int64) * BLOCK_G + rows
        tl.store(o_ptr + part[:, None] * BLOCK_D + cols[None, :], out, mask=row_ok[:, None])
        tl.store(lse_ptr + part, lse, mask=row_ok)

    @lazy_jit
    def _decode_attention_merge_kernel(
        o_ptr, lse_ptr, out_ptr, kv_heads, splits, dim, out_sb, out_sh,
        GROUPS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
    ):
        # One program per query head (b, kv head, g): its slices' partials, CHUNK slices per load.
        bh = tl.program_id(0)
        g = tl.program_id(1)
        b = (bh // kv_heads).to(tl.int64)
        kh = (bh % kv_heads).to(tl.int64)
        chunk = tl.arange(0, CHUNK)
        cols = tl.arange(0, BLOCK_D)
        first = bh.to(tl.int64) * splits * BLOCK_G + g
        top = tl.full([CHUNK], float("-inf"), tl.float32)
        for s0 in range(0, splits, CHUNK):
            rows = first + (s0 + chunk) * BLOCK_G
            top = tl.maximum(top, tl.load(lse_ptr + rows, mask=s0 + chunk < splits, other=float("-inf")))
        largest = tl.max(top, axis=0)
        acc = tl.zeros([BLOCK_D], tl.float32)
        total = tl.zeros([CHUNK], tl.float32)
        for s0 in range(0, splits, CHUNK):
            rows = first + (s0 + chunk) * BLOCK_G
            present = s0 + chunk < splits
            weight = tl.exp(tl.load(lse_ptr + rows, mask=present, other=float("-inf")) - largest)
            parts = tl.load(o_ptr + rows[:, None] * BLOCK_D + cols[None, :], mask=present[:, None], other=0.0)
            acc += tl.sum(weight[:, None] * parts, axis=0)
            total += weight
        dt = out_ptr.dtype.element_ty
        dest = out_ptr + b * out_sb + (kh * GROUPS + g) * out_sh + cols
        tl.store(dest, to_dtype(round_to(acc / tl.sum(total, axis=0), dt), dt), mask=cols < dim)  # rounded in the interpreter too


def _check(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, scale: object) -> None:
    for name, t in (("q", q), ("keys", keys), ("values", values)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point [B, H, L, D] tensor, got {getattr(t, 'shape', type(t).__name__)}")
    batch, heads, q_len, dim = q.shape
    if q_len != 1:
        raise ValueError(f"q must hold one query per head ([B, H, 1, D]), got {tuple(q.shape)}")
    if keys.shape != values.shape or keys.shape[0] != batch or keys.shape[3] != dim:
        raise ValueError(f"keys and values must be [B, Hkv, Lk, D] matching q {tuple(q.shape)}, got {tuple(keys.shape)}, {tuple(values.shape)}")
    if keys.shape[1] == 0 or heads % keys.shape[1]:
        raise ValueError(f"the key/value heads ({keys.shape[1]}) must divide the query heads ({heads})")
    shapes = ((batch, 1, keys.shape[2]), (batch, keys.shape[2]))
    if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool or tuple(allowed.shape) not in shapes:
        raise ValueError(f"allowed must be a bool [B, 1, Lk] (or [B, Lk]) tensor for B={batch}, Lk={keys.shape[2]}")
    if q.dtype != keys.dtype or q.dtype != values.dtype:
        raise ValueError(f"q, keys and values must share one dtype, got {q.dtype}, {keys.dtype}, {values.dtype}")
    if scale is not None and not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf")):
        raise ValueError(f"scale must be a finite number > 0 or None, got {scale!r}")


def _splits(work: int, keys_len: int, device: torch.device) -> tuple[int, int]:
    """``(splits, keys_per_split)``: slices of whole ``BLOCK_N`` steps, about ``PROGRAMS_PER_SM`` programs
    per SM over the ``work`` (batch x key/value head) rows."""
    sms = sm_count(device, INTERPRETER_SMS)
    wanted = max(1, triton.cdiv(PROGRAMS_PER_SM * sms, work))
    per_split = triton.cdiv(triton.cdiv(keys_len, wanted), BLOCK_N) * BLOCK_N
    return triton.cdiv(keys_len, per_split), per_split


def decode_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    allowed: torch.Tensor,
    *,
    scale: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Softmax attention of one query per head over ``Lk`` keys, grouped key/value heads, a key mask.

    Args:
        q: ``[B, H, 1, D]``.
        keys: ``[B, Hkv, Lk, D]``, ``Hkv`` dividing ``H`` (query head ``h`` reads head ``h // (H // Hkv)``).
        values: ``[B, Hkv, Lk, D]``, as ``keys``.
        allowed: bool ``[B, 1, Lk]`` or ``[B, Lk]``: the keys the query may attend (at least one per row).
        scale: score scale, default ``D ** -0.5``.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`); the Triton
            kernel is forward only and takes float16, bfloat16 or float32.

    Returns:
        ``[B, H, 1, D]`` in ``q.dtype``.
    """
    _check(q, keys, values, allowed, scale)
    batch, heads, _, dim = q.shape
    kv_heads, keys_len = keys.shape[1], keys.shape[2]
    chosen = resolve_forward_backend(
        backend, q, keys, values, op="decode_attention", dtypes=TRITON_DTYPES,
        unsupported="it needs at least one key and D >= 16" if keys_len == 0 or dim < 16 else None,
    )
    if chosen == "torch":
        return decode_attention_reference(q, keys, values, allowed, scale)
    scale = dim**-0.5 if scale is None else float(scale)
    q, keys, values = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, keys, values))
    flags = allowed.reshape(batch, keys_len).contiguous().view(torch.uint8)
    groups = heads // kv_heads
    block_g = max(16, triton.next_power_of_2(groups))
    block_d = max(16, triton.next_power_of_2(dim))
    work = batch * kv_heads
    splits, per_split = _splits(work, keys_len, q.device)
    partial = torch.empty(work * splits * block_g, block_d, dtype=torch.float32, device=q.device)
    lse = torch.empty(work * splits * block_g, dtype=torch.float32, device=q.device)
    out = torch.empty_like(q)
    compiled = q.is_cuda
    _decode_attention_split_kernel[(work, splits)](
        q, keys, values, flags, partial, lse, kv_heads, keys_len, per_split, dim, scale,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2), flags.stride(0),
        GROUPS=groups, BLOCK_G=block_g, BLOCK_N=BLOCK_N, BLOCK_D=block_d,
        IEEE=q.dtype == torch.float32 or not compiled, UPCAST=not compiled,
        num_warps=4 if compiled else 1, num_stages=2 if compiled else 1,
    )
    _decode_attention_merge_kernel[(work, groups)](
        partial, lse, out, kv_heads, splits, dim, out.stride(0), out.stride(1),
        GROUPS=groups, BLOCK_G=block_g, BLOCK_D=block_d, CHUNK=MERGE_CHUNK, num_warps=4 if compiled else 1,
    )
    return out


__all__ = ["decode_attention", "decode_attention_reference"]
