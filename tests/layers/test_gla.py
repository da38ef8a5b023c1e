"""Gated linear attention: recurrent == chunked, streaming == one call, spike == count, padding, errors."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import sb_layers.linear_attention as linear_attention
from sb_kernels import gla_chunked, gla_event_driven, gla_fla, gla_recurrent
from sb_layers import GLAState, GatedLinearAttention, MixerCache, SpikeCoding
from sb_neurons import CODEC_NAMES
from strategies import mixer_with_state, names


pytestmark = pytest.mark.usefixtures("float64_default")  # exactness claims are checked in float64 (tests/conftest.py)


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
    whole, final = mixer_with_state(layer, x)
    bounds = [0, *sorted(set(cuts)), 20]
    cache = MixerCache(1)
    outs = [layer(x[:, a:b], None, cache) for a, b in zip(bounds, bounds[1:])]
    torch.testing.assert_close(torch.cat(outs, 1), whole)
    torch.testing.assert_close(cache.layer_state(0).recurrent, final.recurrent)
    layer.mode = "recurrent"
    torch.testing.assert_close(layer(x, None, MixerCache(1)), whole)


def test_gla_left_padding_leaves_real_tokens_unchanged():
    layer = make_gla()
    x = torch.randn(2, 9, 24)
    mask = torch.ones(2, 9)
    mask[1, :4] = 0
    padded = layer(x, mask, MixerCache(1))
    alone = layer(x[1:, 4:], None, MixerCache(1))
    torch.testing.assert_close(padded[1, 4:], alone[0])


def test_gla_parameter_names_follow_the_release():
    names = set(dict(make_gla().named_parameters()))
    assert {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias", "gk_proj.0.weight", "gk_proj.1.weight",
            "gk_proj.1.bias", "g_norm.weight", "o_proj.weight"} == names


def test_gla_gradients_reach_every_parameter_through_spiking_forms():
    layer = make_gla(coding=SpikeCoding(mode="spike", weight_bits=8, group_size=8), spike_qk=True)
    out = layer(torch.randn(2, 5, 24), None, MixerCache(1))
    out.pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("codec", CODEC_NAMES)
@given(
    seed=st.integers(0, 10_000), length=st.integers(1, 8), heads=st.integers(1, 3), dk=st.integers(1, 5),
    dv=st.integers(1, 4), max_count=st.integers(0, 40), with_state=st.booleans(),
)
def test_event_driven_gla_equals_the_recurrence_on_decoded_counts(codec, seed, length, heads, dk, dv, max_count, with_state):
    """Spike-coded linear attention: q/k spike trains drive the recurrence event by event, == count form."""
    g = torch.Generator().manual_seed(seed)
    q_counts = torch.randint(0, max_count + 1, (2, heads, length, dk), generator=g)
    k_counts = torch.randint(0, max_count + 1, (2, heads, length, dk), generator=g)
    q_v_th, k_v_th = torch.rand(2, heads, length, 1, generator=g) + 0.1, torch.rand(2, heads, length, 1, generator=g) + 0.1
    v = torch.randn(2, heads, length, dv, generator=g)
    gk = F.logsigmoid(torch.randn(2, heads, length, dk, generator=g))
    state = torch.randn(2, heads, dk, dv, generator=g) if with_state else None
    o, final = gla_event_driven(q_counts, q_v_th, k_counts, k_v_th, v, gk, 0.5, codec, state)
    o_ref, final_ref = gla_recurrent(q_v_th * q_counts, k_v_th * k_counts, v, gk, 0.5, state)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_spiking_gla_spike_mode_equals_count_mode(codec, monkeypatch):
    """Spiking projections and event-driven q/k trains (every codec) equal the count form, state included."""
    calls = []
    real = linear_attention.gla_event_driven
    monkeypatch.setattr(linear_attention, "gla_event_driven", lambda *a, **kw: calls.append(a[7]) or real(*a, **kw))
    count = make_gla(coding=SpikeCoding(mode="count", codec=codec, weight_bits=8, group_size=8), spike_qk=True)
    spike = make_gla(coding=SpikeCoding(mode="spike", codec=codec, weight_bits=8, group_size=8), spike_qk=True)
    spike.load_state_dict(count.state_dict())
    x = torch.randn(2, 7, 24)
    state = GLAState(torch.randn(2, 4, 6, 6))
    mask = torch.ones(2, 7)
    mask[1, :3] = 0  # left padding: padded keys spike too, but write nothing (v and the decay are masked)
    (out_count, state_count), (out_spike, state_spike) = mixer_with_state(count, x, mask, state), mixer_with_state(spike, x, mask, state)
    assert calls == [codec], "spike mode with spike_qk must run the event-driven recurrence"
    torch.testing.assert_close(out_spike, out_count, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state_spike.recurrent, state_count.recurrent, rtol=1e-10, atol=1e-10)


def test_spiking_gla_approaches_dense_gla_as_k_grows():
    dense = make_gla()
    x = torch.randn(2, 9, 24)
    reference = dense(x, None, MixerCache(1))
    errors = []
    for k in (2.0, 8.0, 32.0, 128.0):
        spiking = make_gla(coding=SpikeCoding(k=k), spike_qk=True)
        spiking.load_state_dict(dense.state_dict())
        with torch.no_grad():
            errors.append(float((spiking(x, None, MixerCache(1)) - reference).norm() / reference.norm()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.02


@given(seed=st.integers(0, 1000), pad=st.integers(1, 5), start=st.integers(0, 4))
def test_gla_padding_leaves_state_and_real_tokens_unchanged(seed, pad, start):
    """Padded steps are a no-op on the state, even with a non-zero incoming state and padding mid-way."""
    layer = make_gla(chunk_size=3)
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(1, 8, 24, generator=g)
    state = GLAState(torch.randn(1, 4, 6, 6, generator=g).abs())
    padded = torch.cat([real[:, :start], torch.randn(1, pad, 24, generator=g), real[:, start:]], dim=1)
    mask = torch.ones(1, 8 + pad)
    mask[:, start : start + pad] = 0
    out, final = mixer_with_state(layer, padded, mask, state)
    alone, final_alone = mixer_with_state(layer, real, state=state)
    keep = mask[0].bool()
    torch.testing.assert_close(out[:, keep], alone)
    torch.testing.assert_close(final.recurrent, final_alone.recurrent)


def test_tied_key_gate_is_one_minus_key():
    """76B variant: with sigmoid features the decay of each channel is exactly g = 1 - k."""
    layer = make_gla(gate="tied_key", feature_map="sigmoid")
    x = torch.randn(1, 1, 24)
    state = torch.rand(1, 4, 6, 6)
    _, new_state = mixer_with_state(layer, x, state=GLAState(state))
    k = torch.sigmoid(layer.k_proj(x)).view(1, 2, 6).repeat_interleave(2, dim=1)  # [B, H, Dk]
    v = layer.v_proj(x).view(1, 2, 6).repeat_interleave(2, dim=1)
    expected = state * (1 - k).unsqueeze(-1) + k.unsqueeze(-1) * v.unsqueeze(-2)
    torch.testing.assert_close(new_state.recurrent, expected)


DECODE_OPTIONS = [dict(), dict(gate="merged"), dict(gate="tied_key", feature_map="sigmoid"), dict(feature_map="sigmoid"),
                  dict(coding=SpikeCoding(), spike_qk=True), dict(coding=SpikeCoding(), spike_qk=True, gate="tied_key", feature_map="sigmoid")]


@pytest.mark.parametrize("options", DECODE_OPTIONS)
@given(seed=st.integers(0, 1000), prompt=st.integers(0, 9), padded=st.booleans())
def test_one_token_decode_step_equals_the_chunked_layer(options, seed, prompt, padded):
    # The one-kernel decode path (mode "auto" on CUDA; here its reference, the same code up to the
    # kernel) against the chunked form on the same token and state, padding included.
    layer = make_gla(chunk_size=4, **options)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, prompt + 1, 24, generator=gen)
    state = mixer_with_state(layer, x[:, :prompt])[1] if prompt else None
    mask = torch.tensor([[1], [0], [1]]) if padded else None
    token = x[:, prompt:]
    want, want_state = mixer_with_state(layer, token, mask, state)
    q, k, v = layer.q_proj(token), layer.k_proj(token), layer.v_proj(token)
    got, got_state = layer._decode_step(token, q, k, v, mask, None if state is None else state.recurrent)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_state, want_state.recurrent, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("options", DECODE_OPTIONS)
def test_auto_mode_decodes_one_token_like_the_recurrent_form_on_the_gpu(options):
    layer = GatedLinearAttention(256, num_heads=8, num_kv_heads=2, chunk_size=16, **options).float().cuda().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, 256, generator=gen, dtype=torch.float32).cuda()
    layer.mode = "recurrent"  # PyTorch's float32 arithmetic (fla's chunk kernels may use tf32)
    with torch.no_grad():
        _, state = mixer_with_state(layer, x[:, :39])
        want, want_state = mixer_with_state(layer, x[:, 39:], state=state)
        layer.mode = "auto"
        got, got_state = mixer_with_state(layer, x[:, 39:], state=state)
    assert got_state.recurrent.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_state.recurrent, want_state.recurrent, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("length", [1, 37])
def test_fla_kernel_matches_chunked_reference(length):
    pytest.importorskip("fla")
    q, k, v, gk, state = (t.float().cuda() for t in random_gla_inputs(0, 2, 2, length, 64, 64))
    o_ref, s_ref = gla_chunked(q, k, v, gk, 0.125, state, chunk_size=16)
    o_fla, s_fla = gla_fla(q, k, v, gk, 0.125, state)
    torch.testing.assert_close(o_fla, o_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(s_fla.float(), s_ref, rtol=2e-3, atol=2e-3)


def test_auto_mode_resolves_to_an_importable_form():
    """mode="auto": fla on CUDA tensors exactly when fla imports, the chunked form otherwise."""
    import importlib.util

    from sb_kernels import fla_available

    assert fla_available() == (importlib.util.find_spec("fla") is not None)
    layer = GatedLinearAttention(16, 2, mode="auto")
    assert layer.kernel_for(torch.randn(1, 3, 16)) == "chunk"
    assert layer.kernel_for(torch.randn(1, 1, 16)) == "chunk"  # the decode kernel is a CUDA one
    assert GatedLinearAttention(16, 2, mode="recurrent").kernel_for(torch.randn(1, 1, 16)) == "recurrent"
    if torch.cuda.is_available():
        expected = "fla" if fla_available() else "chunk"
        assert layer.kernel_for(torch.randn(1, 3, 16, device="cuda")) == expected
        assert layer.kernel_for(torch.randn(1, 1, 16, device="cuda")) == "decode"


def test_fla_mode_on_cpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA"):
        gla_fla(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], 1.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GatedLinearAttention(24, 5), "num_heads"),
        (lambda: GatedLinearAttention(24, 4, 3), "num_kv_heads"),
        (lambda: GatedLinearAttention(24, 4, gate="tied_key"), "sigmoid"),
        (lambda: GatedLinearAttention(24, 4, mode="fast"), "mode"),
        (lambda: GatedLinearAttention(24, 4, chunk_size=0), "chunk_size"),
        (lambda: make_gla()(torch.randn(1, 3, 23), None, MixerCache(1)), "hidden_states"),
        (lambda: make_gla()(torch.randn(1, 3, 24), torch.ones(1, 4), MixerCache(1)), "attention_mask"),
        (lambda: make_gla()(torch.randn(1, 3, 24), torch.full((1, 3), 2.0), MixerCache(1)), "attention_mask"),
        (lambda: mixer_with_state(make_gla(), torch.randn(1, 3, 24), state=GLAState(torch.zeros(1, 4, 6, 5))), "GLA state"),
        (lambda: mixer_with_state(make_gla(), torch.randn(1, 3, 24), state=torch.zeros(1, 4, 6, 6)), "state must be a cache entry"),
        (lambda: GLAState(torch.zeros(4, 6, 6)), "recurrent"),
        (lambda: gla_chunked(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], 1.0, chunk_size=0), "chunk_size"),
        (lambda: gla_recurrent(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], 1.0, torch.zeros(1, 1, 3, 2)), "initial_state"),
        (lambda: gla_recurrent(*(torch.ones(1, 1, 3, 2, dtype=torch.int64),) * 4, 1.0), "q"),
        (lambda: gla_chunked(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], float("nan")), "scale"),
        (lambda: gla_recurrent(*random_gla_inputs(0, 1, 1, 3, 2, 2)[:4], 1.0, torch.zeros(1, 1, 2, 2, dtype=torch.int64)), "initial_state"),
        (lambda: gla_event_driven(torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3), torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 1),
                                  torch.ones(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), 1.0), "q_v_th"),
        (lambda: gla_event_driven(torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 1), -torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 1),
                                  torch.ones(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), 1.0, "binary"), "counts"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()


def test_gla_layer_hands_the_kernels_time_major_tensors(monkeypatch):
    """q, k, v and the decay reach the GLA form as head-major views of time-major storage (fla's layout,
    so its conversion copies nothing), k/v/decay expanded to the query heads as repeat_interleave would."""
    import sb_layers.linear_attention as la

    seen = {}
    original = la.gla_chunked

    def spy(q, k, v, gk, *args, **kwargs):
        seen.update({name: t.transpose(1, 2).is_contiguous() for name, t in zip("q k v gk".split(), (q, k, v, gk))})
        seen["k"] = seen["k"] and torch.equal(k[:, 0], k[:, 1]) and torch.equal(k[:, 2], k[:, 3])
        return original(q, k, v, gk, *args, **kwargs)

    monkeypatch.setattr(la, "gla_chunked", spy)
    for gate, feature_map in (("low_rank", "relu"), ("tied_key", "sigmoid")):
        layer = GatedLinearAttention(32, 4, 2, gate=gate, feature_map=feature_map)
        layer(torch.randn(2, 9, 32), torch.ones(2, 9), MixerCache(1))
        assert seen == {"q": True, "k": True, "v": True, "gk": True}
        x = torch.randn(1, 5, 2, 8).transpose(1, 2)
        torch.testing.assert_close(layer._repeat_kv(x), x.repeat_interleave(2, dim=1), rtol=0, atol=0)
