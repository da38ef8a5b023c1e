"""The plugin's registration and its load-time checks, without starting an engine."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from sb_adapters.vllm import ARCHITECTURES
from sb_adapters.vllm.servable import check_servable
from sb_layers.models.spikingbrain import SpikingBrainConfig


def test_the_entry_point_registers_both_architectures_with_vllm():
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    (plugin,) = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "spikingbrain"]
    assert plugin.value == "sb_adapters.vllm.register:register"
    load_general_plugins()
    supported = ModelRegistry.get_supported_archs()
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from sb_adapters.vllm.engine_config import SpikingBrainEngineConfig

    for architecture in ARCHITECTURES:
        assert architecture in supported
        assert MODELS_CONFIG_MAP[architecture] is SpikingBrainEngineConfig
    # vLLM inspects the lazily registered class (in a subprocess) for the interfaces it declares.
    info = ModelRegistry._try_inspect_model_cls("GLAswaForCausalLM")
    assert info is not None and info.is_hybrid and info.has_inner_state


def config(**fields) -> SpikingBrainConfig:
    base = dict(vocab_size=64, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
    return SpikingBrainConfig(**{**base, **fields})


@pytest.mark.parametrize(
    "fields, kwargs, named",
    [
        (dict(variant="intra_layer"), {}, "variant='intra_layer'"),
        (dict(spiking=True), {}, "spiking=True"),
        (dict(spike_attention=True), {}, "spike_attention=True"),
        (dict(head_dim=16), dict(head_sizes=[32, 64]), "head_dim=16"),
        ({}, dict(tensor_parallel_size=3), "num_attention_heads=4"),
        ({}, dict(tensor_parallel_size=4), "num_key_value_heads=2"),
    ],
)
def test_an_unservable_config_is_one_line_naming_the_field(fields, kwargs, named):
    with pytest.raises(ValueError) as raised:
        check_servable(config(**fields), **kwargs)
    message = str(raised.value)
    assert named in message and "\n" not in message, message


def test_servable_configs_pass_and_bad_arguments_are_named():
    check_servable(config(), tensor_parallel_size=2, head_sizes=[32])
    check_servable(config(gla_gate="merged"))
    with pytest.raises(TypeError, match="config must be a SpikingBrainConfig"):
        check_servable({"variant": "inter_layer"})
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        check_servable(config(), tensor_parallel_size=0)


def test_the_gla_state_shape_is_per_key_value_head_and_rank():
    from sb_adapters.vllm.mixer import gla_state_shape

    assert gla_state_shape(config(), 1) == (2, 32, 32)
    assert gla_state_shape(config(), 2) == (1, 32, 32)
    with pytest.raises(ValueError, match="tensor_parallel_size=4 must divide num_key_value_heads=2"):
        gla_state_shape(config(), 4)
    with pytest.raises(TypeError, match="config must be a SpikingBrainConfig"):
        gla_state_shape(None, 1)
