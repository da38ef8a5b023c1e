"""One mixer protocol (issue 23.3): ``mixer(hidden_states, attention_mask, cache) -> hidden_states``.

Every mixer (GLA, SWA, the 76B parallel mixer) and the block around it reads and updates its own entry
(``layer_idx``) of one :class:`sb_layers.MixerCache`; ``cache=None`` runs a whole sequence from a zero state
and returns the output alone, keeping nothing; any other ``cache`` (a layer's own state) is a TypeError.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import sb_layers as L
from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.cache_names import output_cache
from strategies import mixer_with_state


def _mixers(layer_idx: int = 0):
    torch.manual_seed(0)
    return {
        "gla": L.GatedLinearAttention(16, 4, 2, chunk_size=3, layer_idx=layer_idx).double(),
        "swa": L.SlidingWindowAttention(16, 4, 2, window=4, rope_theta=100.0, layer_idx=layer_idx).double(),
        "parallel": L.ParallelMixer(
            L.GatedLinearAttention(16, 4, 2, chunk_size=3), L.SlidingWindowAttention(16, 4, 2, window=4), layer_idx=layer_idx
        ).double(),
    }


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel", "block"])
def test_protocol_streaming_equals_the_whole_sequence(kind):
    mixers = _mixers(layer_idx=2)
    mixer = L.HybridBlock(16, mixers["gla"], L.GLUMLP(16, 24).double()) if kind == "block" else mixers[kind]
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0
    cache = L.MixerCache(3)
    outs = [mixer(x[:, a:b], mask[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, 11))]
    assert all(isinstance(out, torch.Tensor) for out in outs)  # the hidden states alone
    assert cache.states[0] is None and cache.states[1] is None and cache.states[2] is not None
    whole_cache = L.MixerCache(3)
    whole = mixer(x, attention_mask=mask, cache=whole_cache)
    state = whole_cache.layer_state(2)
    torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-12, atol=1e-12)
    alone = mixer(x, attention_mask=mask)  # no cache: the output alone, the same numbers
    assert isinstance(alone, torch.Tensor)
    torch.testing.assert_close(alone, whole, rtol=0, atol=0)
    entry = cache.layer_state(2)
    if kind in ("gla", "block"):
        assert isinstance(entry, L.GLAState)
        torch.testing.assert_close(entry.recurrent, state.recurrent, rtol=1e-12, atol=1e-12)
    elif kind == "parallel":
        assert isinstance(entry, L.ParallelState)
        torch.testing.assert_close(entry.linear.recurrent, state.linear.recurrent, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(entry.softmax.keys, state.softmax.keys, rtol=1e-12, atol=1e-12)
    else:
        torch.testing.assert_close(entry.keys, state.keys, rtol=1e-12, atol=1e-12)


def test_calls_without_a_cache_return_the_output_alone_and_carried_state_streams():
    mixers = _mixers()
    gla, swa, parallel = mixers["gla"], mixers["swa"], mixers["parallel"]
    x = torch.randn(1, 6, 16, dtype=torch.float64)
    first, carried = mixer_with_state(gla, x[:, :4])
    second, _ = mixer_with_state(gla, x[:, 4:], None, carried)  # a carried state as the cache entry
    whole = gla(x)
    assert isinstance(whole, torch.Tensor)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    cache = L.MixerCache(1)
    swa(x[:, :3], cache=cache)
    kv = cache.layer_state(0)
    out = swa(x[:, 3:], cache=cache)
    assert cache.layer_state(0) is kv and out.shape == (1, 3, 16)  # the RollingKVCache updated in place
    assert isinstance(swa(x), torch.Tensor) and isinstance(parallel(x), torch.Tensor)
    _, pair = mixer_with_state(parallel, x)
    assert pair.linear.recurrent.shape == (1, 4, 4, 4) and pair.softmax.num_entries == 4


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel", "block"])
def test_a_layer_state_in_the_cache_place_is_a_type_error(kind):
    mixers = _mixers()
    mixer = L.HybridBlock(16, mixers["gla"], L.GLUMLP(16, 24).double()) if kind == "block" else mixers[kind]
    x = torch.randn(1, 3, 16, dtype=torch.float64)
    _, state = mixer_with_state(mixer, x)
    with pytest.raises(TypeError, match=rf"{type(mixer).__name__}: cache must be a MixerCache .* got {type(state).__name__}"):
        mixer(x, None, state)
    with pytest.raises(TypeError, match="state"):
        mixer(x, None, state=state)  # no state= keyword: the state lives in the cache


def test_cache_checks():
    gla = _mixers(layer_idx=3)["gla"]
    x = torch.randn(1, 2, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="layer_idx"):
        gla(x, None, L.MixerCache(2))  # layer 3 in a cache of 2 layers
    with pytest.raises(TypeError, match="state"):
        gla(x, None, L.MixerCache(4), state=torch.zeros(1, 4, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="MixerCache"):
        gla(x, None, "cache")
    with pytest.raises(ValueError, match="layer_idx"):
        L.GatedLinearAttention(16, 4, layer_idx=-1)
    with pytest.raises(ValueError, match="num_layers"):
        L.MixerCache(0)


def test_model_layers_know_their_index_and_use_the_protocol():
    config = SpikingBrainConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=24, sliding_window=4, attn_layers=[1, 3], gla_chunk_size=3,
    )
    model = SpikingBrainForCausalLM(config).double().eval()
    assert [layer.layer_idx for layer in model.model.layers] == [0, 1, 2, 3]
    assert isinstance(SpikingBrainCache(4), L.MixerCache)
    ids = torch.randint(0, 40, (2, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the model itself warns about nothing
        cache = SpikingBrainCache(4)
        with torch.no_grad():
            logits = model(ids, cache=cache, use_cache=True).logits
            pieces = model(ids, prefill_chunk_size=4, use_cache=True)
            plain = model(ids, use_cache=False)
    torch.testing.assert_close(pieces.logits, logits)
    assert output_cache(plain) is None
    for mine, theirs in zip(cache.states, output_cache(pieces).states):
        if isinstance(mine, L.GLAState):
            torch.testing.assert_close(mine.recurrent, theirs.recurrent)
        else:  # the last piece of one token wrote over the oldest entry in place (ring order)
            mine.sort(), theirs.sort()
            torch.testing.assert_close(mine.keys, theirs.keys)


def test_prefill_in_pieces_is_a_loop_not_a_recursion(monkeypatch):
    config = SpikingBrainConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        intermediate_size=24, sliding_window=4, attn_layers=[1],
    )
    model = SpikingBrainForCausalLM(config).double().eval()
    calls = []
    original = type(model.model).forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model.model), "forward", counting)
    with torch.no_grad():
        model(torch.randint(0, 40, (1, 10)), prefill_chunk_size=3)
    assert len(calls) == 1
