"""Attention primitives of the softmax-attention layers: masked attention (SDPA, FlexAttention, the
one-query decode kernel), fused attention with its log-sum-exp, and exact sliding-window attention
assembled from mask-free pieces. :class:`sb_layers.SlidingWindowAttention` is built on them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from sb_kernels import decode_attention, merge_attention_into
from sb_kernels.dispatch import needs_grad
from sb_neurons.validation import check_int

AttentionBackend = Literal["sdpa", "flex"]


def masked_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, backend: AttentionBackend = "sdpa"
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D), masked to allowed) v`` with grouped key/value heads.

    ``q`` ``[B, H, Lq, D]``, ``keys`` and ``values`` ``[B, Hkv, Lk, D]`` (Hkv divides H), ``allowed``
    ``[B, Lq, Lk]`` bool with at least one True per row. Returns ``[B, H, Lq, D]``. ``backend`` picks
    PyTorch SDPA (one query per head: :func:`sb_kernels.decode_attention`, split over the keys) or
    FlexAttention (imported on first use).
    """
    groups = q.shape[1] // keys.shape[1]
    if backend == "sdpa" and q.shape[2] == 1:
        # A decode step: split over the keys, grouped heads read in place (SDPA would repeat the window
        # per query head, or run one thread block per key/value head).
        return decode_attention(q, keys, values, allowed)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(
            q, keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1), attn_mask=allowed[:, None]
        )
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_index, kv_index):
        return allowed[b, q_index, kv_index]

    batch, _, q_len, _ = q.shape
    block_mask = create_block_mask(mask_mod, batch, None, q_len, keys.shape[2], device=q.device)
    return flex_attention(q, keys, values, block_mask=block_mask, enable_gqa=groups > 1)


# Which fused kernels this process found usable: "grouped" entries record whether a kernel took fewer
# key/value heads than query heads (if not, keys and values are repeated), "cudnn" whether cuDNN's
# attention ran at all (a build or GPU without it falls back to flash for the rest of the process).
_KERNEL_WORKS = {"flash_grouped": True, "cudnn_grouped": True, "cudnn": True}
CUDNN_MIN_CAPABILITY = (9, 0)  # where cuDNN's attention was measured faster than flash (H100: 1.8x on the SWA pieces)


def _prefers_cudnn(capability: tuple[int, int]) -> bool:
    """Whether a half-precision call on a GPU of this compute ``capability`` takes cuDNN's fused
    attention: Hopper or newer, not switched off by the user (``torch.backends.cuda.enable_cudnn_sdp(False)``
    or a ``torch.nn.attention.sdpa_kernel`` context without ``SDPBackend.CUDNN_ATTENTION``), and not found
    unusable earlier in this process."""
    if not (_KERNEL_WORKS["cudnn"] and torch.backends.cuda.cudnn_sdp_enabled()):
        return False
    return tuple(capability) >= CUDNN_MIN_CAPABILITY


def _fused_with_lse(kernel: str, q, keys, values, causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One of PyTorch's fused attention kernels returning the log-sum-exp: ``kernel`` is "flash" or
    "cudnn". Grouped key/value heads are handed over as they are, and repeated from then on if the
    kernel refuses them."""
    q_len, groups = q.shape[2], q.shape[1] // keys.shape[1]

    def run(k, v):
        if kernel == "cudnn":
            out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)[:2]
        else:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
        return out, lse[..., :q_len].reshape(q.shape[:3])  # cuDNN: [B, H, Lq, 1]; flash: padded rows

    grouped = f"{kernel}_grouped"
    if groups > 1 and _KERNEL_WORKS[grouped]:
        try:
            return run(keys, values)
        except torch.OutOfMemoryError:
            raise  # not a refusal of grouped heads: repeating keys would only need more memory
        except RuntimeError:  # a build whose kernel wants equal head counts: repeat from now on
            _KERNEL_WORKS[grouped] = False
    if groups > 1:
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    return run(keys, values)


def attention_with_lse(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    causal: bool,
    scale: float | None = None,
    *,
    allow_cudnn: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention and the log-sum-exp of its scores, with grouped key/value heads and no mask tensor.

    ``q`` ``[B, H, Lq, D]``, ``keys`` and ``values`` ``[B, Hkv, Lk, D]`` (Hkv divides H). ``causal`` needs a
    square problem (``Lq == Lk``) and lets query ``a`` see keys ``c <= a``; otherwise every query sees
    every key. ``scale`` defaults to ``D ** -0.5``. Returns ``(out [B, H, Lq, D] in q.dtype,
    lse [B, H, Lq])`` with ``lse = logsumexp_c(scale * q_a . k_c)`` over the visible keys (float32, float64
    for float64 input): two results on disjoint key sets merge exactly through their ``lse``
    (:func:`windowed_attention`).

    The fused kernels below return a log-sum-exp that carries no gradient (PyTorch defines none for it),
    so when an input needs a gradient the plain computation runs instead, differentiable in both results
    (memory ``Lq x Lk`` per head). Otherwise:
    CUDA half/bfloat16 runs cuDNN's fused attention on Hopper and newer (where it measured faster) and
    PyTorch's flash-attention kernel elsewhere, or where the user switched cuDNN off
    (``torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)``), or it failed to run once, or the
    caller passed ``allow_cudnn=False``: cuDNN builds an execution plan for every new shape (150-400 ms
    on an H100), so shapes that change from call to call are better left to flash. Both kernels read
    grouped heads in place and skip causal tiles. CUDA float32 runs the memory-efficient kernel (keys and
    values repeated per group); anything else a plain PyTorch computation in float32/float64 (the
    reference, used on CPU).
    """
    q_len, k_len = q.shape[2], keys.shape[2]
    if causal and q_len != k_len:
        raise ValueError(f"causal attention_with_lse needs Lq == Lk (square), got {q_len} and {k_len}")
    if not isinstance(allow_cudnn, bool):
        raise TypeError(f"allow_cudnn must be a bool, got {type(allow_cudnn).__name__}")
    groups = q.shape[1] // keys.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    fused = q.is_cuda and not needs_grad(q, keys, values)
    if fused and q.dtype in (torch.float16, torch.bfloat16):
        if allow_cudnn and _prefers_cudnn(torch.cuda.get_device_capability(q.device)):
            try:
                return _fused_with_lse("cudnn", q, keys, values, causal, scale)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:  # no usable cuDNN attention in this build or for this GPU: flash from now on
                _KERNEL_WORKS["cudnn"] = False
        return _fused_with_lse("flash", q, keys, values, causal, scale)
    if groups > 1:
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    if fused and q.dtype == torch.float32:
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, keys, values, None, True, 0.0, causal, scale=scale)[:2]
        return out, lse[..., :q_len]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = (q.to(compute) @ keys.to(compute).transpose(-1, -2)) * scale
    if causal:
        steps = torch.arange(q_len, device=q.device)
        scores = scores.masked_fill(steps[None, :] > steps[:, None], float("-inf"))
    lse = scores.logsumexp(dim=-1)
    out = (scores - lse.unsqueeze(-1)).exp() @ values.to(compute)
    return out.to(q.dtype), lse


def windowed_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, window: int, scale: float | None = None) -> torch.Tensor:
    """Exact sliding-window attention of the last ``Lq`` positions, without a mask tensor or repeated keys.

    ``keys``, ``values`` ``[B, Hkv, N, D]`` hold consecutive positions ``0 .. N - 1`` (e.g. a cache of
    ``N - Lq`` earlier tokens followed by this call's ``Lq``); ``q`` ``[B, H, Lq, D]`` are the queries at
    positions ``N - Lq .. N - 1``. Query at position ``P`` attends the keys ``p`` with
    ``P - window < p <= P`` (every position valid: no padding, no sinks). Returns ``[B, H, Lq, D]`` in
    ``q.dtype``, a transposed view of a time-major ``[B, Lq, H, D]`` tensor (so the output projection
    needs no copy).

    The band is cut into pieces that a causal kernel computes without a mask: queries whose window
    reaches position 0 see the earlier keys in full plus a causal square; every later block of ``m <=
    window`` queries starting at position ``t`` sees a causal square ``[t, t + m)``, a full rectangle
    ``[t - window + m, t)`` and the anti-causal triangle ``[t - window + 1, t - window + m)``, computed as
    a causal square on queries and keys reversed in time. The pieces are disjoint and merged through
    their log-sum-exp (:func:`attention_with_lse`, :func:`sb_kernels.merge_attention_into`), so the
    result equals the masked softmax exactly (to rounding); the work is ``Lq * window`` scores, the
    useful ones.

    Pieces of the recurring shapes (blocks of ``window`` queries, and the first block when it spans a
    whole window) may run on cuDNN (:func:`attention_with_lse`), whose per-shape plans are then built
    once per process; the pieces whose shapes follow the input's length (the last partial block, the
    rectangle against a short cache) run on flash, so a new length costs no new plan.
    """
    check_int(window, "window", minimum=1)
    if q.ndim != 4 or keys.ndim != 4 or values.shape[:3] != keys.shape[:3] or q.shape[0] != keys.shape[0]:
        raise ValueError(f"q must be [B, H, Lq, D] and keys/values [B, Hkv, N, D], got {tuple(q.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}")
    batch, heads, q_len, dim = q.shape
    total = keys.shape[2]
    if q_len > total or heads % keys.shape[1]:
        raise ValueError(f"need Lq <= N and Hkv dividing H, got q {tuple(q.shape)} and keys {tuple(keys.shape)}")
    cached = total - q_len
    out = q.new_empty(batch, q_len, heads, values.shape[-1]).transpose(1, 2)  # time-major storage

    # Queries at positions < window: every earlier key is in their window.
    first = max(0, min(q_len, window - cached))
    if first:
        o, lse = attention_with_lse(
            q[:, :, :first], keys[:, :, cached : cached + first], values[:, :, cached : cached + first], True, scale,
            allow_cudnn=first == window,
        )
        earlier = None
        if cached:
            earlier = attention_with_lse(q[:, :, :first], keys[:, :, :cached], values[:, :, :cached], False, scale, allow_cudnn=False)
        merge_attention_into(out[:, :, :first], (o, lse), c=earlier)
    for start in range(first, q_len, window):
        stop = min(start + window, q_len)
        m, t = stop - start, cached + start  # t: position of the block's first query, t >= window
        q_block = q[:, :, start:stop]
        recurring = m == window  # every block but a last partial one: the same shapes at any length
        causal = attention_with_lse(q_block, keys[:, :, t : t + m], values[:, :, t : t + m], True, scale, allow_cudnn=recurring)
        full = None
        if m < window:  # keys every query of the block sees in full
            low = t - window + m
            full = attention_with_lse(q_block, keys[:, :, low:t], values[:, :, low:t], False, scale, allow_cudnn=False)
        triangle = None
        if m > 1:
            # Query a' (0 <= a' <= m - 2) sees key t - window + 1 + c for c >= a'; the last query none.
            # Reversed in time (a'' = m - 2 - a', c'' = m - 2 - c) that is the causal rule c'' <= a''.
            low = t - window + 1
            flip = lambda x: x.flip(2)  # noqa: E731
            triangle = attention_with_lse(
                flip(q_block[:, :, : m - 1]), flip(keys[:, :, low : low + m - 1]), flip(values[:, :, low : low + m - 1]), True, scale,
                allow_cudnn=recurring,
            )
        merge_attention_into(out[:, :, start:stop], causal, full, triangle, reverse_c=True)
    return out


__all__ = ["AttentionBackend", "attention_with_lse", "masked_attention", "windowed_attention"]
