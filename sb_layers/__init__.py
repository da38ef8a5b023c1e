"""Spike-coded layers built from sb_neurons: SpikingLinear (W8ASpike), gated linear attention,
sliding-window attention, GLU and MoE with upcycling, hybrid blocks.

Every layer has a continuous (integer-count) form and a spiking form of the same function, with the
identity between them stated in its docstring and checked by the tests, and explicit streaming state.
"""

from .blocks import HybridBlock, ParallelMixer, run_mixer
from .feed_forward import GLUMLP, MoE, upcycle
from .linear_attention import GatedLinearAttention, gla_chunked, gla_event_driven, gla_fla, gla_recurrent
from .rms_norm import RMSNorm
from .rotary import apply_rotary, rotary_cos_sin
from .sinks import SinkTokens
from .sliding_window import RollingKVCache, SlidingWindowAttention
from .spiking_linear import SpikeCoding, SpikingLinear, WeightQuantizer, make_linear, resolve_backend
from .report import LayerReport, SpikingReport, recorded_report, spiking_layers

__all__ = [
    "GLUMLP",
    "GatedLinearAttention",
    "HybridBlock",
    "LayerReport",
    "MoE",
    "ParallelMixer",
    "RMSNorm",
    "RollingKVCache",
    "SinkTokens",
    "SlidingWindowAttention",
    "SpikeCoding",
    "SpikingLinear",
    "SpikingReport",
    "WeightQuantizer",
    "apply_rotary",
    "gla_chunked",
    "gla_event_driven",
    "gla_fla",
    "gla_recurrent",
    "make_linear",
    "recorded_report",
    "resolve_backend",
    "rotary_cos_sin",
    "run_mixer",
    "spiking_layers",
    "upcycle",
]
