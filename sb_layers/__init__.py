"""Spike-coded layers built from sb_neurons: SpikingLinear (W8ASpike), gated linear attention,
sliding-window attention, GLU and MoE with upcycling, hybrid blocks.

Every layer has a continuous (integer-count) form and a spiking form of the same function, with the
identity between them stated in its docstring and checked by the tests, and explicit streaming state.
"""

from .blocks import HybridBlock, ParallelMixer, run_mixer
from .mixer_cache import MixerCache
from .feed_forward import GLUMLP, MoE, upcycle
from .linear_attention import GatedLinearAttention
from .rms_norm import RMSNorm
from .rotary import apply_rotary, rotary_cos_sin
from .sinks import SinkTokens
from .sliding_window import RollingKVCache, SlidingWindowAttention
from .spiking_linear import SpikeCoding, SpikingLinear, WeightQuantizer, make_linear, resolve_linear_backend
from .report import (
    LayerReport,
    SpikingReport,
    WeightCodeStats,
    format_weight_code_stats,
    recorded_report,
    spiking_layers,
    weight_code_stats,
)

__all__ = [
    "GLUMLP",
    "GatedLinearAttention",
    "HybridBlock",
    "LayerReport",
    "MixerCache",
    "MoE",
    "ParallelMixer",
    "RMSNorm",
    "RollingKVCache",
    "SinkTokens",
    "SlidingWindowAttention",
    "SpikeCoding",
    "SpikingLinear",
    "SpikingReport",
    "WeightCodeStats",
    "WeightQuantizer",
    "apply_rotary",
    "format_weight_code_stats",
    "make_linear",
    "recorded_report",
    "resolve_linear_backend",
    "rotary_cos_sin",
    "run_mixer",
    "spiking_layers",
    "upcycle",
    "weight_code_stats",
]

# Deprecated names (one release): the GLA forms moved to sb_kernels.gla, beside their kernels;
# resolve_backend (a SpikingLinear's backend) became resolve_linear_backend, distinct from
# sb_kernels.resolve_backend (an op's backend).
import sb_kernels as _sb_kernels  # noqa: E402
from sb_neurons.deprecation import module_aliases as _module_aliases  # noqa: E402

__getattr__ = _module_aliases("sb_layers", {
    **{name: (f"sb_kernels.{name}", lambda name=name: getattr(_sb_kernels, name))
       for name in ("gla_chunked", "gla_event_driven", "gla_fla", "gla_recurrent")},
    "resolve_backend": ("sb_layers.resolve_linear_backend", lambda: resolve_linear_backend),
})
