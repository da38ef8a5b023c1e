"""choose_dense_layers: per-layer sensitivity and a greedy choice of dense layers meeting a bound."""

from __future__ import annotations

import pytest
import torch

from sb_adapters import SpikingConfig, inject_spiking, unload_spiking
from sb_adapters.hybrid import choose_dense_layers
from sb_adapters.injector import get_injection
from sb_adapters.sweep import _agreement
from sb_adapters.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("single_thread")


def batches(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 64, (2, 10), generator=gen) for _ in range(2)]


def error_with(model, config, data):
    with torch.no_grad():
        dense = [model(b).logits for b in data]
        inject_spiking(model, config)
        try:
            spiking = [model(b).logits for b in data]
        finally:
            unload_spiking(model)
    return _agreement(dense, spiking, True)[1]


@pytest.mark.parametrize("bound", [0.5, 0.2, 0.05, 0.0])
def test_choice_meets_the_bound_and_each_layer_is_measured_alone(bound):
    model = tiny_model("llama")
    config = SpikingConfig(coding={"k": 1.0})  # coarse: errors clearly above float rounding
    data = batches()
    choice = choose_dense_layers(model, data, config, max_relative_error=bound, progress=False)
    assert get_injection(model) is None  # left dense
    assert [s.layer for s in choice.sensitivities] == [0, 1]
    for s in choice.sensitivities:  # a layer alone spike-coded
        alone = SpikingConfig(coding={"k": 1.0}, dense_layers=[1 - s.layer])
        assert s.relative_error == pytest.approx(error_with(model, alone, data), rel=1e-12)
    assert choice.relative_error <= bound
    if choice.dense_layers and len(choice.dense_layers) < 2:  # the whole model, measured again, meets it
        assert error_with(model, choice.config, data) == pytest.approx(choice.relative_error, rel=1e-12)
    if choice.dense_layers:  # the most sensitive layer goes first
        assert choice.dense_layers[0] == max(choice.sensitivities, key=lambda s: s.relative_error).layer
    else:
        assert error_with(model, config, data) <= bound
    assert "kept dense" in choice.format()
    assert set(choice.spiking_layers) | set(choice.dense_layers) == {0, 1}
    if bound == 0.0:
        assert sorted(choice.dense_layers) == [0, 1] and choice.relative_error == 0.0


def test_top1_bound_and_errors():
    model = tiny_model("qwen2")
    choice = choose_dense_layers(model, batches(1), SpikingConfig(coding={"k": 1.0}), min_top1_agreement=1.0, progress=False)
    assert choice.top1_agreement == 1.0
    with pytest.raises(ValueError, match="max_relative_error and/or min_top1_agreement"):
        choose_dense_layers(model, batches(), progress=False)
    with pytest.raises(ValueError, match="min_top1_agreement"):
        choose_dense_layers(model, batches(), min_top1_agreement=1.5, progress=False)
    with pytest.raises(ValueError, match="batches is empty"):
        choose_dense_layers(model, [], max_relative_error=0.1, progress=False)


def test_dense_layers_out_of_range_is_an_error():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"dense_layers \[9\] name no layer of this model: its layers are 0..1"):
        inject_spiking(model, SpikingConfig(dense_layers=[9]))
    assert get_injection(model) is None
