"""The 76B-style variant at tiny size (facts section 5): intra-layer parallel hybrid, sink tokens, full
attention at chosen layers, MoE upcycled from dense FFNs with dense FFNs kept at chosen layers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_layers.blocks import ParallelMixer
from sb_layers.feed_forward import GLUMLP, MoE
from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.upcycling import upcycle_to_moe
from sb_layers.sinks import SinkTokens
from model_testing import tiny_spikingbrain
from strategies import assert_left_padding_is_invisible

VOCAB, WINDOW, SINKS, LAYERS = 83, 4, 3, 4
FULL_LAYERS, DENSE_LAYERS = [2], [0]


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


def dense_intra_model(**overrides) -> SpikingBrainForCausalLM:
    fields = dict(variant="intra_layer", vocab_size=VOCAB, num_hidden_layers=LAYERS, sliding_window=WINDOW, num_sink_tokens=SINKS,
                  full_attn_layers=FULL_LAYERS)
    return tiny_spikingbrain(**{**fields, **overrides})


@pytest.fixture(scope="module")
def dense() -> SpikingBrainForCausalLM:
    return dense_intra_model()


@pytest.fixture(scope="module")
def moe_model(dense) -> SpikingBrainForCausalLM:
    model = upcycle_to_moe(dense, num_experts=4, top_k=1, num_shared=1, dense_ffn_layers=DENSE_LAYERS, router_aux_loss_coef=0.01)
    with torch.no_grad():  # a trained-looking router, so that experts really differ in what they receive
        for module in model.modules():
            if isinstance(module, MoE):
                module.router.weight.normal_(0, 1.0)
                for expert in module.experts:
                    expert.up_proj.weight.mul_(1 + 0.5 * torch.rand_like(expert.up_proj.weight))
    return model


def test_structure_follows_the_76b_recipe(moe_model):
    config = moe_model.config
    assert config.gla_gate == "tied_key" and config.feature_map == "sigmoid"
    assert isinstance(moe_model.model.sink_tokens, SinkTokens) and moe_model.model.sink_tokens.num_sinks == SINKS
    for index, layer in enumerate(moe_model.model.layers):
        assert isinstance(layer.attn, ParallelMixer)
        assert layer.attn.linear_attn.gate == "tied_key"
        assert layer.attn.softmax_attn.window == (None if index in FULL_LAYERS else WINDOW)
        assert layer.attn.softmax_attn.num_sinks == SINKS
        if index in DENSE_LAYERS:
            assert isinstance(layer.mlp, GLUMLP)
        else:
            assert isinstance(layer.mlp, MoE) and len(layer.mlp.experts) == 4 and len(layer.mlp.shared_experts) == 1


def test_upcycled_model_equals_the_dense_model(dense):
    upcycled = upcycle_to_moe(dense, num_experts=4, top_k=2, num_shared=1, dense_ffn_layers=DENSE_LAYERS)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(upcycled(ids).logits, dense(ids).logits, rtol=1e-10, atol=1e-10)
    assert not any(isinstance(m, MoE) for m in dense.modules())  # the source stays dense


@given(length=st.integers(WINDOW + 1, 3 * WINDOW), seed=st.integers(0, 2**16))
def test_prefill_equals_token_by_token_decode_with_sinks_and_moe(moe_model, length, seed):
    ids = torch.randint(3, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        prefill = moe_model(ids, use_cache=False).logits
        cache = SpikingBrainCache(LAYERS)
        steps = [moe_model(ids[:, t : t + 1], cache=cache).logits for t in range(length)]
    torch.testing.assert_close(torch.cat(steps, dim=1), prefill, rtol=1e-10, atol=1e-10)


@given(lengths=st.lists(st.integers(1, 9), min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_left_padded_batch_equals_each_sample_alone_with_sinks(moe_model, lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    assert_left_padding_is_invisible(moe_model, [torch.randint(3, VOCAB, (n,), generator=gen) for n in lengths])


def test_generate_with_and_without_cache_is_identical(moe_model):
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    common = dict(max_new_tokens=2 * WINDOW, min_new_tokens=2 * WINDOW, do_sample=False, pad_token_id=0)
    assert torch.equal(moe_model.generate(ids, use_cache=True, **common), moe_model.generate(ids, use_cache=False, **common))


def test_only_full_attention_layers_grow_the_cache():
    def cache_growth(full_layers):
        model = dense_intra_model(full_attn_layers=full_layers)
        cache = SpikingBrainCache(LAYERS)
        sizes = []
        with torch.no_grad():
            model(torch.tensor([[5]]), cache=cache)
            for t in range(3 * WINDOW):
                model(torch.tensor([[6 + t]]), cache=cache)
                sizes.append(cache.memory_bytes())
        return sizes[-1] - sizes[WINDOW]

    assert cache_growth([]) == 0
    assert cache_growth([1]) > 0


def test_sinks_are_learned_and_moe_adds_its_balancing_loss(moe_model):
    model = upcycle_to_moe(dense_intra_model(), num_experts=4, dense_ffn_layers=DENSE_LAYERS, router_aux_loss_coef=0.5).train()
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.aux_loss >= 1.0 - 1e-9  # N * sum f_i P_i >= 1 at a uniform router
    lm_loss = model.loss_function(logits=out.logits, labels=ids, vocab_size=VOCAB)
    torch.testing.assert_close(out.loss, lm_loss + 0.5 * out.aux_loss.to(lm_loss.dtype))
    out.loss.backward()
    assert model.model.sink_tokens.weight.grad.abs().sum() > 0


def test_upcycling_rejects_bad_arguments(dense, moe_model):
    seven_b = SpikingBrainForCausalLM(SpikingBrainConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48))
    with pytest.raises(ValueError, match="intra_layer"):
        upcycle_to_moe(seven_b, num_experts=4)
    with pytest.raises(ValueError, match="already"):
        upcycle_to_moe(moe_model, num_experts=4)
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        upcycle_to_moe(dense, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match="dense_ffn_layers"):
        upcycle_to_moe(dense, num_experts=2, dense_ffn_layers=[LAYERS])
