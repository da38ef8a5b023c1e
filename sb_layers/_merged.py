"""One GEMM for several plain linear layers that read the same input (inference on CUDA).

A decode step multiplies one token by SpikingBrain-7B's key and value projections, 512 x 3584 each:
3.7 MB of weights per call, too little for cuBLAS to stream at full bandwidth (0.7 TB/s measured on an
H100, against 2.5 TB/s for the 136 MB MLP weights), and each call adds a split-K reduction kernel.
Concatenated, the two are one 7.3 MB GEMM. Spiking layers (W8ASpike) on the Triton path merge the same
way when they code their input alike (same ``k`` and clamp): one spike quantization of the token and
one int8 GEMM over the stacked int8 weights and group scales, instead of one of each per layer.

The concatenated weights are a copy kept on the owning module (not a parameter, not in the state dict;
0.2 GB of bf16 key/value weights for SpikingBrain-7B), rebuilt whenever a source weight or bias changes
(another storage, or an in-place update: PyTorch's version counter), so training steps, weight loading
and ``.to()`` are seen. Used only where merging cannot change what a user observes: no autograd, every
layer exactly ``nn.Linear`` or exactly ``SpikingLinear`` (an adapter-wrapped layer is left alone), no
hooks, no spike statistics being recorded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

from sb_kernels import ResidualCodes

from .spiking_linear import SpikingLinear
from .spiking_linear import resolve_linear_backend


def _source_key(tensors: list[torch.Tensor | None]) -> tuple | None:
    """What identifies the source tensors' values: storage and version counter (None for inference
    tensors, which have no version counter: then nothing is merged)."""
    key = []
    for tensor in tensors:
        if tensor is not None and tensor.is_inference():
            return None
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
        linears: the layers, all ``nn.Linear`` or all ``SpikingLinear``, ``in_features`` equal to ``x``'s
            last dimension.
        owner: the module that keeps the merged weights (attribute ``_merged_<name>``).
        name: which merge of ``owner`` this is.
        cuda_only: merge CUDA inputs only (where it pays); False lets tests check the logic on the CPU.
    """
    if (cuda_only and not x.is_cuda) or torch.is_grad_enabled() or _globally_hooked():
        return None
    if x.ndim == 0 or x.numel() > MAX_ROWS * x.shape[-1]:
        return None
    if any(_hooked(linear) for linear in linears):
        return None
    if all(type(linear) is nn.Linear for linear in linears):
        if any(linear.weight.device != x.device or linear.weight.dtype != x.dtype for linear in linears):
            return None
        sources = [t for linear in linears for t in (linear.weight, linear.bias)]
        build = lambda: (torch.cat([linear.weight for linear in linears]), _merged_bias(linears, x.dtype))  # noqa: E731
        run = lambda weight, bias: F.linear(x, weight, bias)  # noqa: E731
    elif all(type(linear) is SpikingLinear for linear in linears) and _spiking_mergeable(x, linears):
        from sb_kernels import w8aspike_linear

        sources = [t for linear in linears for t in (linear.weight_out_in(), linear.weight_quantizer.scales, linear.bias)]
        coding = linears[0].coding

        def build():
            codes = [linear.int8_codes() for linear in linears]
            weight = torch.cat([base for base, _ in codes])
            residual = ResidualCodes.cat([part for _, part in codes], [linear.out_features for linear in linears], x.shape[-1])
            scales = torch.cat([linear.weight_quantizer.scales for linear in linears])
            return weight, scales, _merged_bias(linears, linears[0].weight.dtype), residual

        def run(weight, scales, bias, residual):
            return w8aspike_linear(x, weight, scales, bias, k=coding.k, clamp=coding.clamp, backend="triton", residual=residual)
    else:
        return None
    key = _source_key(sources)
    if key is None:
        return None
    attribute = f"_merged_{name}"
    cached = owner.__dict__.get(attribute)
    if cached is None or cached[0] != key:
        if x.is_cuda and torch.cuda.is_current_stream_capturing():
            return None  # a copy made inside a graph capture would hold its values only on replay
        with torch.no_grad():
            cached = (key, build())
        owner.__dict__[attribute] = cached
    out = run(*cached[1])
    return list(out.split([linear.out_features for linear in linears], dim=-1))


def _merged_bias(linears: tuple[nn.Linear, ...], dtype: torch.dtype) -> torch.Tensor | None:
    biases = [linear.bias for linear in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else torch.zeros(linear.out_features, dtype=dtype, device=linear.weight.device)
                      for b, linear in zip(biases, linears)])


def _spiking_mergeable(x: torch.Tensor, linears: tuple[SpikingLinear, ...]) -> bool:
    """Spiking layers share one input coding exactly when they use the same ``k`` and clamp: then one
    W8ASpike call with their int8 weights and scales stacked computes every output (Triton path only,
    int8 weight groups of one size, no statistics being recorded)."""
    first = linears[0]
    if first.weight_quantizer is None:
        return False
    groups = first.weight_quantizer.scales.shape[1:]
    for linear in linears:
        coding = linear.coding
        if (coding.k, coding.clamp) != (first.coding.k, first.coding.clamp) or linear.record_stats:
            return False
        if linear.weight_quantizer is None or linear.weight_quantizer.scales.shape[1:] != groups:
            return False
        if linear.bias is not None and linear.bias.dtype != first.weight.dtype:
            return False
        if resolve_linear_backend(coding, x, linear) != "triton":
            return False
    return True
