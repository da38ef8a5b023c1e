"""Adaptive-threshold spiking neurons, spike codecs, encoders, statistics and the energy model.

Depends on torch only.
"""

from .codecs import CODEC_NAMES, Codec, get_codec, spike_train_matmul
from .delta import DeltaEncoder, SigmaDeltaEncoder
from .energy import EnergyEstimate, energy_estimate
from .neurons import AdaptiveIFNode, AdaptiveLIFNode, heaviside, multistep_neuron_forward
from .spike import (
    V_TH_MAX,
    V_TH_MIN,
    AdaptiveThresholdSpike,
    SpikeCount,
    adaptive_threshold,
    clamped_mask,
    first_input_threshold,
    pending_threshold,
    resolve_clamp,
    spike_count,
    spike_quantize,
)
from .stats import SpikeStats, spike_stats
from .surrogate import ATan, Sigmoid, SurrogateSpike, get_surrogate

__all__ = [
    "ATan",
    "AdaptiveIFNode",
    "AdaptiveLIFNode",
    "DeltaEncoder",
    "Sigmoid",
    "SigmaDeltaEncoder",
    "SurrogateSpike",
    "get_surrogate",
    "heaviside",
    "multistep_neuron_forward",
    "CODEC_NAMES",
    "Codec",
    "EnergyEstimate",
    "SpikeStats",
    "energy_estimate",
    "get_codec",
    "spike_stats",
    "spike_train_matmul",
    "V_TH_MAX",
    "V_TH_MIN",
    "AdaptiveThresholdSpike",
    "SpikeCount",
    "adaptive_threshold",
    "clamped_mask",
    "first_input_threshold",
    "pending_threshold",
    "resolve_clamp",
    "spike_count",
    "spike_quantize",
]
