"""Spike-coded layers built from sb_neurons: SpikingLinear (W8ASpike), gated linear attention,
sliding-window attention, GLU and MoE with upcycling, hybrid blocks.

Every layer has a continuous (integer-count) form and a spiking form of the same function, with the
identity between them stated in its docstring and checked by the tests, and explicit streaming state.
"""

from .blocks import HybridBlock, ParallelMixer
from .gla_state import GLAState
from .mixer_cache import MixerCache
from .parallel_state import ParallelState
from .feed_forward import GLUMLP, MoE, upcycle
from .linear_attention import GatedLinearAttention
from .rms_norm import RMSNorm
from .rotary import apply_rotary, rotary_cos_sin
from .sinks import SinkTokens
from .kv_cache import RollingKVCache
from .sliding_window import SlidingWindowAttention
from .spiking_linear import SpikeCoding, SpikingLinear, WeightQuantizer, make_linear, resolve_linear_backend
from .int8_linear import Int8SpikingLinear
from .report import (
    LayerReport,
    SpikeRecorder,
    SpikeRecording,
    SpikingReport,
    WeightCodeStats,
    format_weight_code_stats,
    record_spikes,
    reset_spike_stats,
    spike_report,
    spiking_layers,
    weight_code_stats,
)

__all__ = [
    "GLAState",
    "GLUMLP",
    "GatedLinearAttention",
    "HybridBlock",
    "LayerReport",
    "MixerCache",
    "MoE",
    "ParallelMixer",
    "ParallelState",
    "RMSNorm",
    "RollingKVCache",
    "SinkTokens",
    "SpikeRecorder",
    "SpikeRecording",
    "SlidingWindowAttention",
    "SpikeCoding",
    "SpikingLinear",
    "Int8SpikingLinear",
    "SpikingReport",
    "WeightCodeStats",
    "WeightQuantizer",
    "apply_rotary",
    "format_weight_code_stats",
    "make_linear",
    "record_spikes",
    "reset_spike_stats",
    "resolve_linear_backend",
    "rotary_cos_sin",
    "spike_report",
    "spiking_layers",
    "upcycle",
    "weight_code_stats",
]
