"""GLA and SWA: forms agree, streaming equals one call, references, padding, sinks, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sb_layers import GatedLinearAttention, RollingKVCache, SlidingWindowAttention, SpikeCoding, gla_chunked, gla_recurrent



@pytest.fixture(autouse=True)
def float64_default():
    """Exactness claims are checked in float64; restore the default for the other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def random_gla_inputs(seed, batch, heads, length, dk, dv, strong_decay=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, length, dk, generator=g).relu()
    k = torch.randn(batch, heads, length, dk, generator=g).relu()
    v = torch.randn(batch, heads, length, dv, generator=g)
    gk = F.logsigmoid(torch.randn(batch, heads, length, dk, generator=g) * (8 if strong_decay else 1))
    state = torch.randn(batch, heads, dk, dv, generator=g)
    return q, k, v, gk, state


@given(
    seed=st.integers(0, 10_000), length=st.integers(1, 40), chunk=st.integers(1, 17),
    strong=st.booleans(), with_state=st.booleans(),
)
def test_recurrent_gla_equals_chunked(seed, length, chunk, strong, with_state):
    q, k, v, gk, state = random_gla_inputs(seed, 2, 2, length, 4, 3, strong)
    state = state if with_state else None
    o1, s1 = gla_recurrent(q, k, v, gk, 0.5, state)
    o2, s2 = gla_chunked(q, k, v, gk, 0.5, state, chunk_size=chunk)
    torch.testing.assert_close(o2, o1, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s2, s1, rtol=1e-10, atol=1e-10)


def test_gla_recurrence_against_explicit_sum():
    """o_t = scale q_t sum_{s<=t} diag(prod_{s<r<=t} exp(g_r)) ... written as a plain double loop."""
    q, k, v, gk, _ = random_gla_inputs(3, 1, 1, 6, 3, 2)
    o, _ = gla_recurrent(q, k, v, gk, 0.7)
    for t in range(6):
        expected = torch.zeros(2)
        for s in range(t + 1):
            decay = gk[0, 0, s + 1 : t + 1].sum(0).exp()
            expected += (0.7 * q[0, 0, t] * decay * k[0, 0, s]).sum() * v[0, 0, s]
        torch.testing.assert_close(o[0, 0, t], expected)


def make_gla(**kwargs):
    torch.manual_seed(0)
    return GatedLinearAttention(24, num_heads=4, num_kv_heads=2, **kwargs)


@pytest.mark.parametrize("options", [dict(), dict(gate="merged"), dict(gate="tied_key", feature_map="sigmoid"),
                                     dict(coding=SpikeCoding(), spike_qk=True)])
@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(1, 19), max_size=3))
def test_gla_layer_in_pieces_equals_one_call(options, seed, cuts):
    layer = make_gla(chunk_size=4, **options)
    x = torch.randn(2, 20, 24, generator=torch.Generator().manual_seed(seed))
    whole, final = layer(x)
    bounds = [0, *sorted(set(cuts)), 20]
    state, outs = None, []
    for a, b in zip(bounds, bounds[1:]):
        out, state = layer(x[:, a:b], state=state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole)
    torch.testing.assert_close(state, final)
    layer.mode = "recurrent"
    torch.testing.assert_close(layer(x)[0], whole)


def test_gla_left_padding_leaves_real_tokens_unchanged():
    layer = make_gla()
    x = torch.randn(2, 9, 24)
    mask = torch.ones(2, 9)
    mask[1, :4] = 0
    padded, _ = layer(x, attention_mask=mask)
    alone, _ = layer(x[1:, 4:])
    torch.testing.assert_close(padded[1, 4:], alone[0])


def test_gla_parameter_names_follow_the_release():
    names = set(dict(make_gla().named_parameters()))
    assert {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias", "gk_proj.0.weight", "gk_proj.1.weight",
            "gk_proj.1.bias", "g_norm.weight", "o_proj.weight"} == names


def test_gla_gradients_reach_every_parameter_through_spiking_forms():
    layer = make_gla(coding=SpikeCoding(mode="spike", weight_bits=8, group_size=8), spike_qk=True)
    out, _ = layer(torch.randn(2, 5, 24))
    out.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def dense_swa_reference(layer, x, window):
    """Masked softmax attention written out: RoPE, GQA, window of `window` keys including self."""
    batch, length, _ = x.shape
    h, hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q = layer.q_proj(x).view(batch, length, h, d)
    k = layer.k_proj(x).view(batch, length, hkv, d).repeat_interleave(h // hkv, 2)
    v = layer.v_proj(x).view(batch, length, hkv, d).repeat_interleave(h // hkv, 2)
    pos = torch.arange(length, dtype=torch.float64)
    freq = layer.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.cat([pos[:, None] * freq, pos[:, None] * freq], -1)[:, None]

    def rope(t):
        a, b = t[..., : d // 2], t[..., d // 2 :]
        return t * ang.cos() + torch.cat([-b, a], -1) * ang.sin()

    q, k = rope(q), rope(k)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
    i, j = torch.arange(length)[:, None], torch.arange(length)[None]
    allowed = (j <= i) & ((i - j < window) if window else True)
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(batch, length, h * d)
    return layer.o_proj(out)


@pytest.mark.parametrize("window", [1, 3, 7, None])
def test_swa_equals_dense_masked_softmax(window):
    torch.manual_seed(1)
    layer = SlidingWindowAttention(24, 4, 2, window=window, rope_theta=50.0)
    x = torch.randn(2, 12, 24)
    torch.testing.assert_close(layer(x)[0], dense_swa_reference(layer, x, window))


@given(seed=st.integers(0, 1000), window=st.integers(1, 6), cuts=st.lists(st.integers(1, 15), max_size=4))
def test_swa_streaming_across_the_window_boundary(seed, window, cuts):
    torch.manual_seed(seed)
    layer = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0)
    x = torch.randn(2, 16, 16)
    whole, _ = layer(x)
    bounds = [0, *sorted(set(cuts)), 16]
    cache, outs = None, []
    for a, b in zip(bounds, bounds[1:]):
        out, cache = layer(x[:, a:b], cache=cache)
        outs.append(out)
        assert cache.num_entries <= window
    torch.testing.assert_close(torch.cat(outs, 1), whole)


def test_swa_left_padding_leaves_real_tokens_unchanged():
    torch.manual_seed(2)
    layer = SlidingWindowAttention(16, 2, 2, window=4)
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10)
    mask[0, :3] = 0
    padded, _ = layer(x, attention_mask=mask)
    alone, _ = layer(x[:1, 3:])
    torch.testing.assert_close(padded[0, 3:], alone[0])
    assert torch.isfinite(padded).all()


def test_sinks_are_seen_by_every_token_and_see_only_sinks():
    torch.manual_seed(3)
    layer = SlidingWindowAttention(16, 2, 2, window=2, num_sinks=3)
    x = torch.randn(1, 12, 16)
    out, cache = layer(x)
    # sinks see only sinks: changing regular tokens leaves sink outputs unchanged
    y = x.clone()
    y[:, 3:] = torch.randn(1, 9, 16)
    torch.testing.assert_close(layer(y)[0][:, :3], out[:, :3])
    # sinks attend each other without a causal mask: the first sink depends on the last one
    z = x.clone()
    z[:, 2] += 1.0
    assert not torch.allclose(layer(z)[0][:, 0], out[:, 0])
    # the last token is far beyond the window from the sinks, yet depends on them
    assert not torch.allclose(layer(z)[0][:, -1], out[:, -1])
    assert cache.sink_keys.shape[2] == 3 and cache.num_entries == 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GatedLinearAttention(24, 5), "num_heads"),
        (lambda: GatedLinearAttention(24, 4, 3), "num_kv_heads"),
        (lambda: make_gla()(torch.randn(1, 3, 23)), "hidden_states"),
        (lambda: make_gla()(torch.randn(1, 3, 24), attention_mask=torch.ones(1, 4)), "attention_mask"),
        (lambda: make_gla()(torch.randn(1, 3, 24), state=torch.zeros(1, 4, 6, 5)), "state"),
        (lambda: gla_chunked(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], 1.0, chunk_size=0), "chunk_size"),
        (lambda: SlidingWindowAttention(16, 2, window=0), "window"),
        (lambda: SlidingWindowAttention(16, 3), "num_heads"),
        (lambda: SlidingWindowAttention(16, 2)(torch.randn(1, 3, 16), attention_mask=torch.ones(2, 3)), "attention_mask"),
        (lambda: SlidingWindowAttention(16, 2, window=3)(torch.randn(1, 3, 16), cache=RollingKVCache(4)), "window"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
