"""GraphedDecoder: its steps (eagerly on the CPU, replayed CUDA graphs on the GPU) equal plain model calls
on a copy of the cache, leave no trace of the warm-up, and refuse caches whose shapes would change (asked
of the cache entries through sb_layers.mixer_cache.CapturableEntry, never by their types)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sb_layers.models.spikingbrain import GraphedDecoder, SpikingBrainCache, SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.w8aspike import to_w8aspike
from model_testing import tiny_spikingbrain

VOCAB, WINDOW = 61, 4
# Plain argmax decoding, as GraphedDecoder does: eos_token_id=None keeps generate() going past an EOS
# without what min_new_tokens would add, a processor that bans EOS and so changes the argmax.
PLAIN_GREEDY = dict(do_sample=False, pad_token_id=0, eos_token_id=None)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


def tiny_model(dtype=torch.float64, **overrides) -> SpikingBrainForCausalLM:
    return tiny_spikingbrain(dtype=dtype, **{"vocab_size": VOCAB, "sliding_window": WINDOW, **overrides})


@pytest.fixture(scope="module")
def model() -> SpikingBrainForCausalLM:
    return tiny_model()


def prompt(model, ids, attention_mask=None) -> tuple[SpikingBrainCache, torch.Tensor]:
    cache = SpikingBrainCache(model.config.num_hidden_layers)
    with torch.no_grad():
        logits = model(ids, attention_mask=attention_mask, cache=cache, use_cache=True).logits
    return cache, logits[:, -1:].argmax(-1)


def eager_steps(model, cache, tokens: list[torch.Tensor], attention_mask=None) -> list[torch.Tensor]:
    """Logits of plain model calls feeding ``tokens`` one by one (the mask grown as generate grows it)."""
    out = []
    with torch.no_grad():
        for token in tokens:
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, torch.ones_like(token)], dim=1)
            out.append(model(token, attention_mask=attention_mask, cache=cache, use_cache=True).logits)
    return out


@settings(max_examples=12)
@given(
    batch=st.integers(1, 2), length=st.integers(1, WINDOW + 5), pad=st.integers(0, 2), steps=st.integers(1, 7),
    warmup=st.integers(0, 2), seed=st.integers(0, 2**16),
)
@example(batch=2, length=3, pad=2, steps=2, warmup=0, seed=5196)  # row 0's second greedy token is the EOS id
def test_greedy_decoding_equals_generate(model, batch, length, pad, steps, warmup, seed):
    ids = torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    if batch > 1 and pad < length:
        mask[0, :pad] = 0  # left padding: rows hold different numbers of real tokens
        ids[0, :pad] = 0
    greedy = dict(max_new_tokens=steps, **PLAIN_GREEDY)
    want = model.generate(ids, attention_mask=mask, **greedy)[:, length:]
    cache, first = prompt(model, ids, mask)
    decoder = GraphedDecoder(model, cache, first, use_cuda_graph=False, warmup=warmup)
    assert torch.equal(decoder.generate(steps), want)
    assert decoder.tokens_seen == length + steps - 1


@settings(max_examples=8)
@given(length=st.integers(1, WINDOW + 4), steps=st.integers(1, 6), warmup=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_each_step_equals_a_model_call_on_a_copy_of_the_cache(model, length, steps, warmup, seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, length), generator=gen)
    fed = [torch.randint(3, VOCAB, (2, 1), generator=gen) for _ in range(steps)]
    cache, _ = prompt(model, ids)
    twin = copy.deepcopy(cache)
    decoder = GraphedDecoder(model, cache, fed[0], use_cuda_graph=False, warmup=warmup)
    static = [t.data_ptr() for t in _state_tensors(cache)]
    got = [decoder.step(token).clone() for token in fed]
    for g, w in zip(got, eager_steps(model, twin, fed)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert [t.data_ptr() for t in _state_tensors(cache)] == static  # every step wrote into the same storage


def _state_tensors(cache: SpikingBrainCache) -> list[torch.Tensor]:
    return [cache.real_tokens] + [tensor for entry in cache.states for tensor in entry.step_tensors()]


@settings(max_examples=4)
@given(length=st.integers(1, WINDOW + 3), steps=st.integers(1, 5), warmup=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_intra_layer_pairs_decode_like_their_model_calls(length, steps, warmup, seed):
    """The 76B-style layers without sinks or full attention keep fixed shapes: their ParallelState answers
    for both parts, so the decoder captures them like the 7B layout's GLA states and windows."""
    model = _intra_model()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, length), generator=gen)
    fed = [torch.randint(3, VOCAB, (2, 1), generator=gen) for _ in range(steps)]
    cache, _ = prompt(model, ids)
    twin = copy.deepcopy(cache)
    decoder = GraphedDecoder(model, cache, fed[0], use_cuda_graph=False, warmup=warmup)
    static = [t.data_ptr() for t in _state_tensors(cache)]
    got = [decoder.step(token).clone() for token in fed]
    for g, w in zip(got, eager_steps(model, twin, fed)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert [t.data_ptr() for t in _state_tensors(cache)] == static
    assert [entry.softmax.length for entry in cache.states] == [entry.softmax.length for entry in twin.states]


def _intra_model(**overrides) -> SpikingBrainForCausalLM:
    return tiny_model(**{"variant": "intra_layer", "num_sink_tokens": 0, "full_attn_layers": [], **overrides})


def test_w8aspike_model_decodes_like_its_model_calls():
    source = tiny_model(num_hidden_layers=2)
    gen = torch.Generator().manual_seed(5)
    converted = to_w8aspike(source, group_size=16)
    ids = torch.randint(3, VOCAB, (1, WINDOW + 2), generator=gen)
    cache, first = prompt(converted, ids)
    twin = copy.deepcopy(cache)
    decoder = GraphedDecoder(converted, cache, first, use_cuda_graph=False)
    tokens, got = [first], []
    for _ in range(5):
        got.append(decoder.step().clone())
        tokens.append(decoder.next_tokens.clone())
    want = eager_steps(converted, twin, tokens[:-1])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_from_prompt_continues_the_prompt_like_generate(model):
    ids = torch.randint(3, VOCAB, (2, WINDOW + 3), generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    greedy = dict(max_new_tokens=5, **PLAIN_GREEDY)
    want = model.generate(ids, attention_mask=mask, **greedy)[:, ids.shape[1]:]
    decoder = GraphedDecoder.from_prompt(model, ids, mask, use_cuda_graph=False, warmup=1)
    assert torch.equal(decoder.generate(5), want)
    for bad in (ids[0], ids.int(), ids[:, :0]):
        with pytest.raises(ValueError, match="input_ids must be a non-empty int64 tensor of shape \\(B, L\\)"):
            GraphedDecoder.from_prompt(model, bad, use_cuda_graph=False)


def test_an_eager_call_on_the_owned_cache_is_detected(model):
    cache, first = prompt(model, torch.tensor([[5, 6, 7]]))
    decoder = GraphedDecoder(model, cache, first, use_cuda_graph=False, warmup=0)
    decoder.step()
    with torch.no_grad():
        model(first, cache=cache, use_cache=True)
    with pytest.raises(RuntimeError, match="advanced outside"):
        decoder.step()


def test_refuses_caches_whose_shapes_would_change():
    unbounded = tiny_model(sliding_window=None)  # full attention: the cache grows every step
    cache, first = prompt(unbounded, torch.tensor([[5, 6, 7]]))
    before = [t.clone() for t in cache.states[1].tensors()]
    with pytest.raises(TypeError, match="layer 1: .*bounded sliding windows"):
        GraphedDecoder(unbounded, cache, first, use_cuda_graph=False)
    assert all(torch.equal(a, b) for a, b in zip(cache.states[1].tensors(), before))  # refused before any change
    with_sinks = _intra_model(num_sink_tokens=2)
    cache, first = prompt(with_sinks, torch.tensor([[5, 6, 7]]))
    with pytest.raises(TypeError, match="layer 0: .*without sinks"):
        GraphedDecoder(with_sinks, cache, first, use_cuda_graph=False)
    full = _intra_model(full_attn_layers=[1])
    cache, first = prompt(full, torch.tensor([[5, 6, 7]]))
    with pytest.raises(TypeError, match="layer 1: .*grows every step"):
        GraphedDecoder(full, cache, first, use_cuda_graph=False)


class _PlainEntry:
    """A cache entry without the capture methods (CacheEntry only)."""

    def tensors(self):
        return iter(())

    def select_batch(self, index):
        return _PlainEntry()

    def fill_windows(self):
        pass


def test_refuses_entries_that_cannot_be_captured(model):
    cache, first = prompt(model, torch.tensor([[5, 6, 7]]))
    plain = copy.deepcopy(cache)
    plain.states[2] = _PlainEntry()
    with pytest.raises(TypeError, match="layer 2: .*_PlainEntry, does not support captured decode steps"):
        GraphedDecoder(model, plain, first, use_cuda_graph=False)
    empty = copy.deepcopy(cache)
    empty.states[3] = None
    with pytest.raises(TypeError, match="layer 3: .*has not run"):
        GraphedDecoder(model, empty, first, use_cuda_graph=False)


def test_rejects_bad_arguments(model):
    cache, first = prompt(model, torch.tensor([[5, 6, 7]]))
    with pytest.raises(TypeError, match="cache must be a SpikingBrainCache"):
        GraphedDecoder(model, [None] * 4, first, use_cuda_graph=False)
    with pytest.raises(ValueError, match="cache must hold a prompt"):
        GraphedDecoder(model, SpikingBrainCache(4), first, use_cuda_graph=False)
    with pytest.raises(ValueError, match="cache has 3 layers"):
        GraphedDecoder(model, _with_layers(cache, 3), first, use_cuda_graph=False)
    for bad in (first.to(torch.int32), first[:, :0], torch.cat([first, first]), [[5]]):
        with pytest.raises(ValueError, match="input_ids must be an int64 tensor of shape"):
            GraphedDecoder(model, cache, bad, use_cuda_graph=False)
    for warmup, error in ((-1, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="warmup must be an int >= 0"):
            GraphedDecoder(model, cache, first, use_cuda_graph=False, warmup=warmup)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use_cuda_graph=True needs a CUDA model"):
            GraphedDecoder(model, cache, first)
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            GraphedDecoder(model, cache, first, use_cuda_graph=False)
    finally:
        model.eval()
    decoder = GraphedDecoder(model, cache, first, use_cuda_graph=False, warmup=0)
    with pytest.raises(ValueError, match="input_ids must be an int64 tensor of shape \\(1, 1\\)"):
        decoder.step(torch.tensor([[1, 2]]))
    for bad, error in ((0, ValueError), (-3, ValueError), (2.0, TypeError), (False, TypeError)):
        with pytest.raises(error, match="max_new_tokens must be an int >= 1"):
            decoder.generate(bad)


def _with_layers(cache: SpikingBrainCache, layers: int) -> SpikingBrainCache:
    other = copy.deepcopy(cache)
    other.states = other.states[:layers]
    return other


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_replayed_graph_equals_the_same_steps_run_eagerly(dtype):
    model = tiny_model(dtype=dtype, num_hidden_layers=4, sliding_window=64, hidden_size=256, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=512).cuda()
    ids = torch.randint(3, VOCAB, (2, 100), generator=torch.Generator().manual_seed(3)).cuda()
    cache, first = prompt(model, ids)
    twin = copy.deepcopy(cache)
    graphed = GraphedDecoder(model, cache, first)
    eager = GraphedDecoder(model, twin, first, use_cuda_graph=False)
    for _ in range(12):  # past the window's wrap-around of the ring
        got, want = graphed.step().float(), eager.step().float()
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert torch.equal(graphed.next_tokens, eager.next_tokens)
    fed = torch.randint(3, VOCAB, (2, 1), device="cuda", generator=torch.Generator("cuda").manual_seed(4))
    torch.testing.assert_close(graphed.step(fed).float(), eager.step(fed).float(), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_from_prompt_replays_what_the_eager_decoder_computes():
    """``from_prompt`` on CUDA (prefill, then captured steps) emits the eager decoder's tokens, left padding included."""
    model = tiny_model(dtype=torch.bfloat16, sliding_window=64, hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=512).cuda()
    ids = torch.randint(3, VOCAB, (2, 90), generator=torch.Generator().manual_seed(5)).cuda()
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    graphed = GraphedDecoder.from_prompt(model, ids, mask)
    eager = GraphedDecoder.from_prompt(model, ids, mask, use_cuda_graph=False)
    assert torch.equal(graphed.generate(80), eager.generate(80))  # past the window's wrap-around
