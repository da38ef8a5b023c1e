"""Sliding-window softmax attention (SWA) with RoPE, GQA, a rolling KV cache and optional sink tokens.

Window semantics (the release disagrees with itself, facts section 4; we pick its SDPA path and its
decode cache): the query at sequence index ``i`` attends the keys ``j`` with ``i - window < j <= i``,
i.e. ``window`` keys including itself. Prefill and token-by-token decode use exactly this rule, and the
cache holds at most ``window`` entries (plus the sinks). ``window=None`` is full causal attention.

Padding: ``attention_mask`` (1 keep, 0 pad) hides padded keys; rotary positions count real tokens only
(they start at 0 at the first real token), so left padding does not change real tokens' outputs. A
padded query attends only to itself, so that its output (which callers discard) stays finite.

Sinks (76B variant, facts section 5): with ``num_sinks = S`` the first S tokens of the first call
are sink tokens (the learnable embeddings :class:`sb_layers.SinkTokens` prepends): they attend each other without a causal mask and never the regular tokens; every
regular token attends all sinks whatever the window; sinks are not rotated and never leave the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sb_kernels import decode_attention, int8_fake_quantize, merge_attention_into, rotate_and_write_ring, spike_fake_quantize
from sb_kernels.dispatch import needs_grad
from sb_neurons.validation import check_int, check_positive

from ._checks import check_attention_mask, check_head_layout, check_hidden_states
from ._merged import merged_linear_outputs
from .mixer_cache import MixerCache, check_layer_idx, mix_on_cache
from .rotary import _inverse_frequencies, apply_rotary, rotary_cos_sin
from .spiking_linear import SpikeCoding, make_linear


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
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
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


@dataclass
class RollingKVCache:
    """Streaming state of one SWA layer: rotated keys and values of at most ``window`` recent tokens.

    Attributes:
        window: the layer's window (None: keep everything).
        keys, values: ``[B, Hkv, n, D]`` regular entries, ``n <= window``.
        key_mask: ``[B, n]`` bool, False for padded tokens.
        key_index: ``[n]`` int64 sequence index of each entry.
        sink_keys, sink_values: ``[B, Hkv, S, D]`` sink entries (never evicted), or None.
        seen_tokens: ``[B]`` int64 real (unpadded) tokens seen: the next rotary position.
        length: tokens appended so far (sinks excluded): the next sequence index.
        maybe_masked: True once an entry may be masked (a call with an ``attention_mask``, or
            :meth:`fill_window`'s placeholders); while False every entry is a real token, which lets a
            prefill take the unmasked :func:`windowed_attention` path without reading the mask back.
        in_ring_order: True after a decode step wrote over the oldest entry in place
            (:func:`sb_kernels.rotate_and_write_ring`): entries are no longer sorted by index
            (:meth:`sort` restores the order, which every other path assumes).
    """

    window: int | None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None
    key_index: torch.Tensor | None = None
    sink_keys: torch.Tensor | None = None
    sink_values: torch.Tensor | None = None
    seen_tokens: torch.Tensor | None = None
    length: int = 0
    maybe_masked: bool = False
    in_ring_order: bool = False

    def __post_init__(self) -> None:
        if self.window is not None:
            check_int(self.window, "window", minimum=1)
        check_int(self.length, "length", minimum=0)

    @property
    def num_entries(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def fill_window(self) -> None:
        """Pad to exactly ``window`` entries with masked placeholders in front of the real ones.

        Placeholders are never attended (``key_mask`` False) and are the first evicted; their indices
        continue the real ones downwards, so the run of indices stays contiguous. Outputs are unchanged,
        but from now on every call of the same length has the same shapes (what a captured CUDA graph of
        a decode step needs). Raises ``ValueError`` for an unbounded window or an empty cache.
        """
        if self.window is None:
            raise ValueError("fill_window needs a bounded window (window=None keeps every token)")
        if self.keys is None or self.key_index is None or not self.key_index.numel():
            raise ValueError("fill_window needs at least one cached token (call it after the prefill)")
        missing = self.window - self.keys.shape[2]
        if missing <= 0:
            return
        self.sort()
        batch, heads, _, dim = self.keys.shape
        self.maybe_masked = True
        self.keys = torch.cat([self.keys.new_zeros(batch, heads, missing, dim), self.keys], dim=2)
        self.values = torch.cat([self.values.new_zeros(batch, heads, missing, self.values.shape[3]), self.values], dim=2)
        self.key_mask = torch.cat([self.key_mask.new_zeros(batch, missing), self.key_mask], dim=1)
        below = torch.arange(-missing, 0, device=self.key_index.device, dtype=self.key_index.dtype)
        self.key_index = torch.cat([self.key_index[:1] + below, self.key_index])

    def can_write_over_oldest(self) -> bool:
        """Whether a one-token step may write over the oldest entry in place now (the decode path of
        :class:`SlidingWindowAttention`, :func:`sb_kernels.rotate_and_write_ring`): a bounded window
        already full, no sinks, and in-place writes allowed (no autograd; inference tensors only in
        inference mode)."""
        if self.window is None or self.keys is None or self.sink_keys is not None or self.keys.shape[2] != self.window:
            return False
        if torch.is_grad_enabled():
            return False
        return torch.is_inference_mode_enabled() or not self.keys.is_inference()

    def sort(self) -> None:
        """Entries back in increasing index order after ring writes (a no-op otherwise)."""
        if not self.in_ring_order:
            return
        order = self.key_index.argsort()
        self.keys, self.values = self.keys.index_select(2, order), self.values.index_select(2, order)
        self.key_mask, self.key_index = self.key_mask.index_select(1, order), self.key_index.index_select(0, order)
        self.in_ring_order = False

    def append(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> None:
        """Add entries and evict all but the newest ``window``."""
        if self.keys is None:
            self.keys, self.values, self.key_mask, self.key_index = keys, values, mask, index
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)
            self.values = torch.cat([self.values, values], dim=2)
            self.key_mask = torch.cat([self.key_mask, mask], dim=1)
            self.key_index = torch.cat([self.key_index, index])
        if self.window is not None and self.keys.shape[2] > self.window:
            keep = slice(self.keys.shape[2] - self.window, None)
            self.keys, self.values = self.keys[:, :, keep], self.values[:, :, keep]
            self.key_mask, self.key_index = self.key_mask[:, keep], self.key_index[keep]


class SlidingWindowAttention(nn.Module):
    """SpikingBrain-7B's SWA layer: ``q_proj``, ``k_proj``, ``v_proj`` (bias), ``o_proj`` (no bias).

    Args:
        hidden_size: model width.
        num_heads: query heads.
        num_kv_heads: key/value heads, dividing ``num_heads`` (default ``num_heads``).
        head_dim: per-head width (default ``hidden_size / num_heads``).
        window: keys per query including itself (None: full causal attention).
        rope_theta: rotary base (1e6 as released).
        qkv_bias: bias on q/k/v (True as released).
        num_sinks: number of leading sink tokens (0: none); see :class:`sb_layers.SinkTokens`.
        coding: spike-code the projections' inputs (:class:`SpikingLinear`), or None.
        attention_backend: ``"sdpa"`` (PyTorch scaled_dot_product_attention) or ``"flex"``
            (FlexAttention; compile the model with ``torch.compile`` for its fused kernel; PyTorch has no
            FlexAttention backward on CPU). Both take the same boolean mask and compute the same function.
        query_chunk_size: None (default) attends all of a call's queries at once, with a boolean mask
            ``[B, L, cached + L]``; an int processes the queries in blocks of that many, each against the
            sinks and the ``block + window - 1`` keys its window can reach, so a long prefill costs
            ``O(L * (block + window))`` time and ``O(block * (block + window))`` mask memory instead of
            ``O(L^2)``. Same function either way (ignored when ``window`` is None). In the common case
            (``attention_backend="sdpa"``, no ``attention_mask``, no sinks, a cache without masked
            entries, more than one query, no gradient needed) an int selects :func:`windowed_attention`
            instead: no mask tensor, no repeated keys, only the ``L * window`` scores of the band.
        spike_attention_k: None (default) attends in floating point; a threshold divisor ``k > 0`` runs
            the release's W8ASpike attention (facts section 4): each query head vector spike-coded
            (:func:`sb_kernels.spike_fake_quantize`, ``V_th = mean|q| / k``) and each key and value head vector
            int8-quantized (:func:`sb_kernels.int8_fake_quantize`), both after RoPE, so the cache holds int8-grid
            keys and values (the report's INT8 KV cache). Per-vector coding keeps the streaming identity.
        layer_idx: this layer's entry in a :class:`sb_layers.MixerCache` (its index in the stack).

    ``forward(hidden_states [B, L, hidden], attention_mask [B, L] | None, cache: MixerCache | None)``
    returns ``output [B, L, hidden]`` (the mixer protocol, :mod:`sb_layers.mixer_cache`): the layer's
    :class:`RollingKVCache` is entry ``layer_idx`` of ``cache``, updated in place; pass the same cache
    again to continue the sequence (a fresh cache: a whole sequence). ``attention_mask`` covers this call's
    tokens only.

    Identity: one call over a sequence equals any split of it into pieces fed with the cache carried
    (prefill and token-by-token decode see the same window), and equals the dense masked softmax
    ``softmax(q k^T / sqrt(D) + mask) v`` with RoPE on q and k.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        window: int | None = 4096,
        rope_theta: float = 1e6,
        qkv_bias: bool = True,
        num_sinks: int = 0,
        coding: SpikeCoding | None = None,
        attention_backend: AttentionBackend = "sdpa",
        query_chunk_size: int | None = None,
        spike_attention_k: float | None = None,
        device=None,
        dtype=None,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = check_layer_idx(layer_idx)
        self.cache_part: int | None = None  # set by a ParallelMixer holding this layer
        if spike_attention_k is not None:
            check_positive(spike_attention_k, "spike_attention_k")
        self.spike_attention_k = None if spike_attention_k is None else float(spike_attention_k)
        if attention_backend not in ("sdpa", "flex"):
            raise ValueError(f"attention_backend must be 'sdpa' or 'flex', got {attention_backend!r}")
        if query_chunk_size is not None and (
            isinstance(query_chunk_size, bool) or not isinstance(query_chunk_size, int) or query_chunk_size < 1
        ):
            raise ValueError(f"query_chunk_size must be None or an int >= 1, got {query_chunk_size!r}")
        self.attention_backend = attention_backend
        self.query_chunk_size = query_chunk_size
        num_kv_heads, head_dim = check_head_layout(hidden_size, num_heads, num_kv_heads, head_dim)
        check_positive(rope_theta, "rope_theta")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be None or an int >= 1, got {window!r}")
        if isinstance(num_sinks, bool) or not isinstance(num_sinks, int) or num_sinks < 0:
            raise ValueError(f"num_sinks must be an int >= 0, got {num_sinks!r}")
        self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim = hidden_size, num_heads, num_kv_heads, head_dim
        self.window, self.rope_theta, self.num_sinks = window, float(rope_theta), num_sinks
        factory = dict(device=device, dtype=dtype)
        self.q_proj = make_linear(hidden_size, num_heads * head_dim, qkv_bias, coding, **factory)
        self.k_proj = make_linear(hidden_size, num_kv_heads * head_dim, qkv_bias, coding, **factory)
        self.v_proj = make_linear(hidden_size, num_kv_heads * head_dim, qkv_bias, coding, **factory)
        self.o_proj = make_linear(num_heads * head_dim, hidden_size, False, coding, **factory)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: MixerCache | None = None,
    ) -> torch.Tensor:
        """``output [B, L, hidden]``; this layer's :class:`RollingKVCache` lives in ``cache`` (a
        :class:`sb_layers.MixerCache`, entry ``layer_idx``), created on the first call and updated in place;
        ``cache=None``: the whole sequence alone, nothing kept (see :mod:`sb_layers.mixer_cache`)."""
        return mix_on_cache(self, hidden_states, attention_mask, cache)

    def _mix(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, cache: RollingKVCache | None,
    ) -> tuple[torch.Tensor, RollingKVCache]:
        """The layer as a function of its state: ``(output, cache)``, ``cache`` updated in place (a new one
        when None)."""
        check_hidden_states(hidden_states, self.hidden_size)
        batch, length, _ = hidden_states.shape
        device = hidden_states.device
        check_attention_mask(attention_mask, batch, length)
        if cache is None:
            cache = RollingKVCache(self.window)
        elif not isinstance(cache, RollingKVCache):
            raise TypeError(f"cache must be a RollingKVCache, got {type(cache).__name__}")
        elif cache.window != self.window:
            raise ValueError(f"cache window {cache.window} differs from the layer's window {self.window}")
        if cache.seen_tokens is None:
            cache.seen_tokens = torch.zeros(batch, dtype=torch.int64, device=device)
        elif cache.seen_tokens.shape[0] != batch:
            raise ValueError(f"cache holds batch size {cache.seen_tokens.shape[0]}, input has {batch}")

        # Sinks: the first num_sinks tokens of the first call.
        sinks = self.num_sinks if cache.length == 0 and cache.sink_keys is None else 0
        if sinks and length < sinks:
            raise ValueError(f"the first call must start with the {sinks} sink tokens, got length {length}")
        regular = length - sinks

        q = self._heads(self.q_proj(hidden_states), self.num_heads)
        kv = merged_linear_outputs(hidden_states, (self.k_proj, self.v_proj), self, "kv")
        k_flat, v_flat = kv if kv is not None else (self.k_proj(hidden_states), self.v_proj(hidden_states))
        k, v = self._heads(k_flat, self.num_kv_heads), self._heads(v_flat, self.num_kv_heads)
        # One token onto a full window writes over the oldest entry in place (no copy of the window).
        ring = regular == 1 and not sinks and cache.can_write_over_oldest()
        if ring:
            keep = None if attention_mask is None else attention_mask[:, 0].to(device=device, dtype=torch.bool)
            return self._decode_into_ring(q, k, v, keep, cache)
        if attention_mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=device)
        else:
            mask = attention_mask.to(device=device, dtype=torch.bool)
        regular_mask = mask[:, sinks:]
        if attention_mask is None:  # every token real: the same positions in two kernels instead of five
            positions = cache.seen_tokens[:, None] + torch.arange(regular, device=device)
        else:
            positions = (cache.seen_tokens[:, None] + regular_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        cos, sin = rotary_cos_sin(positions, self.head_dim, self.rope_theta, q.dtype)
        q_reg = apply_rotary(q[:, :, sinks:], cos, sin)
        k_reg = apply_rotary(k[:, :, sinks:], cos, sin)
        q = torch.cat([q[:, :, :sinks], q_reg], dim=2) if sinks else q_reg
        if self.spike_attention_k is not None:  # W8ASpike attention: spiking queries, int8 keys and values
            q = spike_fake_quantize(q, self.spike_attention_k)
            k = torch.cat([int8_fake_quantize(k[:, :, :sinks]), k[:, :, sinks:]], dim=2) if sinks else k
            k_reg, v = int8_fake_quantize(k_reg), int8_fake_quantize(v)

        cache.sort()  # every call but the in-place ring write wants the entries in index order
        if sinks:
            cache.sink_keys, cache.sink_values = k[:, :, :sinks], v[:, :, :sinks]
        num_sink = 0 if cache.sink_keys is None else cache.sink_keys.shape[2]
        new_index = torch.arange(regular, device=device)
        if cache.key_index is not None and cache.key_index.numel():
            # Continue from the cached indices on the device (no host value enters the graph of a
            # decode step, so a captured step stays right when replayed): the largest index + 1 == length.
            new_index = new_index + (cache.key_index[-1] + 1)  # sorted above
        else:
            new_index = new_index + cache.length

        out = self._attend_band(q, k_reg, v[:, :, sinks:], regular_mask, new_index, cache, sinks, num_sink, attention_mask)
        cache.maybe_masked = cache.maybe_masked or attention_mask is not None
        cache.append(k_reg, v[:, :, sinks:], regular_mask, new_index)
        cache.length += regular
        real = regular if attention_mask is None else regular_mask.long().sum(dim=1)
        cache.seen_tokens = cache.seen_tokens + real
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out), cache

    def _decode_into_ring(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None, cache: RollingKVCache,
    ) -> tuple[torch.Tensor, RollingKVCache]:
        """A decode step onto a full window (``q [B, H, 1, D]``, ``k, v [B, Hkv, 1, D]``, unrotated): the
        rotary rotation and the ring write in one kernel on CUDA (:func:`sb_kernels.rotate_and_write_ring`;
        its PyTorch reference elsewhere; with the W8ASpike attention's query/key/value coding), then the
        one-query attention over the window. The same function as the general path: the ring holds the
        last ``window`` indices, the new one included, so only padding hides keys."""
        batch = q.shape[0]
        compute = torch.float64 if q.dtype == torch.float64 else torch.float32
        inv_freq = _inverse_frequencies(self.head_dim, float(self.rope_theta), compute, q.device)
        q_rot, allowed, cache.seen_tokens = rotate_and_write_ring(
            q[:, :, 0], k[:, :, 0], v[:, :, 0], cache.keys, cache.values, cache.key_mask, cache.key_index,
            cache.seen_tokens, inv_freq, keep=keep, spike_query_k=self.spike_attention_k,
        )
        cache.in_ring_order = True
        cache.maybe_masked = cache.maybe_masked or keep is not None
        cache.length += 1
        out = masked_attention(q_rot, cache.keys, cache.values, allowed[:, None, :], self.attention_backend)
        return self.o_proj(out.transpose(1, 2).reshape(batch, 1, self.num_heads * self.head_dim)), cache

    def _attend_band(
        self, q: torch.Tensor, k_reg: torch.Tensor, v_reg: torch.Tensor, regular_mask: torch.Tensor,
        new_index: torch.Tensor, cache: RollingKVCache, sinks: int, num_sink: int, attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, H, sinks + regular, D]``: every query of the call over ``[sinks | cached | new]`` keys (the
        windowed path when nothing is masked, else query blocks with masks)."""
        batch, device, regular = q.shape[0], q.device, k_reg.shape[2]
        # Key list: [sinks | cached regular | new regular]. Regular keys carry consecutive sequence
        # indices (the cache keeps the newest entries of a contiguous run), starting at first_index.
        parts_k = [t for t in (cache.sink_keys, cache.keys, k_reg) if t is not None]
        parts_v = [t for t in (cache.sink_values, cache.values, v_reg) if t is not None]
        keys, values = torch.cat(parts_k, dim=2), torch.cat(parts_v, dim=2)
        first_index = cache.length - cache.num_entries
        old_index = cache.key_index if cache.key_index is not None else new_index[:0]
        old_mask = cache.key_mask if cache.key_mask is not None else regular_mask[:, :0]
        key_index = torch.cat([old_index, new_index])
        key_valid = torch.cat([old_mask, regular_mask], dim=1)  # [B, n_regular_keys]

        # The unmasked windowed path: nothing padded now or in the cache, no sinks (a decode step keeps the
        # masked path, whose shapes a captured graph expects), no gradient (its fused kernels' log-sum-exp
        # has none; the masked blocks train through SDPA's own backward).
        windowed = (
            self.query_chunk_size is not None and self.window is not None and self.attention_backend == "sdpa"
            and attention_mask is None and not cache.maybe_masked and num_sink == 0 and regular > 1
            and not needs_grad(q, keys, values)
        )
        outputs = []
        if windowed:
            outputs.append(windowed_attention(q, keys, values, self.window))
            block, regular_blocks = regular, range(0)
        else:
            block = regular
            if self.query_chunk_size is not None and self.window is not None:
                block = self.query_chunk_size
            regular_blocks = range(0, regular, max(block, 1))
        if sinks:
            # Sink queries: all sinks, no regular key.
            sink_rows = torch.ones(batch, sinks, num_sink, dtype=torch.bool, device=device)
            outputs.append(
                masked_attention(q[:, :, :sinks], keys[:, :, :num_sink], values[:, :, :num_sink], sink_rows, self.attention_backend)
            )
        for start in regular_blocks:
            stop = min(start + block, regular)
            # Regular keys this block's windows can reach: indices in [i_start - window + 1, i_stop - 1].
            low, high = 0, key_index.shape[0]
            if block < regular:
                low = max(0, cache.length + start - self.window + 1 - first_index)
                high = cache.length + stop - first_index
            allowed = self._allowed(new_index[start:stop], key_index[low:high], key_valid[:, low:high], num_sink)
            block_k = keys[:, :, num_sink + low : num_sink + high]
            block_v = values[:, :, num_sink + low : num_sink + high]
            if num_sink:
                block_k = torch.cat([keys[:, :, :num_sink], block_k], dim=2)
                block_v = torch.cat([values[:, :, :num_sink], block_v], dim=2)
            q_block = q[:, :, sinks + start : sinks + stop]
            outputs.append(masked_attention(q_block, block_k, block_v, allowed, self.attention_backend))
        if not outputs:  # an empty call
            out = q.new_zeros(batch, self.num_heads, 0, self.head_dim)
        else:
            out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
        return out

    def _allowed(self, query_index: torch.Tensor, key_index: torch.Tensor, key_valid: torch.Tensor, num_sink: int) -> torch.Tensor:
        """``[B, Lq, num_sink + n]`` bool: which keys (sinks first, then regular keys) each regular query sees.

        A query at sequence index ``i`` sees every sink and the valid regular keys ``j`` with
        ``i - window < j <= i``; a padded query also sees itself, so that its row is never empty.
        """
        distance = query_index[:, None] - key_index[None, :]  # [Lq, n]
        in_window = distance >= 0
        if self.window is not None:
            in_window &= distance < self.window
        allowed = in_window[None] & key_valid[:, None, :]
        allowed |= distance[None] == 0
        if num_sink:
            sink_cols = torch.ones(allowed.shape[0], allowed.shape[1], num_sink, dtype=torch.bool, device=allowed.device)
            allowed = torch.cat([sink_cols, allowed], dim=2)
        return allowed

    def extra_repr(self) -> str:
        return (
            f"window={self.window}, rope_theta={self.rope_theta}, num_sinks={self.num_sinks}, "
            f"attention_backend={self.attention_backend}, query_chunk_size={self.query_chunk_size}"
            + (f", spike_attention_k={self.spike_attention_k:g}" if self.spike_attention_k is not None else "")
        )
