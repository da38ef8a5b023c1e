"""Spike-coded layers built from sb_neurons: SpikingLinear, GLA, SWA, GLU/MoE, hybrid blocks, models."""
