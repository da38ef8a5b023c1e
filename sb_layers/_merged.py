"""One GEMM for several plain linear layers that read the same input (inference on CUDA).

A decode step multiplies one token by SpikingBrain-7B's key and value projections, 512 x 3584 each:
3.7 MB of weights per call, too little for cuBLAS to stream at full bandwidth (0.7 TB/s measured on an
H100, against 2.5 TB/s for the 136 MB MLP weights), and each call adds a split-K reduction kernel.
Concatenated, the two are one 7.3 MB GEMM. The concatenated weights are a copy kept on the owning
module (not a parameter, not in the state dict), rebuilt whenever a source weight or bias changes
(another storage, or an in-place update: PyTorch's version counter), so training steps, weight loading
and ``.to()`` are seen. Used only where merging cannot change what a user observes: no autograd, every
layer exactly ``nn.Linear`` (a spiking or adapter-wrapped layer is left alone) with no hooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals


def _source_key(linears: tuple[nn.Linear, ...]) -> tuple:
    key = []
    for linear in linears:
        for tensor in (linear.weight, linear.bias):
            key.append(None if tensor is None else (tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device))
    return tuple(key)


def _hooked(linear: nn.Module) -> bool:
    return bool(linear._forward_hooks or linear._forward_pre_hooks)


def _globally_hooked() -> bool:
    return bool(module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks)


MAX_ROWS = 64  # tokens per call up to which layers are merged: decode steps, not prefill


def merged_linear_outputs(
    x: torch.Tensor, linears: tuple[nn.Module, ...], owner: nn.Module, name: str, *, cuda_only: bool = True
) -> list[torch.Tensor] | None:
    """``[linear(x) for linear in linears]`` from one GEMM, as views of its output; None where merging
    does not apply (the caller then runs the layers one by one).

    Args:
        x: ``[..., in_features]`` the shared input, at most :data:`MAX_ROWS` rows (a prefill's large
            GEMMs stream well apart, and its consumers then get contiguous outputs).
        linears: the layers, all ``nn.Linear`` with ``in_features`` equal to ``x``'s last dimension.
        owner: the module that keeps the merged weights (attribute ``_merged_<name>``).
        name: which merge of ``owner`` this is.
        cuda_only: merge CUDA inputs only (where it pays); False lets tests check the logic on the CPU.
    """
    if (cuda_only and not x.is_cuda) or torch.is_grad_enabled() or _globally_hooked():
        return None
    if x.ndim == 0 or x.numel() > MAX_ROWS * x.shape[-1]:
        return None
    if any(type(linear) is not nn.Linear or _hooked(linear) for linear in linears):
        return None
    if any(linear.weight.device != x.device or linear.weight.dtype != x.dtype for linear in linears):
        return None
    attribute = f"_merged_{name}"
    key = _source_key(linears)
    cached = owner.__dict__.get(attribute)
    if cached is None or cached[0] != key:
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return None  # a copy made inside a graph capture would hold its values only on replay
        with torch.no_grad():
            weight = torch.cat([linear.weight for linear in linears])
            biases = [linear.bias for linear in linears]
            bias = None
            if any(b is not None for b in biases):
                bias = torch.cat([b if b is not None else linear.weight.new_zeros(linear.out_features) for b, linear in zip(biases, linears)])
        cached = (key, weight, bias)
        owner.__dict__[attribute] = cached
    out = F.linear(x, cached[1], cached[2])
    return list(out.split([linear.out_features for linear in linears], dim=-1))
