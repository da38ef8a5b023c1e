"""Adaptive-threshold spiking neurons, spike codecs, encoders, statistics and the energy model.

Depends on torch only.
"""

from .spike import (
    V_TH_MAX,
    V_TH_MIN,
    AdaptiveThresholdSpike,
    SpikeCount,
    adaptive_threshold,
    clamped_mask,
    resolve_clamp,
    spike_count,
    spike_quantize,
)

__all__ = [
    "V_TH_MAX",
    "V_TH_MIN",
    "AdaptiveThresholdSpike",
    "SpikeCount",
    "adaptive_threshold",
    "clamped_mask",
    "resolve_clamp",
    "spike_count",
    "spike_quantize",
]
