"""sb_layers against independent float64 references written from the facts (sections 4 and 5).

Each reference below is a plain re-statement of the released architecture (not a call into the layer's
own helpers), evaluated on random shapes, head layouts and weights: the GLA layer of SpikingBrain-7B
(and its merged-gate and 76B tied-key variants), sliding-window attention with sinks and left padding,
and hybrid blocks fed in random pieces.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sb_layers import (
    GLAState,
    GLUMLP,
    SpikeCoding,
    GatedLinearAttention,
    HybridBlock,
    MixerCache,
    ParallelMixer,
    SinkTokens,
    SlidingWindowAttention,
    upcycle,
)
from strategies import mixer_with_state


pytestmark = pytest.mark.usefixtures("float64_default")  # exactness claims are checked in float64 (tests/conftest.py)


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn afresh (norm weights and biases included), so no term hides behind a 1 or 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim > 1 else 1.0))


head_layouts = st.tuples(st.integers(1, 3), st.integers(1, 3), st.sampled_from([2, 4, 6]))  # (Hkv, groups, D)


def gla_reference(layer: GatedLinearAttention, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Facts section 4, GLA layer, token by token in float64."""
    batch, length, _ = x.shape
    h, hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    group = h // hkv
    feature = torch.relu if layer.feature_map == "relu" else torch.sigmoid
    q = feature(layer.q_proj(x)).view(batch, length, h, d)
    k_logits = layer.k_proj(x).view(batch, length, hkv, d)
    k = feature(k_logits)
    v = layer.v_proj(x).view(batch, length, hkv, d)
    if layer.gate == "low_rank":
        gk = F.logsigmoid(layer.gk_proj[1](layer.gk_proj[0](x))).view(batch, length, hkv, d) / 16.0
    elif layer.gate == "merged":
        gk = F.logsigmoid(layer.gk_proj(x)).view(batch, length, hkv, d) / 16.0
    else:
        gk = torch.log1p(-k)  # 76B: decay g = 1 - k
    S = torch.zeros(batch, h, d, d) if state is None else state.clone()
    out = torch.zeros(batch, length, h, d)
    for t in range(length):
        for head in range(h):
            j = head // group  # GQA: query head `head` reads key/value head `j`
            S[:, head] = gk[:, t, j].exp()[:, :, None] * S[:, head] + k[:, t, j, :, None] * v[:, t, j, None, :]
            out[:, t, head] = torch.einsum("bk,bkv->bv", q[:, t, head] * d**-0.5, S[:, head])
    rms = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + layer.g_norm.eps) * layer.g_norm.weight
    return layer.o_proj(rms.reshape(batch, length, h * d)), S


@given(
    seed=st.integers(0, 10_000), layout=head_layouts, batch=st.integers(1, 2), length=st.integers(1, 9),
    chunk=st.integers(1, 5), with_state=st.booleans(),
    variant=st.sampled_from(["low_rank", "merged", "tied_key"]), mode=st.sampled_from(["chunk", "recurrent"]),
)
def test_gla_layer_equals_the_released_architecture(seed, layout, batch, length, chunk, with_state, variant, mode):
    hkv, groups, d = layout
    h = hkv * groups
    hidden = h * d + (seed % 3)  # head_dim given explicitly: hidden need not be H * D
    layer = GatedLinearAttention(
        hidden, h, hkv, head_dim=d, gate=variant, feature_map="sigmoid" if variant == "tied_key" else "relu",
        mode=mode, chunk_size=chunk,
    )
    randomize_(layer, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, length, hidden, generator=g)
    state = torch.randn(batch, h, d, d, generator=g) if with_state else None
    out, final = mixer_with_state(layer, x, state=None if state is None else GLAState(state))
    ref_out, ref_final = gla_reference(layer, x, state)
    torch.testing.assert_close(out, ref_out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(final.recurrent, ref_final, rtol=1e-9, atol=1e-9)


def swa_reference(layer: SlidingWindowAttention, x: torch.Tensor, mask: torch.Tensor, sinks: int) -> torch.Tensor:
    """Facts sections 4-5: RoPE (half rotation) at real-token positions, GQA, window of `window` keys
    including self, sinks unrotated and seen by everyone, sinks seeing only sinks; padded keys hidden."""
    batch, length, _ = x.shape
    h, hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q = layer.q_proj(x).view(batch, length, h, d)
    k = layer.k_proj(x).view(batch, length, hkv, d)
    v = layer.v_proj(x).view(batch, length, hkv, d)
    real = mask.clone()
    real[:, :sinks] = 0
    positions = (real.cumsum(1) - 1).clamp(min=0).to(torch.float64)  # rotary position of each real token
    inv_freq = layer.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions[..., None] * inv_freq
    cos, sin = torch.cat([angles.cos()] * 2, -1)[:, :, None], torch.cat([angles.sin()] * 2, -1)[:, :, None]

    def rope(t):
        first, second = t[..., : d // 2], t[..., d // 2 :]
        rotated = t * cos + torch.cat([-second, first], -1) * sin
        return torch.cat([t[:, :sinks], rotated[:, sinks:]], 1)  # sinks are not rotated

    q, k = rope(q), rope(k)
    out = torch.zeros(batch, length, h, d)
    for b in range(batch):
        for i in range(length):
            if i >= sinks and not mask[b, i]:
                continue  # padded queries: output unspecified
            if i < sinks:
                keys = list(range(sinks))
            else:
                keys = list(range(sinks)) + [
                    j for j in range(sinks, i + 1) if mask[b, j] and (layer.window is None or i - j < layer.window)
                ]
            for head in range(h):
                j_head = head // (h // hkv)
                scores = torch.stack([q[b, i, head] @ k[b, j, j_head] for j in keys]) / math.sqrt(d)
                out[b, i, head] = scores.softmax(0) @ v[b, keys, j_head]
    return layer.o_proj(out.reshape(batch, length, h * d))


@given(
    seed=st.integers(0, 10_000), layout=head_layouts, batch=st.integers(1, 2), length=st.integers(1, 10),
    window=st.one_of(st.none(), st.integers(1, 5)), sinks=st.integers(0, 2), pads=st.lists(st.integers(0, 4), min_size=2, max_size=2),
    theta=st.sampled_from([10.0, 1e4, 1e6]),
)
def test_swa_equals_dense_softmax_with_sinks_and_left_padding(seed, layout, batch, length, window, sinks, pads, theta):
    hkv, groups, d = layout
    h = hkv * groups
    layer = SlidingWindowAttention(h * d, h, hkv, window=window, rope_theta=theta, num_sinks=sinks)
    randomize_(layer, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, sinks + length, h * d, generator=g)
    mask = torch.ones(batch, sinks + length, dtype=torch.long)
    for b in range(batch):
        mask[b, sinks : sinks + min(pads[b], length - 1)] = 0  # left padding after the sinks, one real token kept
    out, cache = mixer_with_state(layer, x, mask)
    ref = swa_reference(layer, x, mask, sinks)
    keep = mask.bool()
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-9, atol=1e-9)
    assert cache.num_entries <= (window or length) and (sinks == 0 or cache.sink_keys.shape[2] == sinks)
    # decoding the same sequence token by token (sinks in the first call) gives the same real outputs
    cache, steps = None, []
    for start, stop in [(0, sinks + 1)] + [(t, t + 1) for t in range(sinks + 1, sinks + length)]:
        step, cache = mixer_with_state(layer, x[:, start:stop], mask[:, start:stop], cache)
        steps.append(step)
    torch.testing.assert_close(torch.cat(steps, 1)[keep], out[keep], rtol=1e-9, atol=1e-9)


def test_sink_tokens_prepend_before_left_padding_and_reference_agrees():
    torch.manual_seed(11)
    sink_tokens = SinkTokens(2, 8)
    layer = SlidingWindowAttention(8, 2, 1, window=2, num_sinks=2)
    randomize_(layer, 11)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    h, m = sink_tokens.prepend(x, mask)
    out = layer(h, m, MixerCache(1))
    keep = m.bool()
    torch.testing.assert_close(out[keep], swa_reference(layer, h, m, 2)[keep])


@settings(max_examples=15)  # five block kinds share one budget: each example builds and runs a block 3+ times
@given(
    kind=st.sampled_from(["gla", "swa", "full", "parallel_swa", "parallel_full"]), seed=st.integers(0, 1000),
    cuts=st.lists(st.integers(1, 12), max_size=3), pad=st.integers(0, 3),
)
def test_hybrid_blocks_stream_in_random_pieces(kind, seed, cuts, pad):
    """Inter-layer blocks (GLA, SWA, full attention) and intra-layer parallel blocks with an upcycled MoE:
    one call == the same left-padded sequence fed in pieces with the state carried."""
    torch.manual_seed(seed)
    window = None if kind.endswith("full") else 3
    gla = GatedLinearAttention(16, 4, 2, chunk_size=3)
    swa = SlidingWindowAttention(16, 4, 2, window=window, rope_theta=100.0)
    if kind == "gla":
        mixer, mlp = gla, GLUMLP(16, 24)
    elif kind in ("swa", "full"):
        mixer, mlp = swa, GLUMLP(16, 24)
    else:
        mixer, mlp = ParallelMixer(gla, swa), upcycle(GLUMLP(16, 24), 4, 1, 1, router="sigmoid")
    block = HybridBlock(16, mixer, mlp)
    randomize_(block, seed)
    x = torch.randn(2, 13, 16)
    mask = torch.ones(2, 13)
    mask[1, :pad] = 0
    whole = block(x, mask, MixerCache(1))
    bounds = [0, *sorted(set(cuts)), 13]
    cache = MixerCache(1)
    pieces = [block(x[:, a:b], mask[:, a:b], cache) for a, b in zip(bounds, bounds[1:])]
    keep = mask.bool()
    torch.testing.assert_close(torch.cat(pieces, 1)[keep], whole[keep], rtol=1e-9, atol=1e-9)
    # the padded sample's real tokens equal the same sample alone
    alone = block(x[1:, pad:], None, MixerCache(1))
    torch.testing.assert_close(whole[1, pad:], alone[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
@pytest.mark.parametrize("codec", ["ternary", "bitwise"])
def test_spiking_blocks_spike_mode_equals_count_mode(kind, codec):
    """A whole block (mixer, MLP or upcycled MoE, every projection spike-coded with int8 weights, q/k
    spike trains in the GLA): the event-driven form equals the count form, outputs and states."""

    def build(mode):
        torch.manual_seed(3)
        coding = SpikeCoding(k=3.0, codec=codec, mode=mode, weight_bits=8, group_size=8)
        gla = GatedLinearAttention(16, 4, 2, coding=coding, spike_qk=True, chunk_size=3)
        swa = SlidingWindowAttention(16, 4, 2, window=3, coding=coding)
        mixer = {"gla": gla, "swa": swa, "parallel": ParallelMixer(gla, swa)}[kind]
        mlp = upcycle(GLUMLP(16, 24, coding=coding), 4, 2, 1) if kind == "parallel" else GLUMLP(16, 24, coding=coding)
        return HybridBlock(16, mixer, mlp)

    count, spike = build("count"), build("spike")
    spike.load_state_dict(count.state_dict())
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        (out_count, state_count), (out_spike, state_spike) = mixer_with_state(count, x), mixer_with_state(spike, x)
    torch.testing.assert_close(out_spike, out_count, rtol=1e-9, atol=1e-9)
    gla_count = state_count if kind == "gla" else (state_count.linear if kind == "parallel" else None)
    gla_spike = state_spike if kind == "gla" else (state_spike.linear if kind == "parallel" else None)
    if gla_count is not None:
        torch.testing.assert_close(gla_spike.recurrent, gla_count.recurrent, rtol=1e-9, atol=1e-9)
