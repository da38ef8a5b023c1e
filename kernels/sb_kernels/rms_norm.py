"""RMSNorm, optionally fused with the residual add before it, reading each row once.

The rule (the release's, as Qwen2's): in the input's dtype ``dt``,

    h = x.float() * rsqrt(mean(x.float()**2) + eps)       float32 statistics (float64 for float64 input)
    y = weight * h.to(dt)                                   the scale applied after the rounding to dt

and with a residual, ``s = (x + residual)`` rounded to ``dt`` first, then ``y = rms_norm(s)``; both ``s``
and ``y`` are returned. The Triton kernel rounds at the same places as the reference, so the two agree up
to the float32 summation order inside the mean and the last bit of ``rsqrt``: within one unit in the
last place of ``dt`` (tests check it against a float64 evaluation of the same rule).

Why a kernel: PyTorch runs the rule as six kernels (cast, square, mean, two products, cast back), each a
full read or write of the activations; at 32k tokens of SpikingBrain-7B that was 10% of the prefill.

The Triton path is forward only (inference, prefill); under autograd ``backend="auto"`` takes the
PyTorch path, and ``backend="triton"`` is an error.
"""

from __future__ import annotations


import torch

from sb_neurons.validation import check_float_tensor, check_positive, check_same_device
from sb_neurons.spike import compute_dtype

from .device import round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_TRITON_WIDTH = 32768  # a row is held in registers; wider rows take the PyTorch path


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The rule in PyTorch (differentiable): ``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)``.

    Arguments as :func:`rms_norm` (checked the same way; ``x`` and ``weight`` on one device). The mean is
    taken over a contiguous copy of ``x``, so a non-contiguous or expanded ``x`` gives, to the bit, the
    result of its contiguous copy (PyTorch's reduction order follows the strides).
    """
    eps = _check(x, weight, eps)
    check_same_device([("x", x), ("weight", weight)])
    compute = compute_dtype(x.dtype)
    h = x.contiguous().to(compute)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


if triton is not None:

    @lazy_jit
    def _rms_norm_kernel(
        x_ptr, res_ptr, w_ptr, y_ptr, sum_ptr, num_rows, width, eps,
        x_stride, res_stride, y_stride, sum_stride,
        HAS_RESIDUAL: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
    ):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK)
        mask = (rows < num_rows)[:, None] & (cols < width)[None, :]
        rows64 = rows.to(tl.int64)[:, None]
        dt = x_ptr.dtype.element_ty
        h = tl.load(x_ptr + rows64 * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            r = tl.load(res_ptr + rows64 * res_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            h = round_to(h + r, dt)  # the sum rounded to the activations' dtype, as ``x + residual``
            tl.store(sum_ptr + rows64 * sum_stride + cols[None, :], to_dtype(h, dt), mask=mask)
        mean_square = tl.sum(h * h, axis=1) / width
        h = round_to(h * (1.0 / tl.sqrt_rn(mean_square + eps))[:, None], dt)
        w = tl.load(w_ptr + cols, mask=cols < width, other=0.0).to(tl.float32)
        y = round_to(w[None, :] * h, dt)
        tl.store(y_ptr + rows64 * y_stride + cols[None, :], to_dtype(y, dt), mask=mask)


def _launch_settings(width: int) -> tuple[int, int, int]:
    """``(BLOCK, ROWS, num_warps)``: one register tile of about 4096 elements per program."""
    block = triton.next_power_of_2(width)
    rows = max(1, min(64, 4096 // block))
    num_warps = 8 if block * rows >= 4096 else 4
    return block, rows, num_warps


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as ``[rows, width]`` with unit stride along the row (a copy only when no view exists)."""
    flat = t.reshape(-1, t.shape[-1])
    return flat if flat.stride(-1) == 1 else flat.contiguous()


def _launch(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None):
    x2d, weight = _rows(x), weight.contiguous()  # the kernel reads weight with unit stride
    width = x2d.shape[1]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    y2d = y.view(-1, width)
    if residual is not None:
        r2d = _rows(residual)
        summed = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        s2d = summed.view(-1, width)
    else:
        r2d = s2d = x2d
        summed = None
    if x2d.shape[0]:
        block, rows, num_warps = _launch_settings(width)
        grid = (triton.cdiv(x2d.shape[0], rows),)
        _rms_norm_kernel[grid](
            x2d, r2d, weight, y2d, s2d, x2d.shape[0], width, eps,
            x2d.stride(0), r2d.stride(0), y2d.stride(0), s2d.stride(0),
            HAS_RESIDUAL=residual is not None, ROWS=rows, BLOCK=block, num_warps=num_warps,
        )
    return y, summed


def _check(x: object, weight: object, eps: object, name: str = "x") -> float:
    check_float_tensor(x, name, finite=False)
    check_float_tensor(weight, "weight", finite=False)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the normalized one)")
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"weight must have shape ({x.shape[-1]},) to match {name}'s last dimension, got {tuple(weight.shape)}")
    check_positive(eps, "eps")  # finite too: an infinite eps would zero every row
    return float(eps)


def _choose(backend: Backend, x: torch.Tensor, weight: torch.Tensor, op: str, *others: torch.Tensor) -> str:
    too_wide = None
    if x.shape[-1] > MAX_TRITON_WIDTH:
        too_wide = f"the Triton kernel holds a row in registers, rows up to {MAX_TRITON_WIDTH} wide; got {x.shape[-1]}"
    return resolve_forward_backend(backend, x, weight, *others, op=op, dtypes=TRITON_DTYPES, unsupported=too_wide)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, backend: Backend = "auto") -> torch.Tensor:
    """RMSNorm over the last dimension (see the module docstring for the rule and its rounding).

    Args:
        x: ``[..., D]`` float16/bfloat16/float32 (float64 on the torch backend).
        weight: ``[D]``, the same dtype as ``x`` for the Triton path.
        eps: finite ``> 0``, added to the mean square.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).

    Returns:
        ``[..., D]``, contiguous, in ``x``'s dtype (PyTorch's type promotion with ``weight`` on the
        torch path).
    """
    eps = _check(x, weight, eps)
    if _choose(backend, x, weight, "rms_norm") == "torch":
        return rms_norm_reference(x, weight, eps)
    return _launch(x, weight, eps, None)[0]


def add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (rounded to the dtype) and ``rms_norm(s)``, in one pass on the Triton path.

    Args:
        x: ``[..., D]``.
        residual: ``[..., D]``, ``x``'s shape and dtype.
        weight: ``[D]``, as :func:`rms_norm`.
        eps: ``> 0``, as :func:`rms_norm`.
        backend: as :func:`rms_norm`.

    Returns:
        ``(normed, summed)``, both ``[..., D]``: ``normed == rms_norm(summed)``, ``summed == x + residual``.
    """
    eps = _check(x, weight, eps)
    check_float_tensor(residual, "residual", finite=False)
    if residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    if _choose(backend, x, weight, "add_rms_norm", residual) == "torch":
        summed = x + residual
        return rms_norm_reference(summed, weight, eps), summed
    return _launch(x, weight, eps, residual)
