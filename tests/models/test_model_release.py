"""Loading the released SpikingBrain-7B layout (facts section 4) without remote code.

The checkpoint is written here from the release's documented names and config.json fields, not from our
model, so these tests check that our module tree matches the release's names and shapes.
"""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from sb_layers.models.spikingbrain import (
    GLASwaConfig,
    SpikingBrainConfig,
    SpikingBrainForCausalLM,
    checkpoint_shapes,
    save_released_checkpoint,
)
from sb_layers import spiking_layers, weight_code_stats
from sb_layers.spiking_linear import SpikeCoding, SpikingLinear

HIDDEN, HEADS, KV_HEADS, INTER, VOCAB, LAYERS = 32, 4, 2, 48, 101, 4
HEAD_DIM = HIDDEN // HEADS
KV = KV_HEADS * HEAD_DIM

RELEASED_CONFIG = {  # the release's config.json fields (facts section 4), at tiny size
    "architectures": ["GLAswaForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_gla_swa.GLAswaConfig", "AutoModelForCausalLM": "modeling_gla_swa.GLAswaForCausalLM"},
    "model_type": "gla_swa",
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "intermediate_size": INTER,
    "hidden_act": "swish",
    "sliding_window": 6,
    "rope_theta": 1000000.0,
    "norm_eps": 1e-06,
    "max_position_embeddings": 131072,
    "attn_mode": "chunk",
    "use_short_conv": False,
    "conv_size": 4,
    "attn_layers": [1, 3],
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
    "fuse_cross_entropy": True,  # an extra field of the release we do not use: kept, not rejected
}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


def released_shapes(w8aspike: bool = False) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of the release (prefix ``model.``), from facts section 4."""
    shapes = {"model.embeddings.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({p + "attn_norm.weight": (HIDDEN,), p + "mlp_norm.weight": (HIDDEN,)})
        shapes.update({p + "attn.q_proj.weight": (HIDDEN, HIDDEN), p + "attn.q_proj.bias": (HIDDEN,)})
        for name in ("k_proj", "v_proj"):
            shapes.update({p + f"attn.{name}.weight": (KV, HIDDEN), p + f"attn.{name}.bias": (KV,)})
        shapes[p + "attn.o_proj.weight"] = (HIDDEN, HIDDEN)
        if i % 2 == 0:  # GLA
            if w8aspike:
                shapes.update({p + "attn.gk_proj.weight": (KV, HIDDEN), p + "attn.gk_proj.bias": (KV,)})
            else:
                shapes.update({p + "attn.gk_proj.0.weight": (16, HIDDEN), p + "attn.gk_proj.1.weight": (KV, 16), p + "attn.gk_proj.1.bias": (KV,)})
            shapes[p + "attn.g_norm.weight"] = (HEAD_DIM,)
        shapes.update({p + "mlp.gate_proj.weight": (INTER, HIDDEN), p + "mlp.up_proj.weight": (INTER, HIDDEN), p + "mlp.down_proj.weight": (HIDDEN, INTER)})
    return shapes


def write_released_checkpoint(directory, w8aspike: bool = False, group: int = 16) -> dict[str, torch.Tensor]:
    """Two bfloat16 safetensors shards + index + config.json, as the release ships them."""
    gen = torch.Generator().manual_seed(0)
    tensors = {name: (0.2 * torch.randn(shape, generator=gen)).to(torch.bfloat16) for name, shape in released_shapes(w8aspike).items()}
    if w8aspike:
        for name in [n for n in tensors if n.endswith("_proj.weight") and ".g_norm" not in n]:
            out_features, in_features = tensors[name].shape
            scales = tensors[name].float().reshape(out_features, in_features // group, group).abs().amax(-1, keepdim=True) / 127
            tensors[name.replace(".weight", ".weight_quantizer.scales")] = scales
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(directory / file), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0}, "weight_map": {n: f for f, members in shards.items() for n in members}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(RELEASED_CONFIG))
    return tensors


def test_released_layout_loads_without_remote_code(tmp_path):
    tensors = write_released_checkpoint(tmp_path)
    model = SpikingBrainForCausalLM.from_pretrained(tmp_path)
    assert isinstance(model.config, GLASwaConfig) and model.config.model_type == "gla_swa"
    assert model.config.fuse_cross_entropy is True
    assert model.dtype == torch.bfloat16
    state = model.state_dict()
    assert set(state) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(state[name], tensor), name
    ids = torch.randint(3, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_auto_classes_map_the_release_model_type(tmp_path):
    write_released_checkpoint(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is GLASwaConfig
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert isinstance(model, SpikingBrainForCausalLM)
    assert model.config.attn_layers == [1, 3] and model.config.gla_gate == "low_rank"


def test_released_w8aspike_layout_loads_with_scales_and_merged_gate(tmp_path):
    tensors = write_released_checkpoint(tmp_path, w8aspike=True, group=16)
    model = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    config = model.config
    assert config.spiking and config.coding.weight_bits == 8 and config.coding.group_size == 16 and config.gla_gate == "merged"
    assert config.spike_attention and model.model.layers[1].attn.spike_query_k == 3.0  # spiking q, int8 KV
    layer0 = model.model.layers[0]
    assert isinstance(layer0.attn.gk_proj, SpikingLinear)
    assert isinstance(layer0.mlp.gate_proj, SpikingLinear)
    assert type(layer0.mlp.down_proj) is torch.nn.Linear  # the release feeds down_proj unspiked float input
    state = model.state_dict()
    for name, tensor in tensors.items():
        if ".mlp.down_proj.weight_quantizer" in name:
            assert name not in state  # stored by the release, unused by its forward
        else:
            torch.testing.assert_close(state[name], tensor.float(), rtol=0, atol=0, msg=name)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(3, VOCAB, (1, 7))).logits).all()


def write_released_w8aspike_past_int8(directory, share: float = 0.01, largest: int = 250, group: int = 16):
    """A W8ASpike checkpoint in the release's layout (float32 weights and scales) whose scales put about
    ``share`` of the codes ``round(w / s)`` past int8, up to ``|code| = largest``, as the published
    checkpoint's do: every stored weight is ``code * s`` plus noise below a quarter scale."""
    tensors = write_released_checkpoint(directory, w8aspike=True, group=group)
    gen = torch.Generator().manual_seed(1)
    for name in [n for n in tensors if n.endswith(".weight_quantizer.scales")]:
        weight_name = name.replace(".weight_quantizer.scales", ".weight")
        out_features, in_features = tensors[weight_name].shape
        scales = torch.rand(out_features, in_features // group, 1, generator=gen) * 2e-3 + 1e-3
        codes = torch.randint(-127, 128, (out_features, in_features), generator=gen)
        past = torch.rand(out_features, in_features, generator=gen) < share
        wide = torch.randint(128, largest + 1, (out_features, in_features), generator=gen)
        codes = torch.where(past, wide * torch.where(codes < 0, -1, 1), codes)
        noise = (torch.rand(out_features, in_features, generator=gen) - 0.5) * 0.5
        grouped = ((codes + noise).reshape(out_features, -1, group) * scales).reshape(out_features, in_features)
        tensors[weight_name], tensors[name] = grouped.float(), scales
    for file in directory.glob("*.safetensors"):
        file.unlink()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "model.safetensors.index.json").unlink()
    return tensors


def release_formula_logits(tensors, ids, group: int = 16) -> torch.Tensor:
    """The release's W8ASpike forward in float64 from its stored tensors: every spike-coded projection's
    weight is ``round(w / s) * s`` computed in float32 with no clamp (what the release's quantizer does),
    activations spike-coded, keys and values int8 per head vector: our model with weight quantization off
    runs on those weights (its spiking activations and int8 KV are tested on their own elsewhere)."""
    config = SpikingBrainConfig(**{k: v for k, v in RELEASED_CONFIG.items() if k not in ("architectures", "auto_map", "model_type", "torch_dtype")})
    config.spiking, config.coding, config.gla_gate, config.spike_down_proj = True, {"weight_bits": None}, "merged", False
    config.spike_attention = True
    model = SpikingBrainForCausalLM(config).to(torch.float64).eval()
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight_quantizer.scales"):
            continue
        scales = tensors.get(name.removesuffix(".weight") + ".weight_quantizer.scales")
        if name.endswith(".weight") and scales is not None and ".mlp.down_proj." not in name:
            w = tensor.float()
            out_features, in_features = w.shape
            codes = torch.round(w.reshape(out_features, -1, group) / scales)  # float32, no clamp
            tensor = (codes * scales).reshape(out_features, in_features)
        state[name] = tensor.double()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(ids).logits


def test_released_w8aspike_codes_past_int8_load_exactly(tmp_path, caplog):
    """About 1% of the weight codes past int8, up to +-250: our model's logits equal the release's formula
    within 1e-6 relative, the loading log and the spike report say how many codes passed int8, and a
    model that clamps the codes (the bug this replaces) is far off."""
    from transformers.utils import logging as hf_logging

    tensors = write_released_w8aspike_past_int8(tmp_path)
    ids = torch.randint(3, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))
    want = release_formula_logits(tensors, ids)
    hf_logging.set_verbosity_info()
    try:
        with caplog.at_level("INFO"):
            model = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    finally:
        hf_logging.set_verbosity_warning()
    with torch.no_grad():
        got = model(ids).logits
    assert float((got - want).norm() / want.norm()) < 1e-6
    stats = weight_code_stats(model)
    assert len(stats) == 4 * 4 + 4 * 2 + 2  # q/k/v/o and gate/up of 4 layers, the 2 merged GLA gates
    share = sum(s.past_int8 for s in stats.values()) / sum(s.codes for s in stats.values())
    assert 0.005 < share < 0.02 and max(s.largest for s in stats.values()) <= 250
    assert "weight codes past int8" in caplog.text and f"largest |code| {max(s.largest for s in stats.values())}" in caplog.text
    report = record_and_report(model, ids)
    assert report.layers["model.layers.0.mlp.gate_proj"].weight_codes == stats["model.layers.0.mlp.gate_proj"]
    assert "weight codes past int8" in report.format()
    for layer in spiking_layers(model).values():  # the bug this replaces: codes clamped to +-127
        layer.weight_quantizer.clip = True
    with torch.no_grad():
        clamped = model(ids).logits
    assert float((clamped - want).norm() / want.norm()) > 1e-3


def record_and_report(model, ids):
    from sb_layers import record_spikes

    return record_spikes(model, [ids]).report


def test_writer_produces_the_released_layout_and_round_trips(tmp_path):
    config = SpikingBrainConfig(**{k: v for k, v in RELEASED_CONFIG.items() if k not in ("architectures", "auto_map", "model_type", "torch_dtype")})
    source = SpikingBrainForCausalLM(config).eval()
    save_released_checkpoint(source.state_dict(), config, tmp_path, max_shard_bytes=20_000, dtype=None)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "gla_swa" and written["architectures"] == ["GLAswaForCausalLM"]
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert set(checkpoint_shapes(tmp_path)) == set(released_shapes())
    loaded = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = torch.randint(3, VOCAB, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, source(ids).logits)


def test_writer_rejects_bad_shard_size(tmp_path):
    with pytest.raises(ValueError, match="max_shard_bytes"):
        save_released_checkpoint({}, SpikingBrainConfig(), tmp_path, max_shard_bytes=0)


def test_our_model_type_is_registered_with_the_auto_classes(tmp_path):
    config = AutoConfig.for_model(
        "spikingbrain", vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=INTER, sliding_window=6,
    )
    assert type(config) is SpikingBrainConfig and config.model_type == "spikingbrain"
    model = AutoModelForCausalLM.from_config(config)
    assert type(model) is SpikingBrainForCausalLM
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "spikingbrain"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is SpikingBrainForCausalLM
    ids = torch.randint(3, VOCAB, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


# --- from_pretrained(path, <config field>=value) overrides the saved config, as for every HF model ----------


def _save_tiny_qwen2(directory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=HEADS,
                         num_key_value_heads=KV_HEADS, intermediate_size=INTER, bos_token_id=1, eos_token_id=2)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return Qwen2ForCausalLM, "rms_norm_eps"


def _save_tiny_ours(directory):
    config = SpikingBrainConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                                num_key_value_heads=KV_HEADS, intermediate_size=INTER, sliding_window=6,
                                bos_token_id=1, eos_token_id=2)
    SpikingBrainForCausalLM(config).save_pretrained(directory)
    return SpikingBrainForCausalLM, "norm_eps"


def _save_tiny_release(directory):
    write_released_checkpoint(directory)
    from sb_layers.models.spikingbrain import GLASwaForCausalLM

    return GLASwaForCausalLM, "norm_eps"


def _save_tiny_release_auto(directory):
    write_released_checkpoint(directory)
    return AutoModelForCausalLM, "norm_eps"


SAVERS = [_save_tiny_qwen2, _save_tiny_ours, _save_tiny_release, _save_tiny_release_auto]


@pytest.mark.parametrize("save", SAVERS, ids=["qwen2", "spikingbrain", "gla_swa", "gla_swa-auto"])
def test_from_pretrained_keyword_overrides_a_config_field(tmp_path, save):
    model_class, field = save(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved.get(field, 1e-6) != 1e-3
    model = model_class.from_pretrained(tmp_path, dtype=torch.float32, **{field: 1e-3})
    assert getattr(model.config, field) == 1e-3
    assert model.dtype == torch.float32  # loading options still reach the loader
    norm = model.model.norm
    assert getattr(norm, "eps", getattr(norm, "variance_epsilon", None)) == 1e-3  # the model is built from it
    with torch.no_grad():
        assert torch.isfinite(model(torch.randint(3, VOCAB, (1, 5))).logits).all()
    assert json.loads((tmp_path / "config.json").read_text()) == saved  # the saved file is untouched


@pytest.mark.parametrize("save", SAVERS[:3], ids=["qwen2", "spikingbrain", "gla_swa"])
def test_from_pretrained_unknown_keyword_reaches_the_model_init_as_in_hf(tmp_path, save):
    model_class, _ = save(tmp_path)
    with pytest.raises(TypeError, match="not_a_field"):
        model_class.from_pretrained(tmp_path, not_a_field=1)


@pytest.mark.parametrize("save", [_save_tiny_ours, _save_tiny_release], ids=["spikingbrain", "gla_swa"])
@pytest.mark.parametrize(
    "override, match",
    [(dict(norm_eps=-1.0), "norm_eps"), (dict(hidden_act="gelu"), "hidden_act"), (dict(num_hidden_layers=1), "attn_layers")],
)
def test_from_pretrained_override_is_validated_like_a_new_config(tmp_path, save, override, match):
    model_class, _ = save(tmp_path)
    with pytest.raises(ValueError, match=match):
        model_class.from_pretrained(tmp_path, **override)


def test_from_pretrained_variant_keeps_its_loader_meaning(tmp_path):
    """``variant`` is both a loading option of transformers (the weight-file variant) and our config field:
    the loading option wins, as it does in transformers; the config's variant is set through ``config=``."""
    model_class, _ = _save_tiny_ours(tmp_path)
    with pytest.raises(OSError, match="model.intra_layer.safetensors"):
        model_class.from_pretrained(tmp_path, variant="intra_layer")


def test_from_pretrained_explicit_config_is_not_overridden(tmp_path):
    model_class, _ = _save_tiny_ours(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, norm_eps=1e-2)
    model = model_class.from_pretrained(tmp_path, config=config)
    assert model.config.norm_eps == 1e-2


# --- nested coding: overrides, the old flat config.json format, the model class of "gla_swa" ------------


def test_from_pretrained_coding_override_updates_the_named_fields(tmp_path):
    """``coding={...}`` overrides the saved coding's fields it names and keeps the others."""
    write_released_checkpoint(tmp_path, w8aspike=True, group=16)
    model = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, coding={"k": 4.0, "mode": "spike"})
    coding = model.config.coding
    assert (coding.k, coding.mode, coding.weight_bits, coding.group_size) == (4.0, "spike", 8, 16)
    assert model.model.layers[0].attn.q_proj.coding == coding and model.model.layers[1].attn.spike_query_k == 4.0


def test_from_pretrained_coding_override_is_validated(tmp_path):
    _save_tiny_ours(tmp_path)
    with pytest.raises(ValueError, match=r"coding\.k"):
        SpikingBrainForCausalLM.from_pretrained(tmp_path, coding={"k": 0.0})
    with pytest.raises(ValueError, match="unknown SpikeCoding fields"):
        SpikingBrainForCausalLM.from_pretrained(tmp_path, coding={"threshold": 1.0})


def test_from_pretrained_coding_override_reaches_the_layers(tmp_path):
    _save_tiny_ours(tmp_path)
    model = SpikingBrainForCausalLM.from_pretrained(tmp_path, spiking=True, coding={"k": 4.0})
    assert model.config.coding.k == 4.0 and model.model.layers[0].attn.q_proj.coding.k == 4.0


def test_from_pretrained_flat_field_override_is_an_error_naming_coding(tmp_path):
    _save_tiny_ours(tmp_path)
    with pytest.raises(ValueError, match=r"spike_k.*coding\.k"):
        SpikingBrainForCausalLM.from_pretrained(tmp_path, spiking=True, spike_k=4.0)


def test_released_config_json_loads_without_deprecation_warnings(tmp_path):
    write_released_checkpoint(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is GLASwaConfig and not config.spiking and config.coding == SpikeCoding()


def test_old_flat_config_json_is_an_error_naming_coding(tmp_path):
    """config.json in the old flat format (``spike_*`` / ``weight_bits`` / ``group_size`` keys): a ValueError
    naming each old key and its ``coding.<field>``, through every loader; nothing accepted silently."""
    config = SpikingBrainConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                                num_key_value_heads=KV_HEADS, intermediate_size=INTER, sliding_window=6, spiking=True,
                                coding=SpikeCoding(k=5.0, codec="ternary", clamp=(-8, 7), mode="spike", weight_bits=8, group_size=16))
    SpikingBrainForCausalLM(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["coding"]["clamp"] == [-8, 7] and "spike_k" not in saved  # the new layout: a nested dict
    old = {key: value for key, value in saved.items() if key != "coding"}
    old.update(spike_k=5.0, spike_codec="ternary", spike_clamp=[-8, 7], spike_mode="spike", weight_bits=8, group_size=16,
               spike_backend="torch")
    (tmp_path / "config.json").write_text(json.dumps(old))
    for load in (lambda: SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float32),
                 lambda: AutoConfig.from_pretrained(tmp_path), lambda: SpikingBrainConfig.from_pretrained(tmp_path)):
        with pytest.raises(ValueError) as raised:
            load()
        for key, field in (("spike_k", "k"), ("spike_codec", "codec"), ("spike_clamp", "clamp"), ("spike_mode", "mode"),
                           ("weight_bits", "weight_bits"), ("group_size", "group_size"), ("spike_backend", "backend")):
            assert re.search(rf"\bcoding\.{field} for {key}\b", str(raised.value)), str(raised.value)
    (tmp_path / "config.json").write_text(json.dumps(saved))  # the nested layout loads back the same coding
    assert SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).config.coding == config.coding


@pytest.mark.parametrize("old, new", [
    ("spike_k", "k"), ("spike_codec", "codec"), ("spike_clamp", "clamp"), ("spike_mode", "mode"),
    ("weight_bits", "weight_bits"), ("group_size", "group_size"), ("spike_backend", "backend"),
])
@pytest.mark.parametrize("config_class", [SpikingBrainConfig, GLASwaConfig])
def test_flat_config_fields_are_errors_naming_coding_and_coding_sets_them(config_class, old, new):
    value = {"k": 5.0, "codec": "ternary", "clamp": [-8, 7], "mode": "spike", "weight_bits": 8, "group_size": 16,
             "backend": "auto"}[new]
    tiny = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                num_key_value_heads=KV_HEADS, intermediate_size=INTER)
    with pytest.raises(ValueError, match=rf"coding\.{new} for {old}\b"):
        config_class(**tiny, **{old: value})  # keyword
    config = config_class(**tiny, coding={new: value})
    expected = tuple(value) if new == "clamp" else value
    assert getattr(config.coding, new) == expected
    with pytest.raises(AttributeError, match=old):
        getattr(config, old)  # attribute read
    with pytest.raises(ValueError, match=rf"coding\.{new} for {old}\b"):
        setattr(config, old, value)  # attribute write
    assert getattr(config.coding, new) == expected and old not in config.to_dict()
    config = config_class(**tiny)
    config.coding = {new: value}  # the current form of the write
    assert getattr(config.coding, new) == expected


def test_glaswa_for_causal_lm_is_the_model_class_of_gla_swa_and_has_no_second_name():
    import sb_layers.models.spikingbrain as package
    from sb_layers.models.spikingbrain import GLASwaForCausalLM, modeling

    assert not hasattr(package, "GLAswaForCausalLM") and not hasattr(modeling, "GLAswaForCausalLM")
    assert GLASwaForCausalLM.config_class is GLASwaConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    assert MODEL_FOR_CAUSAL_LM_MAPPING[GLASwaConfig] is GLASwaForCausalLM


def test_released_architecture_name_still_loads_through_auto_classes(tmp_path):
    write_released_checkpoint(tmp_path)  # config.json: architectures ["GLAswaForCausalLM"], model_type gla_swa
    from sb_layers.models.spikingbrain import GLASwaForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(model) is GLASwaForCausalLM
