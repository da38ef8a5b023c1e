"""Rotary position embedding (half-rotation convention) applied in one pass.

The rule, as PyTorch evaluates ``x * cos + rotate_half(x) * sin`` in the activations' dtype ``dt``
(``rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])``): each product rounded to ``dt``, then their sum
rounded to ``dt``. The kernel rounds at the same places, so its output equals PyTorch's bit for bit
(float32 products and sums are correctly rounded on both sides, and the kernel is compiled without
fused multiply-adds). PyTorch runs that as six kernels over
the queries or keys (two products, a negation, a concatenation, a product and a sum); this is one read
and one write. The Triton path is forward only; under autograd ``backend="auto"`` takes the PyTorch
path and ``backend="triton"`` is an error.
"""

from __future__ import annotations

import torch

from sb_neurons.validation import check_float_tensor, check_same_device

from .device import round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK_L = 16


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``cat(-x[..., D/2:], x[..., :D/2])``."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` with ``cos, sin`` broadcast over heads (differentiable); arguments
    as :func:`apply_rotary`, checked the same way (all on one device)."""
    _check(x, cos, sin)
    check_same_device([("x", x), ("cos", cos), ("sin", sin)])
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


if triton is not None:

    @lazy_jit
    def _rotary_kernel(
        x_ptr, cos_ptr, sin_ptr, out_ptr, num_heads, length, half,
        x_sb, x_sh, x_sl, c_sb, c_sl, o_sb, o_sh, o_sl,
        BLOCK_L: tl.constexpr, BLOCK_HALF: tl.constexpr,
    ):
        batch_head = tl.program_id(1)
        b = batch_head // num_heads
        h = batch_head % num_heads
        pos = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
        cols = tl.arange(0, BLOCK_HALF)
        mask = (pos < length)[:, None] & (cols < half)[None, :]
        pos64 = pos.to(tl.int64)[:, None]
        x_row = x_ptr + b.to(tl.int64) * x_sb + h.to(tl.int64) * x_sh + pos64 * x_sl + cols[None, :]
        c_row = b.to(tl.int64) * c_sb + pos64 * c_sl + cols[None, :]
        x1 = tl.load(x_row, mask=mask, other=0.0)
        x2 = tl.load(x_row + half, mask=mask, other=0.0)
        c1 = tl.load(cos_ptr + c_row, mask=mask, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + c_row + half, mask=mask, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + c_row, mask=mask, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + c_row + half, mask=mask, other=0.0).to(tl.float32)
        dt = x_ptr.dtype.element_ty
        a1, a2 = x1.to(tl.float32), x2.to(tl.float32)
        # Each product rounded to the activations' dtype before the sum, as PyTorch's three kernels do.
        y1 = round_to(round_to(a1 * c1, dt) + round_to(-a2 * s1, dt), dt)
        y2 = round_to(round_to(a2 * c2, dt) + round_to(a1 * s2, dt), dt)
        o_row = out_ptr + b.to(tl.int64) * o_sb + h.to(tl.int64) * o_sh + pos64 * o_sl + cols[None, :]
        tl.store(o_row, to_dtype(y1, dt), mask=mask)
        tl.store(o_row + half, to_dtype(y2, dt), mask=mask)


def _check(x: object, cos: object, sin: object) -> None:
    check_float_tensor(x, "x", finite=False)
    check_float_tensor(cos, "cos", finite=False)
    check_float_tensor(sin, "sin", finite=False)
    if x.ndim != 4 or x.shape[-1] % 2:
        raise ValueError(f"x must be [B, H, L, D] with D even, got shape {tuple(x.shape)}")
    expected = (x.shape[0], x.shape[2], x.shape[3])
    for name, t in (("cos", cos), ("sin", sin)):
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} must have shape [B, L, D] = {expected} (B, L, D of x), got {tuple(t.shape)}")


def _compile_options(x: torch.Tensor) -> dict:
    # No fused multiply-add: PyTorch rounds each product before the sum (with contraction, float16 and
    # float32 outputs differed from PyTorch's in the last bit on an H100; without, all three dtypes equal).
    return dict(num_warps=4, enable_fp_fusion=False) if x.is_cuda else {}


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """Rotate ``x`` by the angles whose ``cos, sin`` are given.

    Args:
        x: ``[B, H, L, D]`` (any strides), ``D`` even.
        cos: ``[B, L, D]``, broadcast over the heads; the dtype of ``x`` for the Triton path.
        sin: as ``cos``.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).

    Returns:
        ``[B, H, L, D]`` in ``x``'s dtype; the Triton path keeps ``x``'s memory layout when ``x`` is
        dense (a head-transposed view stays one).
    """
    _check(x, cos, sin)
    if resolve_forward_backend(backend, x, cos, sin, op="apply_rotary", dtypes=TRITON_DTYPES) == "torch":
        return apply_rotary_reference(x, cos, sin)
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty_like(x)
    if out.stride(-1) != 1:  # empty_like keeps a dense layout only
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    batch, heads, length, dim = x.shape
    if out.numel():
        half = dim // 2
        grid = (triton.cdiv(length, BLOCK_L), batch * heads)
        _rotary_kernel[grid](
            x, cos, sin, out, heads, length, half,
            x.stride(0), x.stride(1), x.stride(2), cos.stride(0), cos.stride(1), out.stride(0), out.stride(1), out.stride(2),
            BLOCK_L=BLOCK_L, BLOCK_HALF=triton.next_power_of_2(half), **_compile_options(x),
        )
    return out
