"""Triton kernels with PyTorch references and explicit backend dispatch (installed as ``sb_kernels``).

Every op takes ``backend="torch" | "triton" | "auto"`` (see :mod:`sb_kernels._dispatch`).
"""

from ._dispatch import BACKENDS, Backend, interpreter_enabled, resolve_backend
from .spike_quant import QuantizedSpikes, QuantizedSpikesWithStats, spike_quantize, spike_quantize_reference

__all__ = [
    "BACKENDS",
    "Backend",
    "QuantizedSpikes",
    "QuantizedSpikesWithStats",
    "interpreter_enabled",
    "resolve_backend",
    "spike_quantize",
    "spike_quantize_reference",
]
