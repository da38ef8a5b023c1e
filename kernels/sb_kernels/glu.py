"""The GLU activation ``silu(gate) * up`` in one pass (the middle of every SpikingBrain MLP).

The rule, in the inputs' dtype ``dt`` as PyTorch computes ``F.silu(gate) * up``:

    a = silu(gate)        computed in float32, rounded to dt
    y = a * up            computed in float32, rounded to dt

The kernel rounds at the same places, so it agrees with PyTorch up to the last bit of ``exp`` inside
the sigmoid (libdevice's, as accurate as PyTorch's) (tests bound it by one unit in the last place of ``dt`` against a float64 evaluation).
PyTorch writes ``a`` out and reads it back: at 32k tokens of SpikingBrain-7B's MLP (18944 wide) that
intermediate is 1.2 GiB per layer. The Triton path is forward only; under autograd ``backend="auto"``
takes the PyTorch path and ``backend="triton"`` is an error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sb_neurons.validation import check_float_tensor, check_same_device

from .device import round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = libdevice = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK = 2048


def silu_mul_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up`` (differentiable); arguments as :func:`silu_mul`, checked the same way (on one device)."""
    _check(gate, up)
    check_same_device([("gate", gate), ("up", up)])
    return F.silu(gate) * up


def _check(gate: object, up: object) -> None:
    check_float_tensor(gate, "gate", finite=False)
    check_float_tensor(up, "up", finite=False)
    if gate.shape != up.shape:
        raise ValueError(f"gate and up must have one shape, got {tuple(gate.shape)} and {tuple(up.shape)}")


if triton is not None:

    @lazy_jit
    def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, numel, BLOCK: tl.constexpr, COMPILED: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < numel
        dt = gate_ptr.dtype.element_ty
        g = tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(up_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        # libdevice's exp is accurate to an ulp, as PyTorch's is; tl.exp (ex2.approx on a rounded g * log2(e))
        # errs by ~1e-6 relative at |g| ~ 20, measured on an H100. The interpreter has no libdevice.
        if COMPILED:
            e = libdevice.exp(-g)
        else:
            e = tl.exp(-g)
        a = round_to(g / (1.0 + e), dt)
        tl.store(out_ptr + offsets, to_dtype(round_to(a * u, dt), dt), mask=mask)


def silu_mul(gate: torch.Tensor, up: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """``silu(gate) * up`` elementwise.

    Args:
        gate: float16/bfloat16/float32 for the Triton path (any float dtype on the torch path).
        up: ``gate``'s shape (and dtype, for the Triton path).
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`); ``"auto"``
            takes Triton for CUDA tensors of one supported dtype when no gradient is needed.

    Returns:
        ``gate``'s shape, contiguous, in the inputs' dtype.
    """
    _check(gate, up)
    chosen = resolve_forward_backend(backend, gate, up, op="silu_mul", dtypes=TRITON_DTYPES)
    if chosen == "torch":
        return silu_mul_reference(gate, up)
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(gate)
    if gate.numel():
        _silu_mul_kernel[(triton.cdiv(gate.numel(), BLOCK),)](gate, up, out, gate.numel(), BLOCK=BLOCK, COMPILED=gate.is_cuda, num_warps=8)
    return out
