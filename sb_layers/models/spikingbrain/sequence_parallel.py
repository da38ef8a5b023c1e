"""Sequence-parallel prefill of a SpikingBrain model over the ranks of a ``torch.distributed`` group.

The prompt ``[B, L]`` is cut into contiguous shards, one per rank (sizes differ by at most one token when
``L`` is not divisible by the world size); each rank runs every layer on its shard and the ranks exchange
only what crosses a shard boundary:

- GLA layers (exact): each rank runs its shard from a zero state, giving its outputs ``o_local``, its final
  state ``S_local`` and its total per-channel log decay ``G = sum_t g_t`` (padded steps have ``g = 0``).
  The small per-layer pairs ``(S_local, G)`` are all-gathered and every rank combines them by the prefix
  scan ``S_r = exp(G_r) * S_{r-1} + S_local_r``; the state entering rank ``r`` is ``S_{r-1}``, and its
  outputs are corrected with it before the output norm: ``o_t += scale * (q_t * exp(b_t)) S_in`` with
  ``b_t`` the inclusive cumulative log decay of the shard up to ``t``. This is the recurrence's own
  identity, so the outputs and the final state equal the single-device ones to rounding.
- SWA layers: a query attends the ``window`` positions up to itself, so a rank needs the last ``window``
  positions before its shard (a halo, possibly spanning several previous ranks when shards are shorter
  than the window). The ranks all-gather the tails of their layer inputs (``min(window, shard)`` rows);
  each rank recomputes the halo's rotated keys and values into a :class:`RollingKVCache` whose rotary
  position (``seen_tokens``, real tokens before the halo) and sequence index (``length``) are the halo's
  global ones, then runs its shard on it: the layer's streaming identity makes this the single-device
  computation. ``window=None`` (full attention) takes every earlier position as its halo.
- Left padding: the mask is cut with the tokens; rotary positions count the real tokens of the earlier
  shards (from the full mask every rank holds), padded GLA steps leave the state unchanged.

Result: the logits and a :class:`SpikingBrainCache` equal to those of a single-device prefill of the whole
sequence (within floating-point rounding; float64 agrees to ~1e-12), so generation continues from the
cache with the normal model. The GLA states are known to every rank after the scan; the SWA windows end on
the last rank and are sent to rank 0 (``cache_on="rank0"``) or broadcast to every rank (``"all"``).

Communication per layer and rank: GLA, one all-gather of ``B * H * Dk * (Dv + 1)`` numbers; SWA, one
all-gather of ``B * min(window, shard) * hidden`` numbers (the layer inputs of the tails).

Supported: the inter-layer variant (SpikingBrain-7B, float or W8ASpike, any GLA mode). The intra-layer
(76B-style) variant, whose sink tokens and full-attention layers need the whole prefix, raises.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist

from sb_layers.gla_state import GLAState
from sb_layers.linear_attention import GatedLinearAttention
from sb_layers.kv_cache import RollingKVCache
from sb_layers.sliding_window import SlidingWindowAttention
from sb_neurons.validation import check_int

from .cache import SpikingBrainCache
from .modeling import SpikingBrainForCausalLM

LogitsKind = Literal["last", "shard", "all"]
CacheOn = Literal["all", "rank0"]


def shard_bounds(length: int, world_size: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of each rank's contiguous shard of ``length`` positions: the first ``length %
    world_size`` ranks hold one more position."""
    check_int(length, "length", minimum=1)
    check_int(world_size, "world_size", minimum=1)
    if length < world_size:
        raise ValueError(f"the sequence ({length} positions) must have at least one position per rank ({world_size} ranks)")
    base, extra = divmod(length, world_size)
    bounds, start = [], 0
    for rank in range(world_size):
        stop = start + base + (rank < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def _all_gather(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    world = dist.get_world_size(group)
    if world == 1:
        return [tensor]
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor, group=group)
    return parts


def _gla_layer(layer: GatedLinearAttention, x: torch.Tensor, mask: torch.Tensor | None, group) -> tuple[torch.Tensor, GLAState]:
    """One GLA layer on this rank's shard ``x``: ``(output [B, L_r, hidden], the state after the whole
    sequence)``, the same on every rank."""
    layer._check_call(x, mask, None)
    inputs = layer._recurrence_inputs(x, *layer._projections(x), mask)
    o, local_state = layer._recurrence(layer.kernel_for(x, decode=False), inputs, None)  # a recurrence, with its inputs
    compute = local_state.dtype
    log_decay = inputs["gk"].to(compute)  # [B, H, L_r, Dk], zero on padded steps
    total = log_decay.sum(dim=2)  # [B, H, Dk]
    states, totals = _all_gather(local_state, group), _all_gather(total, group)
    rank = dist.get_rank(group)
    incoming = final = torch.zeros_like(local_state)
    for index, (state, decay) in enumerate(zip(states, totals)):
        if index == rank:
            incoming = final
        final = final * decay.exp().unsqueeze(-1) + state
    if rank > 0:
        # The incoming state's contribution: o_t += (scale q_t * exp(b_t)) S_in, b_t inclusive.
        q = inputs["q"].to(compute) * layer.scale * log_decay.cumsum(dim=2).exp()
        o = (o.to(compute) + torch.einsum("bhtk,bhkv->bhtv", q, incoming)).to(o.dtype)
    return layer._output(o, x), GLAState(final)


def _swa_layer(
    layer: SlidingWindowAttention, x: torch.Tensor, mask: torch.Tensor | None, full_mask: torch.Tensor,
    bounds: list[tuple[int, int]], group,
) -> tuple[torch.Tensor, RollingKVCache]:
    """One SWA layer on this rank's shard ``x``, with the halo of earlier positions gathered from the
    tails of the other ranks' inputs: ``(output, this rank's window after the shard)``."""
    rank = dist.get_rank(group)
    start, stop = bounds[rank]
    sizes = [b - a for a, b in bounds]
    tail = max(sizes) if layer.window is None else min(layer.window, max(sizes))
    mine = x[:, -tail:] if x.shape[1] >= tail else torch.cat([x.new_zeros(x.shape[0], tail - x.shape[1], x.shape[2]), x], 1)
    tails = _all_gather(mine, group)  # each rank's last `tail` rows (zero rows in front of a short shard)
    halo_start = 0 if layer.window is None else max(0, start - layer.window)
    pieces = []  # positions [halo_start, start) from the tails of the earlier ranks
    for index in range(rank):
        a, b = bounds[index]
        low = max(a, halo_start, b - tail)
        if low < b:
            pieces.append(tails[index][:, tail - (b - low):])
    cache = RollingKVCache(layer.window, seen_tokens=full_mask[:, :halo_start].sum(dim=1).to(torch.int64), length=halo_start)
    if pieces:
        halo = torch.cat(pieces, dim=1)
        halo_mask = None if mask is None else full_mask[:, halo_start:start]
        layer._mix(halo, halo_mask, cache)  # the halo's rotated keys and values at their global positions
    return layer._mix(x, mask, cache)


@torch.no_grad()
def sequence_parallel_prefill(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    *,
    logits: LogitsKind = "last",
    cache_on: CacheOn = "all",
) -> tuple[torch.Tensor, SpikingBrainCache | None]:
    """Prefill ``input_ids`` with its positions split over the ranks of ``group``; every rank calls it.

    Args:
        model: a :class:`SpikingBrainForCausalLM` of the inter-layer variant in eval mode, the same weights
            on every rank (on each rank's device).
        input_ids: ``[B, L]`` integer token ids, the whole prompt, identical on every rank (each rank embeds
            and runs only its shard, ``shard_bounds(L, world_size)[rank]``); ``L >= world_size``.
        attention_mask: ``[B, L]`` 0/1 (left padding), identical on every rank, or None.
        group: the process group (None: the default group, ``torch.distributed.init_process_group`` first).
        logits: ``"last"`` (default): the logits of the last position ``[B, 1, vocab]`` on every rank (what
            generation needs); ``"shard"``: this rank's positions ``[B, L_r, vocab]``; ``"all"``: every
            position ``[B, L, vocab]`` gathered on every rank (memory ``L * vocab``: for checks).
        cache_on: ``"all"`` (default): every rank returns the whole :class:`SpikingBrainCache`;
            ``"rank0"``: rank 0 returns it, the other ranks None.

    Returns ``(logits, cache)``: both equal to ``model(input_ids, attention_mask, use_cache=True)``'s (its
    logits at the positions asked for, its cache), within floating-point rounding. Continue generating
    from the cache with ``model(next_ids, attention_mask=..., cache=cache)`` or ``model.generate``.
    """
    if not isinstance(model, SpikingBrainForCausalLM):
        raise TypeError(f"model must be a SpikingBrainForCausalLM, got {type(model).__name__}")
    if model.training:
        raise ValueError("model must be in eval mode (model.eval()): sequence-parallel prefill is inference only")
    config = model.config
    if config.variant != "inter_layer":
        raise ValueError(
            f"sequence-parallel prefill supports the inter-layer variant (SpikingBrain-7B); got variant={config.variant!r} "
            "(sink tokens and full-attention layers need the whole prefix on every rank)"
        )
    if logits not in ("last", "shard", "all"):
        raise ValueError(f"logits must be 'last', 'shard' or 'all', got {logits!r}")
    if cache_on not in ("all", "rank0"):
        raise ValueError(f"cache_on must be 'all' or 'rank0', got {cache_on!r}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized: call torch.distributed.init_process_group first (e.g. under torchrun)")
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"input_ids must be an integer tensor [B, L], got {getattr(input_ids, 'dtype', type(input_ids))} {tuple(getattr(input_ids, 'shape', ()))}")
    batch, length = input_ids.shape
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    bounds = shard_bounds(length, world)
    base = model.model
    device = base.embeddings.weight.device
    full_mask = base._regular_mask(attention_mask, batch, length, device)
    # The layers see the mask only where the single-device prefill would pass it (some position padded).
    masked = attention_mask is not None and not bool(full_mask.all())
    start, stop = bounds[rank]
    mask = full_mask[:, start:stop] if masked else None

    hidden = base.embeddings(input_ids[:, start:stop].to(device))
    cache = SpikingBrainCache(len(base.layers))
    windows: dict[int, SlidingWindowAttention] = {}  # the layers whose entry ends on the last rank
    for index, block in enumerate(base.layers):
        mixer, x = block.attn, block.attn_norm(hidden)
        if isinstance(mixer, GatedLinearAttention):
            mixed, state = _gla_layer(mixer, x, mask, group)
        elif isinstance(mixer, SlidingWindowAttention):
            mixed, state = _swa_layer(mixer, x, mask, full_mask, bounds, group)
            windows[index] = mixer
        else:
            raise TypeError(f"layer {index}: unsupported mixer {type(mixer).__name__}")
        cache.states[index] = state
        hidden = block._feed_forward(mixed, hidden)

    last = world - 1
    if logits == "last":
        out = model.lm_head(base.norm(hidden[:, -1:])) if rank == last else None
        out = _broadcast(out, last, (batch, 1, config.vocab_size), model.lm_head.weight, group)
    else:
        out = model.lm_head(base.norm(hidden))
        if logits == "all":
            out = _gather_sequence(out, bounds, group)

    # The windows end on the last rank; the GLA states are already everywhere.
    for index, layer in windows.items():
        cache.states[index] = _window_to(cache.states[index], full_mask, length, last, cache_on, group, layer)
    if cache_on == "rank0" and rank != 0:
        return out, None
    cache.advance(full_mask)
    return out, cache


def _broadcast(tensor: torch.Tensor | None, source: int, shape, like: torch.Tensor, group) -> torch.Tensor:
    if dist.get_world_size(group) == 1:
        return tensor
    if tensor is None:
        tensor = like.new_empty(shape)
    dist.broadcast(tensor.contiguous(), src=dist.get_global_rank(group, source) if group is not None else source, group=group)
    return tensor


def _gather_sequence(shard: torch.Tensor, bounds: list[tuple[int, int]], group) -> torch.Tensor:
    """``[B, L, ...]`` from every rank's ``[B, L_r, ...]`` (shorter shards padded for the all-gather)."""
    longest = max(b - a for a, b in bounds)
    padded = torch.cat([shard, shard.new_zeros(shard.shape[0], longest - shard.shape[1], *shard.shape[2:])], 1)
    parts = _all_gather(padded, group)
    return torch.cat([part[:, : b - a] for part, (a, b) in zip(parts, bounds)], dim=1)


def _window_to(
    window: RollingKVCache, full_mask: torch.Tensor, length: int, last: int, cache_on: CacheOn, group,
    layer: SlidingWindowAttention,
) -> RollingKVCache | None:
    """The last rank's window after the whole sequence, on every rank (``"all"``) or on rank 0."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if world == 1:
        return window
    entries = length if layer.window is None else min(layer.window, length)
    shape = (full_mask.shape[0], layer.num_kv_heads, entries, layer.head_dim)
    like = layer.k_proj.weight
    keys = window.keys if rank == last else None
    values = window.values if rank == last else None
    global_rank = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
    if cache_on == "all":
        keys = _broadcast(keys, last, shape, like, group)
        values = _broadcast(values, last, shape, like, group)
    else:
        if last == 0 or rank not in (0, last):
            return window if rank == last == 0 else None
        if rank == last:
            dist.send(keys.contiguous(), dst=global_rank(0), group=group)
            dist.send(values.contiguous(), dst=global_rank(0), group=group)
            return None
        keys, values = like.new_empty(shape), like.new_empty(shape)
        dist.recv(keys, src=global_rank(last), group=group)
        dist.recv(values, src=global_rank(last), group=group)
    if rank == last:
        return window
    # Everything else of the window follows from the mask: the last `entries` positions.
    device = full_mask.device
    return RollingKVCache(
        layer.window, keys=keys, values=values, key_mask=full_mask[:, length - entries :].to(torch.bool),
        key_index=torch.arange(length - entries, length, device=device),
        seen_tokens=full_mask.sum(dim=1).to(torch.int64), length=length, maybe_masked=window.maybe_masked,
    )


__all__ = ["sequence_parallel_prefill", "shard_bounds"]
