"""upcycle_mlps: the MLPs of HuggingFace GLU models as upcycled mixtures of experts (issue: new users)."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from sb_adapters.tiny import tiny_model
from sb_adapters.upcycle import load_upcycled, upcycle_mlps
from sb_layers import MoE

pytestmark = pytest.mark.usefixtures("single_thread")


def llama(hidden_act="silu", seed=0):
    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, hidden_act=hidden_act, pad_token_id=0)
    return tf.LlamaForCausalLM(config).to(torch.float64).eval()


@settings(max_examples=12, deadline=None)
@given(arch=st.sampled_from(["llama", "qwen2", "mistral"]), experts=st.integers(1, 6), data=st.data(),
       shared=st.integers(0, 2), router=st.sampled_from(["softmax", "sigmoid"]))
def test_upcycled_model_equals_the_dense_model_at_initialization(arch, experts, data, shared, router):
    top_k = data.draw(st.integers(1, experts))
    dense = tiny_model(arch).to(torch.float64)
    moe = tiny_model(arch).to(torch.float64)
    upcycled = upcycle_mlps(moe, experts, top_k=top_k, num_shared=shared, router=router)
    assert len(upcycled) == 2 and all(isinstance(m, MoE) for m in upcycled.values())
    ids = torch.randint(1, 64, (2, 9), generator=torch.Generator().manual_seed(experts))
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh", "relu"])
def test_the_models_own_activation_is_kept(act):
    dense, moe = llama(act), llama(act)
    upcycle_mlps(moe, 4, top_k=2, num_shared=1)
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-10, atol=1e-10)


def test_balancing_loss_reaches_the_loss_with_labels():
    model = llama()
    upcycle_mlps(model, 4, aux_loss_coef=0.05)
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    model.config.moe_upcycling["aux_loss_coef"] = 0.0
    with torch.no_grad():
        language_model_loss = model(ids, labels=ids).loss  # transformers' own loss alone
    model.config.moe_upcycling["aux_loss_coef"] = 0.05
    out = model(ids, labels=ids)
    moes = [m for m in model.modules() if isinstance(m, MoE)]
    assert len(moes) == 2 and all(m.aux_loss is not None for m in moes)
    torch.testing.assert_close(out.loss, language_model_loss + 0.05 * sum(m.aux_loss for m in moes), rtol=1e-12, atol=1e-12)
    out.loss.backward()
    assert all(m.router.weight.grad is not None for m in moes)  # the routers learn from it
    assert model(ids).loss is None  # no labels, no loss


def test_save_and_load_round_trip_exactly(tmp_path):
    model = llama()
    upcycle_mlps(model, 4, top_k=2, num_shared=1, aux_loss_coef=0.02)
    with torch.no_grad():  # routers and experts moved away from their copies, as after training
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path)
    loaded = load_upcycled(tmp_path)
    ids = torch.randint(1, 64, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.config.moe_upcycling == model.config.moe_upcycling
    torch.testing.assert_close(loaded(ids, labels=ids).loss, model(ids, labels=ids).loss, rtol=0, atol=0)


def test_bad_arguments_and_models_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="hidden_act='quick_gelu'"):
        upcycle_mlps(llama("quick_gelu"))
    with pytest.raises(ValueError, match=r"layers \[9\] are out of range"):
        upcycle_mlps(llama(), layers=[9])
    with pytest.raises(ValueError, match="top_k"):
        upcycle_mlps(llama(), 2, top_k=3)
    with pytest.raises(ValueError, match="aux_loss_coef"):
        upcycle_mlps(llama(), aux_loss_coef=-1.0)
    with pytest.raises(ValueError, match="no GLU MLP"):
        upcycle_mlps(tiny_model("gpt2"))
    model = llama()
    upcycle_mlps(model, layers=[1])
    assert isinstance(model.model.layers[1].mlp, MoE) and not isinstance(model.model.layers[0].mlp, MoE)
    with pytest.raises(ValueError, match="upcycled already"):
        upcycle_mlps(model)
    llama().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="moe_upcycling"):
        load_upcycled(tmp_path)


def test_all_linear_keeps_the_routers_dense():
    """Spike-coding a router re-routes tokens: "all-linear" leaves routers alone (as PEFT's leaves the head);
    naming one in target_modules still spike-codes it."""
    from sb_adapters import SpikingConfig, inject_spiking, spiking_summary, unload_spiking
    from sb_layers import SpikingLinear

    model = llama()
    upcycle_mlps(model, 4, top_k=2)
    inject_spiking(model, SpikingConfig())
    routers = [m.router for m in model.modules() if isinstance(m, MoE)]
    assert routers and not any(isinstance(r, SpikingLinear) for r in routers)
    assert isinstance(model.model.layers[0].mlp.experts[0].gate_proj, SpikingLinear)
    assert "router of a mixture of experts" in spiking_summary(model)
    unload_spiking(model)
    inject_spiking(model, SpikingConfig(target_modules=["router"]))
    assert all(isinstance(m.router, SpikingLinear) for m in model.modules() if isinstance(m, MoE))
