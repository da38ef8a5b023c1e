"""Triton kernels with PyTorch references and explicit backend dispatch (installed as ``sb_kernels``).

Every op takes ``backend="torch" | "triton" | "auto"`` (see :mod:`sb_kernels._dispatch`).
"""

from ._dispatch import BACKENDS, Backend, interpreter_enabled, resolve_backend
from .gla import fla_available, gla_fla
from .neuron import NeuronOutput, multistep_neuron
from .spike_quant import QuantizedSpikes, QuantizedSpikesWithStats, spike_quantize, spike_quantize_reference
from .w8aspike import (
    dequantize_weight,
    int8_matmul_int32,
    split_int8_digits,
    w8aspike_linear,
    w8aspike_linear_reference,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "NeuronOutput",
    "QuantizedSpikes",
    "QuantizedSpikesWithStats",
    "dequantize_weight",
    "fla_available",
    "gla_fla",
    "int8_matmul_int32",
    "interpreter_enabled",
    "multistep_neuron",
    "resolve_backend",
    "spike_quantize",
    "spike_quantize_reference",
    "split_int8_digits",
    "w8aspike_linear",
    "w8aspike_linear_reference",
]
