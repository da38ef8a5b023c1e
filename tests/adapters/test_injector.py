"""PEFT-style injector: SpikingConfig, target matching, inject/unload, record_spikes, calibrate.

Tiny HuggingFace models are built from configs (no downloads), six families: GPT-2 (Conv1D projections),
Llama, Qwen2, Mistral and OPT (causal LMs with nn.Linear projections) and BERT (a masked-LM encoder).
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.pytorch_utils import Conv1D

from sb_adapters import (
    SpikingConfig,
    SpikingConv1D,
    calibrate,
    get_spiking_config,
    inject_spiking,
    spiking_layers,
    record_spikes,
    spiking_summary,
    unload_spiking,
)
from sb_adapters.config import CODING_KEYWORDS
from sb_adapters.injector import get_injection
from sb_adapters.matching import iter_targets, layer_index, spec_matches
from sb_layers import GatedLinearAttention, SpikeCoding, SpikingLinear
from sb_neurons import CODEC_NAMES

VOCAB = 64


def tiny_gpt2() -> nn.Module:
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def tiny_llama() -> nn.Module:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_qwen2() -> nn.Module:
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_mistral() -> nn.Module:
    config = MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=None, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    )
    return MistralForCausalLM(config).eval()


def tiny_opt() -> nn.Module:
    config = OPTConfig(
        vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    return OPTForCausalLM(config).eval()


def tiny_bert() -> nn.Module:
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    return BertForMaskedLM(config).eval()


CAUSAL_MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "qwen2": tiny_qwen2, "mistral": tiny_mistral, "opt": tiny_opt}
MODELS = {**CAUSAL_MODELS, "bert": tiny_bert}


def token_ids(seed: int = 0, batch: int = 2, length: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


# -- SpikingConfig ----------------------------------------------------------------------------------

configs = st.builds(
    SpikingConfig,
    target_modules=st.one_of(
        st.just("all-linear"), st.just(r".*\.(q|k)_proj"), st.lists(st.sampled_from(["q_proj", "c_attn", "mlp.up_proj"]), min_size=1, unique=True)
    ),
    exclude_modules=st.one_of(st.none(), st.just(["lm_head"]), st.just(r".*\.0\..*")),
    coding=st.builds(
        SpikeCoding,
        k=st.floats(0.1, 100.0),
        codec=st.sampled_from(CODEC_NAMES[1:]),
        mode=st.sampled_from(["count", "spike"]),
        clamp=st.one_of(st.none(), st.integers(2, 16), st.tuples(st.integers(-64, 0), st.integers(0, 64))),
        weight_bits=st.one_of(st.none(), st.integers(2, 8)),
        group_size=st.one_of(st.none(), st.sampled_from([16, 32, 128])),
    ),
    spike_qk=st.booleans(),
    dense_layers=st.one_of(st.none(), st.lists(st.integers(0, 30), min_size=1, max_size=4)),
    record_stats=st.booleans(),
)


@given(config=configs)
def test_config_round_trips_through_json(config):
    assert SpikingConfig.from_json_string(config.to_json_string()) == config
    assert SpikingConfig.from_dict(config.to_dict()) == config


def test_config_save_and_load_pretrained(tmp_path):
    config = SpikingConfig(target_modules=["q_proj", "v_proj"], dense_layers=[1], coding=SpikeCoding(k=5.0, clamp=(-8, 7), weight_bits=8))
    config.save_pretrained(tmp_path / "run")
    assert (tmp_path / "run" / "spiking_config.json").is_file()
    assert SpikingConfig.from_pretrained(tmp_path / "run") == config
    with pytest.raises(FileNotFoundError, match="spiking_config.json"):
        SpikingConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(target_modules=None), ValueError, "target_modules"),
        (dict(target_modules=[]), ValueError, "target_modules"),
        (dict(target_modules="(unclosed"), ValueError, "regular expression"),
        (dict(target_modules=[3]), TypeError, "target_modules"),
        (dict(exclude_modules="all-linear"), ValueError, "exclude_modules"),
        (dict(coding=dict(k=0.0)), ValueError, "k"),
        (dict(coding=dict(codec="morse")), ValueError, "codec"),
        (dict(coding=dict(mode="dense")), ValueError, "mode"),
        (dict(coding=dict(weight_bits=16)), ValueError, "weight_bits"),
        (dict(coding=dict(threshold=1.0)), ValueError, "unknown SpikeCoding fields"),
        (dict(coding=3.0), TypeError, "coding"),
        (dict(rank=8), TypeError, "rank"),
        (dict(dense_layers=[-1]), ValueError, "dense_layers"),
        (dict(spike_qk="yes"), TypeError, "spike_qk"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpikingConfig(**kwargs)


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown SpikingConfig fields"):
        SpikingConfig.from_dict({"coding": {"k": 3.0}, "r": 8})


def test_config_coding_is_the_spike_coding_and_a_dict_fills_it():
    config = SpikingConfig(coding={"k": 5.0, "clamp": [-8, 7]})
    assert config.coding == SpikeCoding(k=5.0, clamp=(-8, 7)) and config.spike_coding() is config.coding
    assert config.to_dict()["coding"] == {**SpikeCoding().to_dict(), "k": 5.0, "clamp": [-8, 7]}


# The PEFT-style flat keywords (as LoraConfig(r=8)): each sets that field of coding, without a warning.
FLAT_KEYWORDS = dict(k=5.0, codec="ternary", mode="spike", clamp=8, weight_bits=4, group_size=16, backend="auto", weight_clip=True)
NEW_CODING = SpikeCoding(k=5.0, codec="ternary", mode="spike", clamp=8, weight_bits=4, group_size=16, backend="auto", weight_clip=True)


def test_flat_keywords_are_the_coding_fields():
    assert set(FLAT_KEYWORDS) == set(CODING_KEYWORDS) == {f.name for f in dataclasses.fields(SpikeCoding)}


@pytest.mark.parametrize("name", sorted(FLAT_KEYWORDS))
def test_flat_keyword_sets_its_coding_field_without_a_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = SpikingConfig(**{name: FLAT_KEYWORDS[name]}, **({} if name != "backend" else {"coding": {"weight_bits": 8}}))
    assert getattr(config.coding, name) == getattr(NEW_CODING, name)


def test_flat_keywords_together_give_the_same_config():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = SpikingConfig(target_modules=["q_proj"], record_stats=True, **FLAT_KEYWORDS)
        documented = SpikingConfig(k=3, codec="ternary", target_modules=["q_proj", "v_proj"])
    assert flat == SpikingConfig(target_modules=["q_proj"], record_stats=True, coding=NEW_CODING)
    assert documented.coding == SpikeCoding(k=3, codec="ternary") and documented.target_modules == ["q_proj", "v_proj"]


def test_flat_keywords_update_the_given_coding_and_are_validated():
    base = SpikeCoding(k=2.0, weight_bits=8, group_size=32)
    assert SpikingConfig(coding=base, k=4.0).coding == dataclasses.replace(base, k=4.0)
    assert SpikingConfig(coding={"weight_bits": 8}, clamp=None).coding == SpikeCoding(weight_bits=8, clamp=None)
    with pytest.raises(ValueError, match="k must be"):
        SpikingConfig(k=0.0)
    with pytest.raises(ValueError, match="codec"):
        SpikingConfig(codec="morse")
    with pytest.raises(TypeError, match="weight_clip"):
        SpikingConfig(weight_clip="yes")


def test_a_codec_name_as_coding_is_a_type_error_naming_codec():
    with pytest.raises(TypeError, match=r"coding must be a SpikeCoding.*codec='ternary'"):
        SpikingConfig(coding="ternary")


@pytest.mark.parametrize("name", sorted(FLAT_KEYWORDS))
def test_flat_names_are_not_attributes_and_name_the_coding_field(name):
    config = SpikingConfig(coding=NEW_CODING)
    with pytest.raises(AttributeError, match=rf"coding\.{name}"):
        getattr(config, name)
    with pytest.raises(AttributeError, match=rf"coding\.{name}"):
        setattr(config, name, getattr(NEW_CODING, name))
    assert config.coding == NEW_CODING and name not in config.to_dict()


def test_old_flat_spiking_config_json_is_an_error_naming_coding(tmp_path):
    old = {  # spiking_config.json in the old flat format (coding = the codec name)
        "backend": "auto", "clamp": [-8, 7], "coding": "ternary", "dense_layers": [1], "exclude_modules": None,
        "group_size": 16, "k": 5.0, "mode": "spike", "record_stats": False, "spike_qk": False,
        "target_modules": ["q_proj", "v_proj"], "weight_bits": 4,
    }
    (tmp_path / "spiking_config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"spiking_config\.json") as raised:
        SpikingConfig.from_pretrained(tmp_path)
    for key, field in (("k", "k"), ("clamp", "clamp"), ("mode", "mode"), ("weight_bits", "weight_bits"),
                       ("group_size", "group_size"), ("backend", "backend"), (r"coding \(a codec name\)", "codec")):
        assert re.search(rf"coding\.{field} for {key}", str(raised.value)), str(raised.value)
    with pytest.raises(ValueError, match=r"coding\.k for k"):
        SpikingConfig.from_dict({"k": 5.0})
    new = SpikingConfig(
        target_modules=["q_proj", "v_proj"], dense_layers=[1],
        coding=SpikeCoding(k=5.0, codec="ternary", mode="spike", clamp=(-8, 7), weight_bits=4, group_size=16, backend="auto"),
    )
    new.save_pretrained(tmp_path)  # the nested layout loads back
    assert SpikingConfig.from_pretrained(tmp_path) == new
    assert "k" not in new.to_dict() and new.to_dict()["coding"]["codec"] == "ternary"


# -- target matching: PEFT's semantics --------------------------------------------------------------

SPECS = [["q_proj"], ["self_attn.q_proj", "mlp"], ["proj"], r".*\.(q|v)_proj", r"model\.layers\.1\..*", ["c_attn"], r".*attn.*"]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_target_matching_agrees_with_peft(spec, model_name):
    peft_config = LoraConfig(target_modules=spec)
    for name, _ in MODELS[model_name]().named_modules():
        if name:
            assert spec_matches(spec, name) == bool(check_target_module_exists(peft_config, name)), name


EXCLUDES = [["q_proj"], ["mlp"], r".*\.1\..*", ["attn.c_proj", "fc1"]]


@pytest.mark.parametrize("exclude", EXCLUDES, ids=str)
@pytest.mark.parametrize("model_name", ["llama", "gpt2", "opt"])
def test_exclude_modules_agree_with_peft(exclude, model_name):
    """Targets minus exclusions, module by module, as PEFT selects them (dense_layers aside)."""
    target = r".*(proj|attn|fc\d|mlp).*"
    peft_config = LoraConfig(target_modules=target, exclude_modules=exclude)
    config = SpikingConfig(target_modules=target, exclude_modules=exclude)
    model = MODELS[model_name]()
    ours = {name for name, _ in iter_targets(model, config)}
    theirs = {name for name, _ in model.named_modules() if name and bool(check_target_module_exists(peft_config, name))}
    assert ours == theirs


def test_layer_index_is_the_first_numbered_component():
    assert layer_index("model.layers.3.mlp.experts.7.up_proj") == 3
    assert layer_index("transformer.h.1.attn.c_attn") == 1
    assert layer_index("lm_head") is None


# -- inject / unload ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", list(MODELS))
def test_injected_model_approaches_the_original_at_high_k(model_name):
    torch.manual_seed(0)
    model = MODELS[model_name]()
    ids = token_ids()
    with torch.no_grad():
        reference = model(ids).logits
        errors = []
        for k in (3.0, 30.0, 300.0):
            inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=k)))
            errors.append((model(ids).logits - reference).abs().max().item())
            unload_spiking(model)
    scale = reference.abs().max().item()
    assert errors[2] < 1e-2 * scale
    assert errors[2] < errors[1] < errors[0]


@pytest.mark.parametrize("model_name", list(MODELS))
def test_all_linear_spikes_every_projection_but_the_output_head(model_name):
    model = MODELS[model_name]()
    linear = {name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))}
    head = {name for name, module in model.named_modules() if module is model.get_output_embeddings()}
    inject_spiking(model, SpikingConfig())
    assert len(head) == 1 and set(spiking_layers(model)) == linear - head


@pytest.mark.parametrize("model_name", list(CAUSAL_MODELS))
def test_generate_runs_after_injection_and_matches_the_original_at_high_k(model_name):
    """Greedy decoding (with the KV cache: one token per step) through spike-coded projections: at
    k = 3 it runs and yields valid tokens; at a very large k it reproduces the original's continuation."""
    torch.manual_seed(0)
    model = CAUSAL_MODELS[model_name]()
    prompt = token_ids(seed=2, batch=2, length=5)
    options = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False, pad_token_id=0)
    reference = model.generate(prompt, **options)
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=3.0, weight_bits=8, group_size=16)))
    coarse = model.generate(prompt, **options)
    assert coarse.shape == reference.shape and bool(((coarse >= 0) & (coarse < VOCAB)).all())
    assert torch.equal(coarse[:, :5], prompt)
    unload_spiking(model)
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=3000.0)))
    assert torch.equal(model.generate(prompt, **options), reference)


def test_config_options_reach_every_injected_layer():
    model = tiny_qwen2()
    config = SpikingConfig(record_stats=True, coding=SpikeCoding(k=5.0, codec="ternary", mode="spike", clamp=8, weight_bits=4, group_size=16, backend="auto"))
    inject_spiking(model, config)
    layers = spiking_layers(model)
    assert layers and all(layer.coding == config.spike_coding() and layer.record_stats for layer in layers.values())
    ids = token_ids(length=5)
    with torch.no_grad():
        model(ids)
        model(ids)
    for layer in layers.values():  # record_stats: statistics accumulate over calls
        assert layer.spike_stats.num_channels == 2 * ids.numel() * layer.in_features


def test_gpt2_conv1d_is_replaced_by_an_equivalent_view():
    model = tiny_gpt2()
    conv = model.transformer.h[0].attn.c_attn
    inject_spiking(model, SpikingConfig(target_modules=["c_attn"]))
    twin = model.transformer.h[0].attn.c_attn
    assert isinstance(twin, SpikingConv1D) and twin.shares_storage_with(conv) and twin.bias is conv.bias
    assert torch.equal(twin.weight, conv.weight.T)
    assert not isinstance(model.transformer.h[0].mlp.c_fc, SpikingLinear)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_unload_restores_the_original_objects_bit_exactly(model_name):
    model = MODELS[model_name]()
    before = snapshot(model)
    modules = dict(model.named_modules())
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16)))
    assert spiking_layers(model)
    unload_spiking(model)
    assert get_spiking_config(model) is None
    assert all(module is modules[name] for name, module in model.named_modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[key], after[key]) and before[key].dtype == after[key].dtype for key in before)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_state_dict_keys_are_the_original_ones_plus_weight_scales(model_name):
    model = MODELS[model_name]()
    original = snapshot(model)
    inject_spiking(model, SpikingConfig())
    assert {key: value.shape for key, value in model.state_dict().items()} == {key: value.shape for key, value in original.items()}
    model.load_state_dict(original)  # strict: the original checkpoint loads as is
    unload_spiking(model)
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16)))
    layers = spiking_layers(model)
    extra = set(model.state_dict()) - set(original)
    assert extra == {f"{name}.weight_quantizer.scales" for name in layers}
    assert set(original) <= set(model.state_dict())


def test_fine_tune_lowers_the_loss_and_unload_keeps_the_trained_weights():
    torch.manual_seed(0)
    model = tiny_gpt2().train()
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=3.0, weight_bits=8, group_size=16)))
    ids = token_ids(seed=1, batch=4, length=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    trained = model.transformer.h[1].mlp.c_fc.weight.detach().clone()
    unload_spiking(model)
    conv = model.transformer.h[1].mlp.c_fc
    assert isinstance(conv, Conv1D) and torch.equal(conv.weight, trained.T)


def test_conv1d_weights_survive_a_dtype_change_before_unload():
    model = tiny_gpt2()
    inject_spiking(model, SpikingConfig(target_modules=["c_fc"]))
    model.double()
    twin = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    unload_spiking(model)
    conv = model.transformer.h[0].mlp.c_fc
    assert conv.weight.dtype == torch.float64 and torch.equal(conv.weight, twin.T)


def test_exclude_modules_and_dense_layers_keep_layers_dense():
    model = tiny_llama()
    inject_spiking(model, SpikingConfig(target_modules=r".*_proj", exclude_modules=["o_proj"], dense_layers=[1]))
    names = set(spiking_layers(model))
    assert names == {f"model.layers.0.{part}" for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert not isinstance(model.lm_head, SpikingLinear)


def test_errors_are_clear():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="no module to spike-code"):
        inject_spiking(model, SpikingConfig(target_modules=["q_proj"]))
    with pytest.raises(TypeError, match="LayerNorm"):
        inject_spiking(model, SpikingConfig(target_modules=["ln_1"]))
    with pytest.raises(TypeError, match="SpikingConfig"):
        inject_spiking(model, {"k": 3.0})
    with pytest.raises(ValueError, match="no injected spiking layers"):
        unload_spiking(model)
    inject_spiking(model, SpikingConfig())
    with pytest.raises(RuntimeError, match="already injected"):
        inject_spiking(model, SpikingConfig())
    assert get_spiking_config(model) == SpikingConfig()


def test_spike_qk_switches_linear_attention_feature_maps_and_unload_restores_them():
    model = nn.Sequential(GatedLinearAttention(hidden_size=16, num_heads=2), nn.Linear(16, 16))
    inject_spiking(model, SpikingConfig(target_modules=["1"], spike_qk=True, coding=SpikeCoding(k=4.0)))
    assert model[0].spike_qk and model[0].coding.k == 4.0
    assert isinstance(model[1], SpikingLinear)
    unload_spiking(model)
    assert not model[0].spike_qk and model[0].coding is None


def test_spiking_summary_lists_replaced_and_dense_modules_with_reasons():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="inject_spiking"):
        spiking_summary(model)
    inject_spiking(model, SpikingConfig(exclude_modules=["c_proj"], dense_layers=[1], coding=SpikeCoding(weight_bits=8, group_size=16)))
    lines = spiking_summary(model).splitlines()
    assert lines[0].startswith("spiking: 2 modules spike-coded (k=3, bitwise_bidirectional") and "int8 weights, group 16" in lines[0]
    assert "  transformer.h.0.attn.c_attn: Conv1D -> SpikingConv1D" in lines
    assert "  transformer.h.0.mlp.c_fc: Conv1D -> SpikingConv1D" in lines
    assert "kept dense: 7 linear modules" in lines
    assert "  transformer.h.0.attn.c_proj: Conv1D, exclude_modules" in lines
    assert "  transformer.h.1.mlp.c_fc: Conv1D, dense_layers (layer 1)" in lines
    assert "  lm_head: Linear, output head" in lines
    unload_spiking(model)
    inject_spiking(model, SpikingConfig(target_modules=["c_fc"]))
    assert "  transformer.h.0.attn.c_attn: Conv1D, not targeted" in spiking_summary(model).splitlines()


def test_peft_cannot_register_spiking_as_a_method():
    """Why SpikingConfig is no PEFT method (see sb_adapters.injector): register_peft_method takes only members
    of the closed PeftType enum. If this starts failing, PEFT opened the enum: register SpikingConfig then."""
    from peft.utils.peft_types import PeftType, register_peft_method

    assert "SPIKING" not in PeftType.__members__
    with pytest.raises(ValueError, match="Unknown PEFT type"):
        register_peft_method(name="spiking", config_cls=SpikingConfig, model_cls=nn.Module)


def test_lora_composes_with_an_injected_model_saves_loads_and_unloads(tmp_path):
    torch.manual_seed(0)
    ids = token_ids(seed=3, length=6)
    injected = inject_spiking(tiny_llama(), SpikingConfig(target_modules=["q_proj", "v_proj", "up_proj"], coding=SpikeCoding(k=3.0)))
    base_state = snapshot(injected)
    with torch.no_grad():
        spiking = injected(ids).logits
    peft_model = get_peft_model(injected, LoraConfig(target_modules=["q_proj", "down_proj"], r=2, init_lora_weights=False))
    q_proj = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, SpikingLinear)  # LoRA wraps the spiking layer
    with torch.no_grad():
        adapted = peft_model(ids).logits
    assert not torch.equal(adapted, spiking)
    peft_model.save_pretrained(tmp_path / "lora")
    get_spiking_config(peft_model).save_pretrained(tmp_path / "lora")  # the spiking config travels beside the adapter

    # a fresh base model, injected from the saved config, then the saved LoRA adapter: same outputs
    fresh = tiny_llama()
    fresh.load_state_dict(base_state)
    inject_spiking(fresh, SpikingConfig.from_pretrained(tmp_path / "lora"))
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "lora")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, adapted)

    # unload through the PeftModel: the original Linear goes back under the LoRA wrapper
    originals = dict(get_injection(loaded).originals)
    unload_spiking(loaded)
    assert get_spiking_config(loaded) is None and not spiking_layers(loaded)
    assert loaded.base_model.model.model.layers[0].self_attn.q_proj.base_layer is originals["model.layers.0.self_attn.q_proj"]
    dense_lora = PeftModel.from_pretrained(tiny_llama_with(base_state), tmp_path / "lora")
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, dense_lora(ids).logits)


def tiny_llama_with(state: dict[str, torch.Tensor]) -> nn.Module:
    model = tiny_llama()
    model.load_state_dict(state)
    return model


def test_unload_refuses_a_layer_replaced_after_injection_and_changes_nothing():
    model = tiny_llama()
    inject_spiking(model, SpikingConfig(target_modules=["q_proj"]))
    model.model.layers[1].self_attn.q_proj = nn.Identity()
    with pytest.raises(RuntimeError, match="model.layers.1.self_attn.q_proj"):
        unload_spiking(model)
    assert isinstance(model.model.layers[0].self_attn.q_proj, SpikingLinear) and get_spiking_config(model) is not None


# -- record_spikes ------------------------------------------------------------------------------------


def test_record_spikes_accounts_for_every_layer():
    model = tiny_llama()
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=3.0)))
    ids = token_ids(length=6)
    report, (output,) = record_spikes(model, [{"input_ids": ids}])
    assert output.logits.shape[:2] == ids.shape
    layers = spiking_layers(model)
    assert list(report.layers) == list(layers)
    for name, layer in report.layers.items():
        stats = layer.stats
        assert stats.num_channels == ids.numel() * layers[name].in_features
        assert layer.macs == stats.num_channels * layers[name].out_features
        assert 0.0 <= stats.silent_channel_fraction <= 1.0 and 0.0 <= stats.firing_rate <= 1.0
        assert int(stats.count_histogram.sum()) == stats.num_channels
    assert report.total.num_channels == sum(layer.stats.num_channels for layer in report.layers.values())
    assert report.total.total_spikes == sum(layer.stats.total_spikes for layer in report.layers.values())
    weighted = sum(layer.stats.total_spikes * layer.out_features for layer in report.layers.values()) / report.total_macs
    assert report.energy.mean_spikes_per_channel == pytest.approx(weighted)
    assert report.energy_pj()["spiking"] == pytest.approx(report.total_macs * weighted * 0.03)
    text = str(report)
    assert all(name in text for name in layers) and "total" in text and "FP16" in text
    assert all(not layer.record_stats and layer.spike_stats is None for layer in layers.values())
    with pytest.raises(ValueError, match="no spiking layers"):
        record_spikes(tiny_gpt2(), [ids])


# -- calibrate ----------------------------------------------------------------------------------------


def test_calibrate_never_increases_the_output_error_on_its_data():
    torch.manual_seed(0)
    model = tiny_qwen2()
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(weight_bits=3, group_size=16)))
    layers = spiking_layers(model)
    max_abs = {name: layer.weight_quantizer.scales.clone() for name, layer in layers.items()}
    results = calibrate(model, [token_ids(seed) for seed in range(3)], progress=False)
    assert set(results) == set(layers)
    for name, result in results.items():
        assert result.error_calibrated <= result.error_max_abs
        ratios = layers[name].weight_quantizer.scales / max_abs[name]
        assert bool(((ratios <= 1.0 + 1e-6) & (ratios >= 0.7 - 1e-6)).all())
    assert any(result.error_calibrated < result.error_max_abs for result in results.values())


def test_calibrate_needs_quantized_weights_and_batches():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="inject_spiking"):
        calibrate(model, [token_ids()], progress=False)
    inject_spiking(model, SpikingConfig())
    with pytest.raises(ValueError, match="weight_bits"):
        calibrate(model, [token_ids()], progress=False)
    unload_spiking(model)
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16)))
    with pytest.raises(ValueError, match="empty"):
        calibrate(model, [], progress=False)
    with pytest.raises(ValueError, match="clip_ratios"):
        calibrate(model, [token_ids()], clip_ratios=[1.5], progress=False)
