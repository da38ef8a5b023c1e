"""Triton kernels with PyTorch references and explicit backend dispatch (installed as ``sb_kernels``).

Every op takes ``backend="torch" | "triton" | "auto"`` (see :mod:`sb_kernels.dispatch`).
"""

from .dispatch import BACKENDS, Backend, interpreter_enabled, resolve_backend, use_reference
from .attention_merge import merge_attention_into, merge_attention_reference
from .split_kv_attention import decode_attention, decode_attention_reference
from .fake_quant import (
    int8_fake_quantize,
    int8_fake_quantize_reference,
    spike_fake_quantize,
    spike_fake_quantize_reference,
)
from .gla import (
    fla_available,
    gla_chunked,
    gla_decode_step,
    gla_decode_step_reference,
    gla_event_driven,
    gla_fla,
    gla_recurrent,
)
from .glu import silu_mul, silu_mul_reference
from .neuron import NeuronOutput, multistep_neuron
from .ring_write import rotate_and_write_ring, rotate_and_write_ring_reference
from .rms_norm import add_rms_norm, rms_norm, rms_norm_reference
from .rotary import apply_rotary, apply_rotary_reference
from .spike_quant import QuantizedSpikes, QuantizedSpikesWithStats, spike_count_rows, spike_count_rows_reference
from .w8aspike import (
    ResidualCodes,
    code_statistics,
    dequantize_weight,
    int8_matmul_int32,
    int_mm_available,
    split_int8_digits,
    split_weight_codes,
    w8aspike_linear,
    w8aspike_linear_cpu,
    w8aspike_linear_reference,
    weight_codes,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "NeuronOutput",
    "QuantizedSpikes",
    "QuantizedSpikesWithStats",
    "ResidualCodes",
    "add_rms_norm",
    "apply_rotary",
    "apply_rotary_reference",
    "code_statistics",
    "decode_attention",
    "decode_attention_reference",
    "dequantize_weight",
    "fla_available",
    "gla_decode_step",
    "gla_decode_step_reference",
    "gla_chunked",
    "gla_event_driven",
    "gla_fla",
    "gla_recurrent",
    "int8_fake_quantize",
    "int8_fake_quantize_reference",
    "int8_matmul_int32",
    "int_mm_available",
    "interpreter_enabled",
    "merge_attention_into",
    "merge_attention_reference",
    "multistep_neuron",
    "resolve_backend",
    "rotate_and_write_ring",
    "rotate_and_write_ring_reference",
    "rms_norm",
    "rms_norm_reference",
    "silu_mul",
    "silu_mul_reference",
    "spike_count_rows",
    "spike_count_rows_reference",
    "spike_fake_quantize",
    "spike_fake_quantize_reference",
    "split_int8_digits",
    "split_weight_codes",
    "use_reference",
    "w8aspike_linear",
    "w8aspike_linear_cpu",
    "w8aspike_linear_reference",
    "weight_codes",
]

