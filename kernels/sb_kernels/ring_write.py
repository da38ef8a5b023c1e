"""A sliding-window decode step's bookkeeping in one kernel: rotary positions, rotation of the query and
key, and the write of the new key/value over the oldest entry of the window's ring buffer.

For each row ``b`` (``keep[b]`` False marks a padded token), with the ring's sequence indices ``I``:

    position   p_b   = seen[b] if keep[b] else max(seen[b] - 1, 0)
    rotation   rope(x)  with angles p_b * inv_freq, cos and sin rounded to the activations' dtype
    slot       s     = argmin(I),  new index  n = max(I) + 1
    writes     keys[b, :, s] = rope(k[b]),  values[b, :, s] = v[b],  key_mask[b, s] = keep[b],  I[s] = n
    returns    rope(q) [B, H, 1, D],  allowed[b, j] = key_mask[b, j] or j == s  (a padded query still
               sees itself; without padding key_mask itself),  next seen[b] = seen[b] + keep[b]

Identity: equal to the PyTorch ops of :class:`sb_layers.SlidingWindowAttention`'s ring path
(:func:`rotate_and_write_ring_reference`), bit for bit on CUDA: the angles are float32 products as
PyTorch forms them, cosine and sine are libdevice's precise functions as in PyTorch's CUDA kernels (not
the approximate hardware ones, which lose the range reduction of long-context angles), and the rotation
rounds where PyTorch does (:mod:`sb_kernels.rotary`). Triton's CPU interpreter takes NumPy's float32
cosine, which may differ from PyTorch's CPU one in the last bit.

With ``spike_query_k`` (the W8ASpike attention) the rotated query is spike-coded and the rotated key and
the value are int8-coded per head vector, by :mod:`sb_kernels.fake_quant`'s rules, before the writes.
The spiking scale sums the row's two halves separately, so, as with that module's kernel against
PyTorch, it may differ in its last bit and an element at a rounding tie may take the neighbouring count.

Non-finite values are not checked (no host read): a NaN or Inf in ``q``, ``k`` or ``v`` propagates by
IEEE arithmetic into the rotated query and into the slot written in ``keys`` / ``values`` (on both paths);
with ``spike_query_k`` a coded row holding NaN or Inf comes out all NaN (:mod:`sb_kernels.fake_quant`'s rule).

Why a kernel: PyTorch spends about twenty small kernels on this per layer and token (positions, the
rotary table, two rotations, the slot's search, four indexed writes, the mask); a decode step is a few
microseconds of work spread over them. One program does all rows in order: the slot is found before
any row writes the index, so there is no race between programs. Forward only, no host read.
"""

from __future__ import annotations

import torch

from sb_neurons.validation import check_positive, check_same_device, describe

from .device import DeviceFunction, round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend
from .fake_quant import int8_fake_quantize, spike_fake_quantize

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    from .fake_quant import fake_quant_scale, fake_quantize_values
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = libdevice = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_BLOCK_W = 4096  # ring entries per step of the slot search and of the mask copy (a 7B window in one)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def rotate_and_write_ring_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
    key_mask: torch.Tensor, key_index: torch.Tensor, seen_tokens: torch.Tensor, inv_freq: torch.Tensor,
    keep: torch.Tensor | None = None, spike_query_k: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rotate_and_write_ring` in PyTorch (same arguments, checked the same way, all on one device;
    writes the same buffers in place)."""
    _check(q, k, v, keys, values, key_mask, key_index, seen_tokens, inv_freq, keep, spike_query_k)
    check_same_device([("q", q), ("k", k), ("v", v), ("keys", keys), ("values", values), ("key_mask", key_mask),
                       ("key_index", key_index), ("seen_tokens", seen_tokens), ("inv_freq", inv_freq), ("keep", keep)])
    compute = inv_freq.dtype
    positions = seen_tokens if keep is None else (seen_tokens + keep.long() - 1).clamp(min=0)
    angles = positions.to(compute)[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]  # [B, 1, D], broadcast over heads
    cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
    q_rot, k_rot = _rotate(q, cos, sin), _rotate(k, cos, sin)
    if spike_query_k is not None:
        q_rot = spike_fake_quantize(q_rot, spike_query_k, backend="torch")
        k_rot, v = int8_fake_quantize(k_rot, backend="torch"), int8_fake_quantize(v, backend="torch")
    slot = key_index.argmin().view(1)
    new_index = key_index.max() + 1
    mask = torch.ones_like(key_mask[:, :1]) if keep is None else keep[:, None]
    keys.index_copy_(2, slot, k_rot[:, :, None])
    values.index_copy_(2, slot, v[:, :, None])
    key_mask.index_copy_(1, slot, mask)
    key_index.index_copy_(0, slot, new_index.view(1))
    allowed = key_mask if keep is None else key_mask | (key_index == new_index)[None, :]
    next_seen = seen_tokens + (1 if keep is None else keep.long())
    return q_rot[:, :, None], allowed, next_seen


if triton is not None:

    @DeviceFunction
    def _rotate_halves(x1, x2, cos, sin, dt: tl.constexpr):
        """The two halves of rows rotated, each product and the sum rounded to ``dt`` (as PyTorch)."""
        a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
        y1 = round_to(round_to(a1 * cos, dt) + round_to(-a2 * sin, dt), dt)
        y2 = round_to(round_to(a2 * cos, dt) + round_to(a1 * sin, dt), dt)
        return y1, y2

    @DeviceFunction
    def _code_halves(y1, y2, width_f, k, INT8: tl.constexpr, COMPILED: tl.constexpr, dt: tl.constexpr):
        """Rows split in two halves, fake-quantized per row (:mod:`sb_kernels.fake_quant`'s rules)."""
        abs_sum = tl.sum(tl.abs(y1), axis=1) + tl.sum(tl.abs(y2), axis=1)
        abs_max = tl.maximum(tl.max(tl.abs(y1), axis=1), tl.max(tl.abs(y2), axis=1))
        finite = (abs_sum * 0.0 == 0.0)[:, None]  # NaN or Inf anywhere in the row
        s = fake_quant_scale(abs_sum, abs_max, width_f, k, INT8)[:, None]
        z1 = round_to(fake_quantize_values(y1, s, finite, INT8, COMPILED), dt)
        z2 = round_to(fake_quantize_values(y2, s, finite, INT8, COMPILED), dt)
        return z1, z2

    @lazy_jit(do_not_specialize=("half",))  # converted with .to(): a head dimension of 2 makes half == 1
    def _ring_write_kernel(
        q_ptr, k_ptr, v_ptr, inv_ptr, seen_ptr, keep_ptr,
        keys_ptr, values_ptr, mask_ptr, index_ptr, q_out_ptr, allowed_ptr, seen_out_ptr,
        batch, heads, kv_heads, window, half,
        q_sb, q_sh, k_sb, k_sh, v_sb, v_sh, keys_sb, keys_sh, keys_sn, values_sb, values_sh, values_sn,
        mask_sb, allowed_sb, spike_k,
        HAS_KEEP: tl.constexpr, CODE: tl.constexpr, COMPILED: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_W: tl.constexpr,
    ):
        # The slot (oldest entry) and the new index, before anything is written.
        entries = tl.arange(0, BLOCK_W)
        lowest = tl.full([BLOCK_W], 9223372036854775807, tl.int64)
        lowest_at = tl.zeros([BLOCK_W], tl.int64)
        highest = tl.full([BLOCK_W], -9223372036854775807, tl.int64)
        for w0 in range(0, window, BLOCK_W):
            at = w0 + entries
            inside = at < window
            index = tl.load(index_ptr + at, mask=inside, other=0)
            lower = inside & (index < lowest)
            lowest_at = tl.where(lower, at.to(tl.int64), lowest_at)
            lowest = tl.where(lower, index, lowest)
            highest = tl.where(inside, tl.maximum(highest, index), highest)
        smallest = tl.min(lowest, axis=0)
        # Indices are distinct: exactly one lane holds the smallest; its position is the slot.
        slot = tl.max(tl.where(lowest == smallest, lowest_at, -1), axis=0)
        new_index = tl.max(highest, axis=0) + 1

        cols = tl.arange(0, BLOCK_HALF)
        col_ok = cols < half
        inv = tl.load(inv_ptr + cols, mask=col_ok, other=0.0)
        q_rows = tl.arange(0, BLOCK_H)
        kv_rows = tl.arange(0, BLOCK_KV)
        q_ok = (q_rows < heads)[:, None] & col_ok[None, :]
        kv_ok = (kv_rows < kv_heads)[:, None] & col_ok[None, :]
        dt = q_ptr.dtype.element_ty
        width_f = (2 * half).to(tl.float32)
        for b in range(batch):
            b64 = tl.zeros([], tl.int64) + b
            seen = tl.load(seen_ptr + b64)
            kept = seen * 0 + 1
            if HAS_KEEP:
                kept = tl.load(keep_ptr + b64).to(tl.int64)
            position = tl.maximum(seen + kept - 1, 0)
            angles = position.to(tl.float32) * inv
            if COMPILED:
                cos, sin = libdevice.cos(angles), libdevice.sin(angles)
            else:
                cos, sin = tl.cos(angles), tl.sin(angles)
            cos, sin = round_to(cos, dt)[None, :], round_to(sin, dt)[None, :]

            # Query: rotated (and spike-coded) into [B, H, 1, D] (contiguous).
            src = q_ptr + b64 * q_sb + q_rows[:, None] * q_sh + cols[None, :]
            x1, x2 = tl.load(src, mask=q_ok, other=0.0), tl.load(src + half, mask=q_ok, other=0.0)
            y1, y2 = _rotate_halves(x1, x2, cos, sin, dt)
            if CODE:
                y1, y2 = _code_halves(y1, y2, width_f, spike_k, False, COMPILED, dt)
            dst = q_out_ptr + (b64 * heads + q_rows[:, None]) * (2 * half) + cols[None, :]
            tl.store(dst, to_dtype(y1, dt), mask=q_ok)
            tl.store(dst + half, to_dtype(y2, dt), mask=q_ok)

            # Key: rotated (and int8-coded), written over the slot; the value (int8-coded) too.
            src = k_ptr + b64 * k_sb + kv_rows[:, None] * k_sh + cols[None, :]
            x1, x2 = tl.load(src, mask=kv_ok, other=0.0), tl.load(src + half, mask=kv_ok, other=0.0)
            y1, y2 = _rotate_halves(x1, x2, cos, sin, dt)
            if CODE:
                y1, y2 = _code_halves(y1, y2, width_f, 0.0, True, COMPILED, dt)
            dst = keys_ptr + b64 * keys_sb + kv_rows[:, None] * keys_sh + slot * keys_sn + cols[None, :]
            tl.store(dst, to_dtype(y1, dt), mask=kv_ok)
            tl.store(dst + half, to_dtype(y2, dt), mask=kv_ok)
            src = v_ptr + b64 * v_sb + kv_rows[:, None] * v_sh + cols[None, :]
            y1 = tl.load(src, mask=kv_ok, other=0.0).to(tl.float32)
            y2 = tl.load(src + half, mask=kv_ok, other=0.0).to(tl.float32)
            if CODE:
                y1, y2 = _code_halves(y1, y2, width_f, 0.0, True, COMPILED, dt)
            dst = values_ptr + b64 * values_sb + kv_rows[:, None] * values_sh + slot * values_sn + cols[None, :]
            tl.store(dst, to_dtype(y1, dt), mask=kv_ok)
            tl.store(dst + half, to_dtype(y2, dt), mask=kv_ok)

            # The mask: the slot takes keep; what the query may attend is the mask with the slot allowed
            # (without padding, that is the mask itself: the caller reads key_mask, nothing is copied).
            if HAS_KEEP:
                for w0 in range(0, window, BLOCK_W):
                    at = w0 + entries
                    inside = at < window
                    old = tl.load(mask_ptr + b64 * mask_sb + at, mask=inside, other=0)
                    tl.store(allowed_ptr + b64 * allowed_sb + at, tl.where(at == slot, 1, old).to(tl.int8), mask=inside)
            tl.store(mask_ptr + b64 * mask_sb + slot, kept.to(tl.int8))
            tl.store(seen_out_ptr + b64, seen + kept)
        tl.store(index_ptr + slot, new_index)


def _check(q, k, v, keys, values, key_mask, key_index, seen_tokens, inv_freq, keep, spike_query_k) -> None:
    """Types, dtypes and shapes (devices: the reference names a mix, the Triton dispatch refuses one)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point [B, heads, D] tensor, got {describe(t)}")
    batch, heads, dim = q.shape
    if dim % 2:
        raise ValueError(f"q's head dimension D must be even for rotary embeddings, got q of shape {tuple(q.shape)}")
    if k.shape != v.shape or k.shape[0] != batch or k.shape[2] != dim:
        raise ValueError(f"k and v must be [B, Hkv, D] matching q {tuple(q.shape)}, got {tuple(k.shape)}, {tuple(v.shape)}")
    for name, t in (("keys", keys), ("values", values)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[:2] != k.shape[:2] or t.shape[3] != dim or t.shape[2] == 0:
            raise ValueError(f"{name} must be a [B, Hkv, W, D] ring buffer matching k {tuple(k.shape)}, got {describe(t)}")
    window = keys.shape[2]
    if values.shape != keys.shape:
        raise ValueError(f"values must have the shape of keys {tuple(keys.shape)}, got {tuple(values.shape)}")
    if len({q.dtype, k.dtype, v.dtype, keys.dtype, values.dtype}) != 1:
        raise ValueError("q, k, v, keys and values must share one dtype, "
                         f"got {q.dtype}, {k.dtype}, {v.dtype}, {keys.dtype}, {values.dtype}")
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool or tuple(key_mask.shape) != (batch, window):
        raise ValueError(f"key_mask must be a bool tensor of shape ({batch}, {window}), got {describe(key_mask)}")
    if not isinstance(key_index, torch.Tensor) or key_index.dtype != torch.int64 or tuple(key_index.shape) != (window,):
        raise ValueError(f"key_index must be an int64 tensor of shape ({window},), got {describe(key_index)}")
    if not isinstance(seen_tokens, torch.Tensor) or seen_tokens.dtype != torch.int64 or tuple(seen_tokens.shape) != (batch,):
        raise ValueError(f"seen_tokens must be an int64 tensor of shape ({batch},), got {describe(seen_tokens)}")
    if not isinstance(inv_freq, torch.Tensor) or not inv_freq.is_floating_point() or tuple(inv_freq.shape) != (dim // 2,):
        raise ValueError(f"inv_freq must be a floating-point tensor of shape ({dim // 2},), got {describe(inv_freq)}")
    if keep is not None and (not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != (batch,)):
        raise ValueError(f"keep must be a bool tensor of shape ({batch},) or None, got {describe(keep)}")
    if spike_query_k is not None:
        check_positive(spike_query_k, "spike_query_k")


def rotate_and_write_ring(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_mask: torch.Tensor,
    key_index: torch.Tensor,
    seen_tokens: torch.Tensor,
    inv_freq: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    spike_query_k: float | None = None,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row: rotary rotation of ``q``/``k`` and the ring buffer's in-place update (module
    docstring).

    Args:
        q: ``[B, H, D]`` queries before rotation (last dimension contiguous; views of a projection's
            output are read in place).
        k: ``[B, Hkv, D]`` keys before rotation.
        v: ``[B, Hkv, D]`` values.
        keys: ``[B, Hkv, W, D]`` the window's ring buffer of rotated keys, written in place at the slot.
        values: ``[B, Hkv, W, D]`` its values, written in place at the slot.
        key_mask: bool ``[B, W]``, written in place at the slot.
        key_index: int64 ``[W]`` distinct sequence indices of the entries, written in place at the slot.
        seen_tokens: int64 ``[B]`` real tokens seen per row (the token's rotary position when kept).
        inv_freq: ``[D / 2]`` rotary inverse frequencies (float32 for the Triton kernel).
        keep: bool ``[B]``, False for a padded token, or None (all kept).
        spike_query_k: the W8ASpike attention's coding, or None: the rotated query spike-coded with
            this ``k`` (:func:`sb_kernels.spike_fake_quantize`), the rotated key and the value int8-coded
            per head vector (:func:`sb_kernels.int8_fake_quantize`) before they are written.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`); the kernel
            takes float16, bfloat16 or float32 activations and runs without autograd.

    Returns:
        ``(q_rot [B, H, 1, D] in q's dtype, allowed bool [B, W], next_seen int64 [B])``; without ``keep``
        every new key is real and ``allowed`` is ``key_mask`` itself (after the write).
    """
    _check(q, k, v, keys, values, key_mask, key_index, seen_tokens, inv_freq, keep, spike_query_k)
    unsupported = None
    if inv_freq.dtype != torch.float32:
        unsupported = f"it takes float32 inv_freq, got {inv_freq.dtype}"
    elif not all(t.stride(-1) == 1 for t in (keys, values, key_mask, key_index)):
        unsupported = "it writes ring buffers whose last dimension is contiguous"
    chosen = resolve_forward_backend(
        backend, q, k, v, keys, values, op="rotate_and_write_ring", dtypes=TRITON_DTYPES, unsupported=unsupported,
        device_only=(key_mask, key_index, seen_tokens, inv_freq, keep),
    )
    if chosen == "torch":
        return rotate_and_write_ring_reference(
            q, k, v, keys, values, key_mask, key_index, seen_tokens, inv_freq, keep, spike_query_k
        )
    check_same_device([("q", q), ("k", k), ("v", v), ("keys", keys), ("values", values), ("key_mask", key_mask),
                       ("key_index", key_index), ("seen_tokens", seen_tokens), ("inv_freq", inv_freq), ("keep", keep)])
    batch, heads, dim = q.shape
    kv_heads, window = keys.shape[1], keys.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    q_rot = torch.empty(batch, heads, 1, dim, dtype=q.dtype, device=q.device)
    allowed = key_mask if keep is None else torch.empty(batch, window, dtype=torch.bool, device=q.device)
    next_seen = torch.empty_like(seen_tokens)
    flags = keep.contiguous().view(torch.int8) if keep is not None else next_seen  # any pointer when absent
    compiled = q.is_cuda
    _ring_write_kernel[(1,)](
        q, k, v, inv_freq, seen_tokens, flags,
        keys, values, key_mask.view(torch.int8), key_index, q_rot, allowed.view(torch.int8), next_seen,
        batch, heads, kv_heads, window, dim // 2,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0), values.stride(1), values.stride(2),
        key_mask.stride(0), allowed.stride(0), float(spike_query_k or 1.0),
        HAS_KEEP=keep is not None, CODE=spike_query_k is not None, COMPILED=compiled,
        BLOCK_H=triton.next_power_of_2(heads), BLOCK_KV=triton.next_power_of_2(kv_heads),
        BLOCK_HALF=max(16, triton.next_power_of_2(dim // 2)), BLOCK_W=min(MAX_BLOCK_W, triton.next_power_of_2(window)),
        **(dict(num_warps=8, enable_fp_fusion=False) if compiled else {}),
    )
    return q_rot, allowed, next_seen


__all__ = ["rotate_and_write_ring", "rotate_and_write_ring_reference"]
