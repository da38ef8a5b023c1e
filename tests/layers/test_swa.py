"""Sliding-window attention: dense masked-softmax reference, streaming across the window, padding, sinks."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_layers import MixerCache, RollingKVCache, SinkTokens, SlidingWindowAttention
from sb_layers.attention import attention_with_lse, windowed_attention
from strategies import mixer_with_state


pytestmark = pytest.mark.usefixtures("float64_default")  # exactness claims are checked in float64 (tests/conftest.py)


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
    torch.testing.assert_close(layer(x, None, MixerCache(1)), dense_swa_reference(layer, x, window))


@given(seed=st.integers(0, 1000), window=st.integers(1, 6), cuts=st.lists(st.integers(1, 15), max_size=4))
def test_swa_streaming_across_the_window_boundary(seed, window, cuts):
    torch.manual_seed(seed)
    layer = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0)
    x = torch.randn(2, 16, 16)
    whole = layer(x, None, MixerCache(1))
    bounds = [0, *sorted(set(cuts)), 16]
    cache, outs = None, []
    for a, b in zip(bounds, bounds[1:]):
        out, cache = mixer_with_state(layer, x[:, a:b], state=cache)
        outs.append(out)
        assert cache.num_entries <= window
    torch.testing.assert_close(torch.cat(outs, 1), whole)


def test_swa_left_padding_leaves_real_tokens_unchanged():
    torch.manual_seed(2)
    layer = SlidingWindowAttention(16, 2, 2, window=4)
    x = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10)
    mask[0, :3] = 0
    padded = layer(x, mask, MixerCache(1))
    alone = layer(x[:1, 3:], None, MixerCache(1))
    torch.testing.assert_close(padded[0, 3:], alone[0])
    assert torch.isfinite(padded).all()


def test_sinks_are_seen_by_every_token_and_see_only_sinks():
    torch.manual_seed(3)
    layer = SlidingWindowAttention(16, 2, 2, window=2, num_sinks=3)
    x = torch.randn(1, 12, 16)
    out, cache = mixer_with_state(layer, x)
    # sinks see only sinks: changing regular tokens leaves sink outputs unchanged
    y = x.clone()
    y[:, 3:] = torch.randn(1, 9, 16)
    torch.testing.assert_close(layer(y, None, MixerCache(1))[:, :3], out[:, :3])
    # sinks attend each other without a causal mask: the first sink depends on the last one
    z = x.clone()
    z[:, 2] += 1.0
    assert not torch.allclose(layer(z, None, MixerCache(1))[:, 0], out[:, 0])
    # the last token is far beyond the window from the sinks, yet depends on them
    assert not torch.allclose(layer(z, None, MixerCache(1))[:, -1], out[:, -1])
    assert cache.sink_keys.shape[2] == 3 and cache.num_entries == 2


@given(seed=st.integers(0, 1000), cuts=st.lists(st.integers(4, 13), max_size=3))
def test_swa_with_sinks_streams_like_one_call(seed, cuts):
    """Sinks come with the first call; later pieces attend them from the cache."""
    torch.manual_seed(seed)
    layer = SlidingWindowAttention(16, 2, 1, window=3, num_sinks=2, rope_theta=100.0)
    x = torch.randn(1, 14, 16)
    whole = layer(x, None, MixerCache(1))
    bounds = [0, *sorted(set(cuts)), 14]
    cache, outs = None, []
    for a, b in zip(bounds, bounds[1:]):
        out, cache = mixer_with_state(layer, x[:, a:b], state=cache)
        outs.append(out)
        assert cache.num_entries <= 3 and cache.sink_keys.shape[2] == 2
    torch.testing.assert_close(torch.cat(outs, 1), whole)


@given(
    seed=st.integers(0, 1000), window=st.integers(1, 6), block=st.integers(1, 9), sinks=st.integers(0, 2),
    cuts=st.lists(st.integers(3, 17), max_size=3), pad=st.integers(0, 4),
)
def test_query_chunked_swa_equals_one_block(seed, window, block, sinks, cuts, pad):
    """query_chunk_size only splits the work: same outputs and cache with padding, sinks and a carried cache."""
    torch.manual_seed(seed)
    whole = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0, num_sinks=sinks)
    chunked = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0, num_sinks=sinks, query_chunk_size=block)
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(2, 20, 16)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, sinks : sinks + pad] = 0  # left padding of the second row, after the sinks
    bounds = [0, *sorted(set(cuts)), 20]
    caches, outs = [None, None], [[], []]
    for a, b in zip(bounds, bounds[1:]):
        for i, layer in enumerate((whole, chunked)):
            out, caches[i] = mixer_with_state(layer, x[:, a:b], mask[:, a:b], caches[i])
            outs[i].append(out)
    torch.testing.assert_close(torch.cat(outs[1], 1), torch.cat(outs[0], 1))
    torch.testing.assert_close(caches[1].keys, caches[0].keys)
    assert caches[1].key_index.tolist() == caches[0].key_index.tolist()


def test_query_chunked_swa_equals_dense_reference_past_the_window():
    torch.manual_seed(4)
    layer = SlidingWindowAttention(24, 4, 2, window=5, rope_theta=50.0, query_chunk_size=3)
    x = torch.randn(2, 17, 24)
    torch.testing.assert_close(layer(x, None, MixerCache(1)), dense_swa_reference(layer, x, 5))


@given(seed=st.integers(0, 1000), window=st.integers(2, 8), prompt=st.integers(1, 10), pad=st.integers(0, 1))
def test_fill_window_keeps_outputs_and_fixes_shapes(seed, window, prompt, pad):
    torch.manual_seed(seed)
    layer = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0)
    x = torch.randn(2, prompt + 6, 16)
    mask = torch.ones(2, prompt + 6, dtype=torch.long)
    mask[1, :pad] = 0
    _, plain = mixer_with_state(layer, x[:, :prompt], mask[:, :prompt])
    _, filled = mixer_with_state(layer, x[:, :prompt], mask[:, :prompt])
    filled.fill_window()
    assert filled.num_entries == window and filled.key_index.diff().eq(1).all()
    for t in range(prompt, prompt + 6):
        want, plain = mixer_with_state(layer, x[:, t : t + 1], mask[:, t : t + 1], plain)
        got, filled = mixer_with_state(layer, x[:, t : t + 1], mask[:, t : t + 1], filled)
        torch.testing.assert_close(got, want)
        assert filled.num_entries == window
    # a longer call after the filling is still the same function
    more = torch.randn(2, 5, 16)
    torch.testing.assert_close(mixer_with_state(layer, more, state=filled)[0], mixer_with_state(layer, more, state=plain)[0])


def test_fill_window_needs_a_bounded_window_and_a_token():
    with pytest.raises(ValueError, match="bounded"):
        RollingKVCache(None).fill_window()
    with pytest.raises(ValueError, match="cached token"):
        RollingKVCache(4).fill_window()


def test_sink_tokens_prepend_learnable_embeddings_and_strip_them():
    sinks = SinkTokens(3, 16)
    layer = SlidingWindowAttention(16, 2, window=2, num_sinks=3)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    h, m = sinks.prepend(x, mask)
    assert h.shape == (2, 8, 16) and m.tolist()[0] == [1, 1, 1, 0, 1, 1, 1, 1]
    torch.testing.assert_close(h[:, :3], sinks.weight.expand(2, -1, -1))
    out = layer(h, m, MixerCache(1))
    assert sinks.strip(out).shape == (2, 5, 16)
    sinks.strip(out).sum().backward()
    assert sinks.weight.grad is not None and sinks.weight.grad.abs().sum() > 0


def test_decode_cache_never_exceeds_the_window():
    layer = SlidingWindowAttention(8, 2, window=4)
    cache = None
    for _ in range(9):
        _, cache = mixer_with_state(layer, torch.randn(1, 1, 8), state=cache)
        assert cache.num_entries <= 4
    assert cache.length == 9 and cache.key_index.tolist() == [5, 6, 7, 8]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: SlidingWindowAttention(16, 2, window=0), "window"),
        (lambda: SlidingWindowAttention(16, 3), "num_heads"),
        (lambda: SlidingWindowAttention(16, 4, 3), "num_kv_heads"),
        (lambda: SlidingWindowAttention(16, 2, head_dim=5), "head_dim"),
        (lambda: SlidingWindowAttention(16, 2, rope_theta=-1.0), "rope_theta"),
        (lambda: SlidingWindowAttention(16, 2, num_sinks=-1), "num_sinks"),
        (lambda: SlidingWindowAttention(16, 2, attention_backend="xformers"), "attention_backend"),
        (lambda: SlidingWindowAttention(16, 2, query_chunk_size=0), "query_chunk_size"),
        (lambda: SlidingWindowAttention(16, 2)(torch.randn(1, 3, 15), None, MixerCache(1)), "hidden_states"),
        (lambda: SlidingWindowAttention(16, 2)(torch.randn(1, 3, 16), torch.ones(2, 3), MixerCache(1)), "attention_mask"),
        (lambda: mixer_with_state(SlidingWindowAttention(16, 2, window=3), torch.randn(1, 3, 16), state=RollingKVCache(4)), "window"),
        (lambda: mixer_with_state(SlidingWindowAttention(16, 2, window=3), torch.randn(2, 1, 16),
                                  state=mixer_with_state(SlidingWindowAttention(16, 2, window=3), torch.randn(1, 1, 16))[1]), "batch"),
        (lambda: SlidingWindowAttention(16, 2, num_sinks=4)(torch.randn(1, 3, 16), None, MixerCache(1)), "sink"),
        (lambda: SinkTokens(0, 16), "num_sinks"),
        (lambda: SinkTokens(2, 16).prepend(torch.randn(1, 3, 8)), "hidden_states"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.filterwarnings("ignore::UserWarning")  # eager FlexAttention warns that it is unfused
def test_flex_attention_backend_equals_sdpa():
    torch.manual_seed(4)
    sdpa = SlidingWindowAttention(16, 4, 2, window=3, num_sinks=1)
    flex = SlidingWindowAttention(16, 4, 2, window=3, num_sinks=1, attention_backend="flex")
    flex.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9)
    mask[1, 1:3] = 0
    with torch.no_grad():  # PyTorch's FlexAttention has no backward on CPU
        torch.testing.assert_close(flex(x, mask, MixerCache(1)), sdpa(x, mask, MixerCache(1)))


def banded_reference(q, keys, values, window):
    """Masked softmax over the band written out: query at position P = N - Lq + a sees P - window < p <= P."""
    q_len, total = q.shape[2], keys.shape[2]
    groups = q.shape[1] // keys.shape[1]
    k, v = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    pos_q = torch.arange(total - q_len, total)[:, None]
    pos_k = torch.arange(total)[None]
    allowed = (pos_k <= pos_q) & (pos_k > pos_q - window)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@given(
    seed=st.integers(0, 1000), window=st.integers(1, 12), q_len=st.integers(1, 40), cached=st.integers(0, 14),
    layout=st.sampled_from([(1, 1), (4, 2), (6, 1)]), batch=st.integers(1, 2),
)
def test_windowed_attention_equals_the_masked_band(seed, window, q_len, cached, layout, batch):
    """The mask-free decomposition (squares, rectangles, reversed triangles merged by log-sum-exp) is exact."""
    torch.manual_seed(seed)
    heads, kv_heads = layout
    q = torch.randn(batch, heads, q_len, 8)
    keys, values = torch.randn(batch, kv_heads, cached + q_len, 8), torch.randn(batch, kv_heads, cached + q_len, 8)
    out = windowed_attention(q, keys, values, window)
    torch.testing.assert_close(out, banded_reference(q, keys, values, window), rtol=1e-12, atol=1e-12)
    assert out.transpose(1, 2).is_contiguous()  # time-major storage: the output projection reads it as is


def test_attention_with_lse_returns_the_log_normalizer():
    torch.manual_seed(0)
    q, keys, values = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    for causal in (False, True):
        out, lse = attention_with_lse(q, keys, values, causal)
        scores = q @ keys.repeat_interleave(2, 1).transpose(-1, -2) / math.sqrt(8)
        if causal:
            scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
        torch.testing.assert_close(lse, scores.logsumexp(-1))
        torch.testing.assert_close(out, scores.softmax(-1) @ values.repeat_interleave(2, 1))
    with pytest.raises(ValueError, match="square"):
        attention_with_lse(q, keys[:, :, :3], values[:, :, :3], True)
    with pytest.raises(TypeError, match="allow_cudnn must be a bool"):
        attention_with_lse(q, keys, values, True, allow_cudnn=1)
    with pytest.raises(ValueError, match="window"):
        windowed_attention(q, keys, values, 0)


def test_the_fused_kernel_choice_honours_the_users_sdpa_switches(monkeypatch):
    """cuDNN for the windowed pieces on Hopper and newer only, never where the user switched it off or
    where it failed earlier in the process (then flash)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sb_layers import attention as swa

    monkeypatch.setitem(swa._KERNEL_WORKS, "cudnn", True)
    assert swa._prefers_cudnn((9, 0)) and swa._prefers_cudnn((10, 0))
    assert not swa._prefers_cudnn((8, 0)) and not swa._prefers_cudnn((8, 9))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        assert not swa._prefers_cudnn((9, 0))
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]):
        assert swa._prefers_cudnn((9, 0))
    assert swa._prefers_cudnn((9, 0))  # the context restored the default
    monkeypatch.setitem(swa._KERNEL_WORKS, "cudnn", False)  # cuDNN raised once in this process
    assert not swa._prefers_cudnn((9, 0))


@given(seed=st.integers(0, 1000), window=st.integers(1, 9), block=st.integers(1, 9), cuts=st.lists(st.integers(2, 30), max_size=3))
def test_windowed_path_equals_the_masked_path_across_pieces(seed, window, block, cuts):
    """Without padding or sinks, query_chunk_size takes the mask-free path: same outputs and cache as the
    masked one-block path, piece after piece (each piece after the first starts from a filled cache)."""
    torch.manual_seed(seed)
    masked = SlidingWindowAttention(24, 4, 2, window=window, rope_theta=100.0)
    windowed = SlidingWindowAttention(24, 4, 2, window=window, rope_theta=100.0, query_chunk_size=block)
    windowed.load_state_dict(masked.state_dict())
    x = torch.randn(2, 33, 24)
    bounds = [0, *sorted(set(cuts)), 33]
    caches, outs = [None, None], [[], []]
    with torch.no_grad():  # the windowed path serves calls without gradients
        for a, b in zip(bounds, bounds[1:]):
            for i, layer in enumerate((masked, windowed)):
                out, caches[i] = mixer_with_state(layer, x[:, a:b], state=caches[i])
                outs[i].append(out)
    torch.testing.assert_close(torch.cat(outs[1], 1), torch.cat(outs[0], 1))
    torch.testing.assert_close(caches[1].keys, caches[0].keys)
    torch.testing.assert_close(torch.cat(outs[1], 1), dense_swa_reference(masked, x, window))


def test_windowed_path_is_taken_only_without_masks_sinks_and_gradients(monkeypatch):
    import sb_layers.sliding_window as swa

    calls = []
    original = swa.windowed_attention
    monkeypatch.setattr(swa, "windowed_attention", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = SlidingWindowAttention(16, 2, 1, window=3, query_chunk_size=2)
    x = torch.randn(1, 8, 16)
    layer(x, None, MixerCache(1))  # the weights need gradients: the masked blocks (the fused kernels' log-sum-exp has none)
    assert calls == []
    with torch.no_grad():
        _, cache = mixer_with_state(layer, x)
        assert calls == [1]
        mixer_with_state(layer, x[:, :1], state=cache)  # a decode step keeps the masked path (fixed shapes for graphs)
        assert calls == [1]
        _, padded = mixer_with_state(layer, x, torch.ones(1, 8))
        assert padded.maybe_masked and calls == [1]
        mixer_with_state(layer, x, state=padded)  # the cache may hold masked entries now
        assert calls == [1]
        SlidingWindowAttention(16, 2, 1, window=3, query_chunk_size=2, num_sinks=1)(x, None, MixerCache(1))
        assert calls == [1]


@given(seed=st.integers(0, 1000), window=st.integers(1, 6), pieces=st.lists(st.integers(1, 4), min_size=1, max_size=12),
       pad=st.integers(0, 2))
def test_decode_writes_over_the_oldest_entry_in_place_and_streams_like_one_call(seed, window, pieces, pad):
    # Without autograd, one token onto a full window overwrites the entry it evicts (ring order); any
    # later call of several tokens sorts the cache back. Outputs equal one call over the whole sequence.
    torch.manual_seed(seed)
    layer = SlidingWindowAttention(16, 2, 1, window=window, rope_theta=100.0)
    length = 3 + sum(pieces)
    x = torch.randn(2, length, 16)
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, :pad] = 0  # left padding: masked entries ride through the ring too
    with torch.no_grad():
        whole = layer(x, mask, MixerCache(1))
        outs, cache = [], None
        bounds = [0, 3]
        for p in pieces:
            bounds.append(bounds[-1] + p)
        for a, b in zip(bounds, bounds[1:]):
            full_before = cache is not None and cache.num_entries == window
            buffer = None if cache is None else cache.keys
            out, cache = mixer_with_state(layer, x[:, a:b], mask[:, a:b], cache)
            outs.append(out)
            if b - a == 1 and full_before:
                assert cache.keys is buffer and cache.in_ring_order  # written in place
            assert cache.num_entries <= window
    torch.testing.assert_close(torch.cat(outs, 1), whole)
    cache.sort()
    assert cache.key_index.tolist() == list(range(length - cache.num_entries, length))


def test_in_place_decode_needs_no_grad_and_respects_inference_tensors():
    layer = SlidingWindowAttention(8, 2, window=3)
    x = torch.randn(1, 6, 8)
    _, cache = mixer_with_state(layer, x[:, :4])
    assert not cache.can_write_over_oldest()  # autograd on: the general path (copies)
    with torch.inference_mode():
        _, frozen = mixer_with_state(layer, x[:, :4])
    with torch.no_grad():
        assert not frozen.can_write_over_oldest()  # inference tensors cannot be written outside inference mode
        out, frozen = mixer_with_state(layer, x[:, 4:5], state=frozen)
        assert not frozen.in_ring_order
        assert cache.can_write_over_oldest()
    with torch.inference_mode():
        assert frozen.can_write_over_oldest()
        want = layer(x, None, MixerCache(1))
    torch.testing.assert_close(out, want[:, 4:5])


@given(
    seed=st.integers(0, 2**31 - 1),
    groups=st.sampled_from([1, 2, 7]),
    keys_len=st.integers(1, 40),
    batch=st.integers(1, 3),
)
def test_one_query_attention_equals_softmax_over_repeated_keys(seed, groups, keys_len, batch):
    """A decode step's attention (one query per head, :func:`sb_kernels.decode_attention`) equals softmax
    attention over keys repeated per group, under any mask with a visible key."""
    from sb_layers.attention import masked_attention

    g = torch.Generator().manual_seed(seed)
    kv_heads, dim = 2, 8
    q = torch.randn(batch, kv_heads * groups, 1, dim, generator=g)
    keys = torch.randn(batch, kv_heads, keys_len, dim, generator=g)
    values = torch.randn(batch, kv_heads, keys_len, dim, generator=g)
    allowed = torch.rand(batch, 1, keys_len, generator=g) < 0.6
    allowed[:, :, -1] = True
    out = masked_attention(q, keys, values, allowed)
    repeated_k, repeated_v = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    scores = (q @ repeated_k.transpose(-1, -2)) / math.sqrt(dim)
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    expected = scores.softmax(-1) @ repeated_v
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_rotary_frequencies_are_computed_once_and_stay_plain_tensors():
    """The inverse frequencies are kept per shape, dtype and device (a decode step does not recompute
    them); one first made under inference mode is still a plain tensor, so training can use it."""
    from sb_layers import rotary
    from sb_layers.rotary import apply_rotary, rotary_cos_sin

    head_dim, theta = 12, 321.0
    with torch.inference_mode():
        rotary_cos_sin(torch.arange(4), head_dim, theta, torch.float32)
    kept = rotary._inverse_frequencies(head_dim, theta, torch.float32, torch.device("cpu"))
    assert kept is rotary._inverse_frequencies(head_dim, theta, torch.float32, torch.device("cpu"))
    assert not kept.is_inference()
    expected = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    torch.testing.assert_close(kept.double(), expected, rtol=1e-6, atol=0)
    x = torch.randn(1, 2, 4, head_dim, dtype=torch.float32, requires_grad=True)
    cos, sin = rotary_cos_sin(torch.arange(4)[None], head_dim, theta, torch.float32)
    apply_rotary(x, cos, sin).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
