"""Saving an injected model writes its spiking config (and state) beside the weights; one call loads both
back into an injected model with the same outputs, exactly (PEFT's save_pretrained / from_pretrained)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sb_adapters
from sb_adapters import (
    SpikingConfig,
    calibrate,
    from_pretrained_spiking,
    get_spiking_config,
    inject_spiking,
    load_spiking,
    save_spiking,
    spiking_state_dict,
    unload_spiking,
)
from sb_adapters.config import CONFIG_NAME, STATE_NAME
from sb_layers import SpikeCoding
from sb_adapters.tiny import tiny_batches, tiny_model

BATCH = tiny_batches(1, batch=2, length=12, seed=7)[0]


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**BATCH).logits


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_calibrated_round_trip_gives_the_same_logits(arch, tmp_path):
    config = SpikingConfig(exclude_modules=["lm_head"], coding=SpikeCoding(k=4.0, weight_bits=8, group_size=16))
    model = inject_spiking(tiny_model(arch), config)
    calibrate(model, tiny_batches(2), clip_ratios=(1.0, 0.8, 0.6), progress=False)
    with torch.no_grad():  # and a state no config can rebuild: scales set by hand, row by row
        for layer in sb_adapters.spiking_layers(model).values():
            scales = layer.weight_quantizer.scales
            scales.mul_(torch.linspace(0.7, 1.0, scales.shape[0]).view(-1, 1, 1))
    before = logits(model)
    state = {key: value.clone() for key, value in spiking_state_dict(model).items()}
    assert state and all(key.endswith("weight_quantizer.scales") for key in state)

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == config.to_dict()
    assert (tmp_path / STATE_NAME).is_file()

    reloaded = from_pretrained_spiking(tmp_path)
    assert type(reloaded) is type(model)
    assert get_spiking_config(reloaded) == config
    assert torch.equal(logits(reloaded), before)
    for key, value in spiking_state_dict(reloaded).items():
        assert torch.equal(value, state[key]), key
    # The calibrated state matters: the config alone (max-abs scales) gives other logits.
    plain = inject_spiking(type(model).from_pretrained(tmp_path), config)
    assert not torch.equal(logits(plain), before)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_saved_weights_are_the_dense_checkpoint(arch, tmp_path):
    dense = tiny_model(arch)
    expected = logits(dense)
    inject_spiking(dense, SpikingConfig(coding=SpikeCoding(weight_bits=4, group_size=8))).save_pretrained(tmp_path)
    loaded = type(dense).from_pretrained(tmp_path)  # the plain class loads the folder as the dense model
    assert torch.equal(logits(loaded), expected)
    assert not any("weight_quantizer" in key for key in loaded.state_dict())


@settings(max_examples=8, deadline=None)
@given(
    k=st.sampled_from([1.0, 2.5, 8.0]),
    weight_bits=st.sampled_from([None, 4, 8]),
    dense_layers=st.sampled_from([None, [0], [1]]),
    mode=st.sampled_from(["count", "spike"]),
)
def test_round_trip_for_any_config(tmp_path_factory, k, weight_bits, dense_layers, mode):
    config = SpikingConfig(dense_layers=dense_layers, coding=SpikeCoding(k=k, weight_bits=weight_bits, group_size=16, mode=mode, codec="bitwise"))
    model = inject_spiking(tiny_model("qwen2", seed=3), config)
    directory = tmp_path_factory.mktemp("saved")
    model.save_pretrained(directory)
    assert (directory / STATE_NAME).is_file() == (weight_bits is not None)
    reloaded = from_pretrained_spiking(directory)
    assert get_spiking_config(reloaded) == config
    assert torch.equal(logits(reloaded), logits(model))


def test_load_spiking_injects_a_model_you_loaded(tmp_path):
    config = SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16))
    model = inject_spiking(tiny_model("gpt2"), config)
    calibrate(model, tiny_batches(1), progress=False)
    save_spiking(model, tmp_path)  # spiking files only, like PeftModel.save_pretrained
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, STATE_NAME]
    base = tiny_model("gpt2")  # the same dense weights, from elsewhere
    assert load_spiking(base, tmp_path) is base
    assert torch.equal(logits(base), logits(model))


def test_unload_restores_the_class_save_pretrained(tmp_path):
    model = inject_spiking(tiny_model("gpt2"), SpikingConfig())
    assert "save_pretrained" in model.__dict__
    unload_spiking(model)
    assert "save_pretrained" not in model.__dict__
    model.save_pretrained(tmp_path)
    assert not (tmp_path / CONFIG_NAME).exists()


def test_folder_without_spiking_config_is_refused(tmp_path):
    tiny_model("gpt2").save_pretrained(tmp_path)  # a dense model
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        from_pretrained_spiking(tmp_path)
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_spiking(tiny_model("gpt2"), tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained_spiking(tmp_path / "missing")


def test_mismatched_config_is_refused(tmp_path):
    model = inject_spiking(tiny_model("qwen2"), SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16)))
    model.save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    data = json.loads(path.read_text())

    path.write_text(json.dumps({**data, "coding": {**data["coding"], "weight_bits": None}}))  # state saved, config says float weights
    base = tiny_model("qwen2")
    with pytest.raises(ValueError, match="do not match"):
        load_spiking(base, tmp_path)
    assert get_spiking_config(base) is None  # left un-injected

    path.write_text(json.dumps({**data, "coding": {**data["coding"], "group_size": 8}}))  # scales of another shape
    with pytest.raises(ValueError, match="shape"):
        from_pretrained_spiking(tmp_path)

    path.write_text(json.dumps({**data, "target_modules": ["no_such_proj"]}))
    with pytest.raises(ValueError, match="no module"):
        from_pretrained_spiking(tmp_path)

    path.write_text(json.dumps({**data, "threshold": 1.0}))
    with pytest.raises(ValueError, match="unknown SpikingConfig fields"):
        from_pretrained_spiking(tmp_path)

    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        from_pretrained_spiking(tmp_path)

    path.write_text(json.dumps(data))  # and the untouched folder loads into a model of another shape? no
    with pytest.raises(ValueError, match="no module|do not match|shape"):
        load_spiking(torch.nn.Sequential(torch.nn.Linear(32, 48)), tmp_path)


def test_saving_refuses_layers_changed_after_injection(tmp_path):
    model = inject_spiking(tiny_model("gpt2"), SpikingConfig())
    layer = next(iter(sb_adapters.spiking_layers(model).values()))
    layer.coding = SpikingConfig(coding=SpikeCoding(k=9.0)).spike_coding()
    with pytest.raises(ValueError, match="changed after injection"):
        model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="inject_spiking"):
        save_spiking(tiny_model("gpt2"), tmp_path)


# --- a PeftModel around an injected model (issue "What new users tripped over", 10) ------------------


def test_peft_save_pretrained_of_an_injected_model_writes_the_spiking_files(tmp_path):
    """``peft.get_peft_model(injected, LoraConfig(...)).save_pretrained(dir)`` writes spiking_config.json and
    spiking_state.safetensors beside adapter_config.json, as PEFT writes its adapter config; the folder then
    loads back (load_spiking on a fresh base, then PeftModel.from_pretrained) with the same outputs."""
    from peft import LoraConfig, PeftModel, get_peft_model

    config = SpikingConfig(k=4.0, codec="ternary", dense_layers=[1], weight_bits=8, group_size=16)
    model = inject_spiking(tiny_model("llama"), config)
    calibrate(model, [BATCH], progress=False)  # scales of their own: the state must travel too
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"], r=2, init_lora_weights=False))
    peft_model.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", CONFIG_NAME, STATE_NAME} <= {p.name for p in tmp_path.iterdir()}
    assert SpikingConfig.from_pretrained(tmp_path) == get_spiking_config(peft_model)

    fresh = load_spiking(tiny_model("llama"), tmp_path)
    loaded = PeftModel.from_pretrained(fresh, tmp_path)
    assert torch.equal(logits(loaded), logits(peft_model))
    loaded.save_pretrained(tmp_path / "again")  # a PeftModel loaded around an injected model saves them too
    assert SpikingConfig.from_pretrained(tmp_path / "again") == get_spiking_config(peft_model)

    # the main process alone writes; after unload_spiking, PEFT's save_pretrained as it is
    peft_model.save_pretrained(tmp_path / "other-rank", is_main_process=False)
    assert not (tmp_path / "other-rank" / CONFIG_NAME).exists()
    unload_spiking(peft_model)
    peft_model.save_pretrained(tmp_path / "dense")
    assert (tmp_path / "dense" / "adapter_config.json").is_file() and not (tmp_path / "dense" / CONFIG_NAME).exists()


def test_a_peft_model_of_a_dense_model_saves_as_peft_does(tmp_path):
    from peft import LoraConfig, get_peft_model

    inject_spiking(tiny_model("gpt2"), SpikingConfig())  # the hook is installed in this process
    peft_model = get_peft_model(tiny_model("llama"), LoraConfig(target_modules=["q_proj"], r=2))
    assert "save_pretrained" not in peft_model.__dict__
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and not (tmp_path / CONFIG_NAME).exists()


def test_config_from_pretrained_of_a_file_says_it_is_a_file(tmp_path):
    SpikingConfig(k=4.0).save_pretrained(tmp_path)
    with pytest.raises(NotADirectoryError, match=rf"{CONFIG_NAME} is a file, not a directory: pass the directory holding"):
        SpikingConfig.from_pretrained(tmp_path / CONFIG_NAME)
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        load_spiking(tiny_model("gpt2"), tmp_path / CONFIG_NAME)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpikingConfig.from_pretrained(tmp_path / "missing")
