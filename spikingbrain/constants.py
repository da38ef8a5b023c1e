"""The libraries' values that the command line's parsers show: choices, defaults and file names.

They are copied here so that building the parsers imports neither torch nor transformers (nor the
libraries, which import both): ``spikingbrain --help`` and every usage error found while parsing come at
once, and the libraries are imported only by the command that runs. ``tests/cli/test_startup.py`` checks
that each value equals the library's, so a change there that is not made here fails a test.
"""

from __future__ import annotations

TINY_ARCHS = ("gpt2", "llama", "qwen2", "mistral", "opt", "bert")
"""``sb_adapters.tiny.TINY_ARCHS``: the tiny random models of ``--tiny``."""

CODEC_NAMES = ("binary", "ternary", "bitwise", "bitwise_bidirectional", "bitwise_twos_complement")
"""``sb_neurons.CODEC_NAMES``: the spike codecs of ``--codec``."""

DEFAULT_CODEC = "bitwise_bidirectional"
"""``sb_layers.SpikeCoding().codec``: the default of ``--codec``."""

DEFAULT_KS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0)
"""``sb_adapters.sweep.DEFAULT_KS``: the values of ``k`` that ``sweep-k`` measures by default."""

CONFIG_NAME = "spiking_config.json"
"""``sb_adapters.config.CONFIG_NAME``: the SpikingConfig file of a saved spiking model."""

STATE_NAME = "spiking_state.safetensors"
"""``sb_adapters.config.STATE_NAME``: the spiking state (weight-quantization scales) of a saved spiking model."""

PHASES = ("prefill", "decode")
"""``sb_layers.models.spikingbrain.cost_model.PHASES``: the phases of ``estimate --phase``."""

SHAPE_7B = {
    "num_layers": 28, "hidden_size": 3584, "num_heads": 28, "num_kv_heads": 4, "head_dim": 128,
    "intermediate_size": 18944, "gla_layers": 14, "swa_layers": 14, "full_layers": 0, "window": 4096,
    "num_experts": 0, "experts_per_token": 1, "shared_experts": 0, "moe_layers": None,
}
"""``dataclasses.asdict(cost_model.ModelShape())``: SpikingBrain-7B's shape, the defaults ``estimate --help`` shows."""

__all__ = ["CODEC_NAMES", "CONFIG_NAME", "DEFAULT_CODEC", "DEFAULT_KS", "PHASES", "SHAPE_7B", "STATE_NAME", "TINY_ARCHS"]
