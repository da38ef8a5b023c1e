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

import torch
from torch import nn

from sb_kernels import int8_fake_quantize, spike_fake_quantize
from sb_kernels.dispatch import needs_grad
from sb_neurons.validation import check_int, check_positive

from ._checks import check_attention_mask, check_head_layout, check_hidden_states
from ._merged import merged_linear_outputs
from .attention import AttentionBackend, masked_attention, windowed_attention
from .kv_cache import RollingKVCache
from .mixer_cache import MixerCache, check_layer_idx, mix_on_cache
from .rotary import _inverse_frequencies, apply_rotary, rotary_cos_sin
from .spiking_linear import SpikeCoding, make_linear


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
        spike_query_k: None (default) attends in floating point; a threshold divisor ``k > 0`` runs
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
        spike_query_k: float | None = None,
        device=None,
        dtype=None,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = check_layer_idx(layer_idx)
        if spike_query_k is not None:
            check_positive(spike_query_k, "spike_query_k")
        self.spike_query_k = None if spike_query_k is None else float(spike_query_k)
        if attention_backend not in ("sdpa", "flex"):
            raise ValueError(f"attention_backend must be 'sdpa' or 'flex', got {attention_backend!r}")
        if query_chunk_size is not None:
            check_int(query_chunk_size, "query_chunk_size (None: one chunk)", minimum=1)
        self.attention_backend = attention_backend
        self.query_chunk_size = query_chunk_size
        num_kv_heads, head_dim = check_head_layout(hidden_size, num_heads, num_kv_heads, head_dim)
        check_positive(rope_theta, "rope_theta")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
        if window is not None:
            check_int(window, "window (None: full attention)", minimum=1)
        check_int(num_sinks, "num_sinks", minimum=0)
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
            raise TypeError(f"the cache entry of SWA layer {self.layer_idx} must be a RollingKVCache, got {type(cache).__name__}")
        elif cache.window != self.window:
            raise ValueError(f"cache window {cache.window} differs from the layer's window {self.window}")
        cache.begin_call(batch, device)

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
        if self.spike_query_k is not None:  # W8ASpike attention: spiking queries, int8 keys and values
            q = spike_fake_quantize(q, self.spike_query_k)
            k = torch.cat([int8_fake_quantize(k[:, :, :sinks]), k[:, :, sinks:]], dim=2) if sinks else k
            k_reg, v = int8_fake_quantize(k_reg), int8_fake_quantize(v)

        cache.sort()  # every call but the in-place ring write wants the entries in index order
        if sinks:
            cache.set_sinks(k[:, :, :sinks], v[:, :, :sinks])
        num_sink = 0 if cache.sink_keys is None else cache.sink_keys.shape[2]
        new_index = cache.next_indices(regular, device)

        out = self._attend_band(q, k_reg, v[:, :, sinks:], regular_mask, new_index, cache, sinks, num_sink, attention_mask)
        real = regular if attention_mask is None else regular_mask.long().sum(dim=1)
        cache.append(k_reg, v[:, :, sinks:], regular_mask, new_index, real=real, masked=attention_mask is not None)
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
        q_rot, allowed = cache.write_ring(q[:, :, 0], k[:, :, 0], v[:, :, 0], inv_freq, keep=keep, spike_query_k=self.spike_query_k)
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
            + (f", spike_query_k={self.spike_query_k:g}" if self.spike_query_k is not None else "")
        )
