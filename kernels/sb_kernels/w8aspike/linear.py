"""The op :func:`w8aspike_linear`: checks its arguments and picks among the torch reference
(:mod:`~sb_kernels.w8aspike.reference`), the one-launch decode kernel (:mod:`~sb_kernels.w8aspike.decode`),
the several-row path (:mod:`~sb_kernels.w8aspike.gemm`) and, with ``backend="cutlass"``, the CuTe DSL GEMM
(:mod:`~sb_kernels.w8aspike.hopper`) and, on CPU tensors, the integer path of :mod:`~sb_kernels.w8aspike.cpu`.
The algorithm is described in :mod:`sb_kernels.w8aspike`.
"""

from __future__ import annotations

from typing import Literal

import torch

from sb_neurons.spike import ClampSpec, resolve_clamp
from sb_neurons.validation import check_float_tensor, check_positive, check_same_device

from ..dispatch import _AUTO_IS_TORCH, Backend, resolve_backend
from ..spike_quant import TRITON_INPUT_DTYPES
from .cpu import w8aspike_linear_cpu
from .decode import _linear_fused
from .gemm import _linear_two_pass
from .reference import MAX_K, _check_bias, _check_weight_and_scales, _raise_if_flagged, _torch_linear, check_residual
from .residual import ResidualCodes
from .tiles import _takes_one_launch


def w8aspike_linear(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    backend: Backend | Literal["cutlass", "cpu"] = "auto",
    check: bool = False,
    residual: ResidualCodes | None = None,
) -> torch.Tensor:
    """Spike-coded linear layer with int8 weights (W8ASpike), forward only.

    ``y = (counts * v_th) @ ((weight_int8 + R) * scales).T + bias`` with ``counts, v_th = spike_count(x, k)``,
    one threshold per row, and ``R`` the weight codes past int8 (``residual``; none when None). On the Triton backend every integer product is exact, for counts of any size
    (bursts far past 127 included), and only the float32 scaling rounds. The Triton call never
    synchronizes with the host (unless ``check=True``): it can be captured in a CUDA graph.

    Args:
        x: activations ``[..., K]``, float16/bfloat16/float32 (float64 on the torch backend).
        weight_int8: int8 ``[N, K]``.
        scales: float32 ``[N, K // group, 1]`` (``[N, 1, 1]`` for per-output-channel scales).
        bias: ``[N]`` or None.
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        clamp: ``None`` (counts unbounded and handled exactly), a signed bit width or a ``(low, high)`` range.
        backend: ``"torch"``, ``"triton"``, ``"auto"``, ``"cutlass"`` or ``"cpu"``. ``"cpu"``: the integer
            path of :func:`~sb_kernels.w8aspike.cpu.w8aspike_linear_cpu` (CPU tensors; ``torch._int_mm``
            where it runs, an exact float fallback elsewhere), which ``"auto"`` takes when every tensor
            is on the CPU (outside :func:`sb_kernels.use_reference`; ``"torch"`` forces the reference).
            The Triton path needs ``K``
            divisible by 32 (at most 131071) and the group size divisible by 32. ``"cutlass"`` (sm_90 GPUs,
            extra ``gpu``): the Triton path with its several-row GEMM replaced by the warp-specialized
            CuTe DSL kernel of :mod:`~sb_kernels.w8aspike.hopper` (groups of 128, ``N % 128 == 0``);
            one-token calls keep the Triton decode kernel.
        check: ``False`` (default): a row of ``x`` holding NaN or Inf gives a NaN output row, as in a
            float matmul, and so does a row whose counts leave int32 (only with ``v_th`` clamped at
            1e4, ``|x| >= 2**31 * 1e4``); other rows are unaffected, and nothing is read back.
            ``True``: raise ``ValueError`` (NaN/Inf) or ``OverflowError`` (counts past int32) instead,
            at the price of one device-to-host read per call.
        residual: None, or the :class:`~sb_kernels.w8aspike.residual.ResidualCodes` of the codes past
            int8 (:func:`~sb_kernels.w8aspike.residual.split_weight_codes` makes both parts from any
            integer codes). The torch backend checks its canonical form; the Triton backend only its
            shape and device (no host read). ``"cutlass"`` refuses it (its epilogue has no residual).

    Returns:
        ``[..., N]`` in ``x.dtype``. No gradient flows (inference kernel).
    """
    # The kernel path reads nothing back: finiteness of x is flagged per row by the kernels, and scales
    # and bias (a layer's calibrated buffers) are not re-checked on every call; the torch path checks them.
    check_float_tensor(x, "x", finite=False)
    k = check_positive(k, "k")
    bounds = resolve_clamp(clamp)
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {type(check).__name__}")
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    if backend == "cpu" or (backend == "auto" and _on_cpu(x, weight_int8, scales, bias) and not _AUTO_IS_TORCH.get()):
        return w8aspike_linear_cpu(x, weight_int8, scales, bias, k=k, clamp=clamp, residual=residual, check=check)
    gemm = "triton"
    if backend == "cutlass":
        _check_cutlass(x, weight_int8, scales)
        backend, gemm = "triton", "cutlass"
    chosen = resolve_backend(backend, x, weight_int8, scales, op="w8aspike_linear")
    check_same_device([("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)])
    cols, width, groups = _check_weight_and_scales(weight_int8, scales, x.shape[-1], check_finite=chosen == "torch")
    bias = _check_bias(bias, cols, check_finite=chosen == "torch")
    residual = check_residual(residual, weight_int8, canonical=chosen == "torch")
    if chosen == "torch":
        return _torch_linear(x, weight_int8, scales, bias, k, clamp, check, residual)
    if residual is not None and gemm == "cutlass" and not _takes_one_launch(x.numel() // width, width, groups):
        raise ValueError("w8aspike_linear: backend='cutlass' does not take weight codes past int8 (residual); "
                         "use backend='triton', whose kernels apply them exactly")
    if x.dtype not in TRITON_INPUT_DTYPES:
        raise TypeError(f"w8aspike_linear: the triton backend takes float16, bfloat16 or float32 x, got {x.dtype}")
    group = width // groups
    if width % 32 or group % 32 or width > MAX_K:
        raise ValueError(
            f"w8aspike_linear: the triton backend needs K and the group size divisible by 32 and K <= {MAX_K}, "
            f"got K={width}, group={group}"
        )

    x2d = x.detach().reshape(-1, width)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    rows = x2d.shape[0]
    out = torch.empty(rows, cols, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out.reshape(*x.shape[:-1], cols)
    weight = weight_int8.contiguous()
    scales2d = scales.reshape(cols, groups).contiguous()
    if _takes_one_launch(rows, width, groups):
        _, row_max = _linear_fused(x2d, weight, scales2d, bias, k, bounds, out, residual=residual)
    else:
        _, row_max = _linear_two_pass(x2d, weight, scales2d, bias, k, bounds, out, gemm=gemm, residual=residual)
    if check:
        _raise_if_flagged(float(row_max.max()))
    return out.reshape(*x.shape[:-1], cols)


def _on_cpu(*tensors: object) -> bool:
    """Whether every given tensor is a CPU tensor (None skipped; a non-tensor is left to the checks)."""
    return all(t is None or (isinstance(t, torch.Tensor) and t.device.type == "cpu") for t in tensors)


def _check_cutlass(x: torch.Tensor, weight_int8: torch.Tensor, scales: torch.Tensor) -> None:
    """Why ``backend="cutlass"`` cannot run this call, as a clear error (nothing falls back silently)."""
    from . import hopper  # imported on first use: the CuTe DSL takes half a second to import
    if not hopper.cutlass_available():
        raise RuntimeError("w8aspike_linear: backend='cutlass' needs NVIDIA's CuTe DSL (nvidia-cutlass-dsl), which is "
                           "not importable: pip install 'spikingbrain[gpu]'")
    if not (isinstance(x, torch.Tensor) and x.is_cuda):
        raise RuntimeError("w8aspike_linear: backend='cutlass' needs CUDA tensors on an sm_90 (Hopper) GPU, "
                           f"got x on {getattr(x, 'device', type(x).__name__)}")
    if torch.cuda.get_device_capability(x.device)[0] != 9:
        raise RuntimeError(f"w8aspike_linear: backend='cutlass' needs an sm_90 (Hopper) GPU, got "
                           f"{torch.cuda.get_device_name(x.device)} (sm_{''.join(map(str, torch.cuda.get_device_capability(x.device)))})")
    cols, width = weight_int8.shape
    groups = scales.shape[1] if scales.ndim == 3 else 0
    if groups < 1 or not hopper.supports(cols, width, width // groups):
        raise ValueError(f"w8aspike_linear: backend='cutlass' needs groups of {hopper.GROUP} inputs and N % {hopper.TILE_N} == 0, "
                         f"got N={cols}, K={width}, {groups} group(s)")


__all__ = ["w8aspike_linear"]
