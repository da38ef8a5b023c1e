"""Gated linear attention (GLA) as one op, in flash-linear-attention's layout of an op package.

- :mod:`sb_kernels.gla.reference`: the PyTorch references :func:`gla_recurrent` (token by token),
  :func:`gla_chunked` (chunk-parallel) and the spiking form :func:`gla_event_driven` (queries and keys
  as spike trains), float32 (float64 for float64 input); what the kernels are tested against.
- :mod:`sb_kernels.gla.fla`: :func:`gla_fla`, flash-linear-attention's GPU kernels in our head-major
  ``[B, H, L, D]`` layout, and :func:`fla_available`.
- :mod:`sb_kernels.gla.decode`: :func:`gla_decode_step`, one token from the projections' raw outputs in
  one Triton kernel, with its reference :func:`gla_decode_step_reference`.

All compute ``S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t``, ``o_t = (scale * q_t) S_t`` per head.
:class:`sb_layers.GatedLinearAttention` is the layer built on them.
"""

from .decode import gla_decode_step, gla_decode_step_reference
from .fla import fla_available, gla_fla
from .reference import check_gla_inputs, gla_chunked, gla_event_driven, gla_recurrent

__all__ = [
    "check_gla_inputs",
    "fla_available",
    "gla_chunked",
    "gla_decode_step",
    "gla_decode_step_reference",
    "gla_event_driven",
    "gla_fla",
    "gla_recurrent",
]
