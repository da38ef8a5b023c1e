"""Per-vector fake quantization in one pass: the W8ASpike attention's spiking queries and int8 keys/values.

Each row of the last dimension (one head vector) gets one scale; the output is the dequantized value in
the input's dtype:

    spike_fake_quantize:  s = clamp(mean(|x|) / k, 1e-5, 1e4),   y = round(x / s) * s
    int8_fake_quantize:   s = clamp(max(|x|) / 127, 1e-5, 1e4),  y = clamp(round(x / s), -128, 127) * s

in float32 (round half to even, IEEE division), cast to ``x.dtype``: the rules of
:func:`sb_neurons.spike_quantize` (``dim=-1``) and of the release's int8 KV cache. PyTorch runs each as a
chain of 6-9 elementwise kernels over float32 copies; the kernel reads ``x`` once and writes ``y`` once.

Exactness. The quotient is the correctly rounded ``RN(x / s)`` (:func:`sb_kernels.device.quotient_rn`),
so given the same ``s`` every output equals PyTorch's bit for bit. ``max``
is exact in any order, so ``int8_fake_quantize`` equals its reference exactly where PyTorch divides
exactly (on the CPU; on CUDA PyTorch divides by a Python scalar as a product with its rounded
reciprocal, so its scale may differ in the last bit); the sum inside
``mean(|x|)`` is taken in another order than PyTorch's, so the spiking scale may differ in its last bit,
and an element within that bit of a rounding tie may take the neighbouring count.

Non-finite rows. A row holding NaN or Inf comes out as a row of NaN on both paths: nothing is read back
to the host, so a call can be captured in a CUDA graph (:func:`sb_neurons.spike_quantize` raises instead,
which needs a host read). The Triton path is forward only; under autograd ``backend="auto"`` takes the
PyTorch path, whose gradient is the identity (straight-through).
"""

from __future__ import annotations

import torch

from sb_neurons.validation import check_float_tensor, check_positive
from sb_neurons.spike import V_TH_MAX, V_TH_MIN, compute_dtype, spike_count

from .device import DeviceFunction, quotient_rn, round_half_even, round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend

try:  # the module must import without triton: the torch backends need none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_TRITON_WIDTH = 16384  # a row is held in registers; wider rows take the PyTorch path
INT8_LEVELS = 127.0


def _straight_through(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y``'s values with the identity gradient to ``x`` (``x - x.detach()`` is exactly zero)."""
    return y.detach() + (x - x.detach()) if x.requires_grad else y


def _nan_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows_finite = torch.isfinite(x).all(dim=-1, keepdim=True)
    return torch.where(rows_finite, y, float("nan"))


def spike_fake_quantize_reference(x: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """``round(x / v_th) * v_th`` per row, ``v_th = clamp(mean|x| / k, 1e-5, 1e4)``, in ``x.dtype``
    (PyTorch; straight-through gradient); rows holding NaN or Inf become NaN. Arguments as
    :func:`spike_fake_quantize`, checked the same way."""
    x = _check(x, "x")
    k = check_positive(k, "k")
    finite = torch.where(torch.isfinite(x), x, 0.0)
    counts, v_th = spike_count(finite, k, -1)
    return _nan_rows(x, _straight_through(x, (counts * v_th).to(x.dtype)))


def int8_fake_quantize_reference(x: torch.Tensor) -> torch.Tensor:
    """``clamp(round(x / s), -128, 127) * s`` per row, ``s = clamp(max|x| / 127, 1e-5, 1e4)``, in
    ``x.dtype`` (float32 arithmetic, float64 for float64 ``x``; straight-through gradient); rows holding
    NaN or Inf become NaN. Arguments as :func:`int8_fake_quantize`, checked the same way."""
    x = _check(x, "x")
    work = x.detach().to(compute_dtype(x.dtype))
    work = torch.where(torch.isfinite(work), work, 0.0)
    scale = (work.abs().amax(dim=-1, keepdim=True) / INT8_LEVELS).clamp(V_TH_MIN, V_TH_MAX)
    y = (torch.round(work / scale).clamp(-128, 127) * scale).to(x.dtype)
    return _nan_rows(x, _straight_through(x, y))


if triton is not None:

    @DeviceFunction
    def fake_quant_scale(abs_sum, abs_max, width_f, k, INT8: tl.constexpr):
        """The scale of a row from its float32 ``sum |x|`` and ``max |x|`` (either rule, clamped)."""
        if INT8:
            s = tl.math.div_rn(abs_max, 127.0)
        else:
            s = tl.math.div_rn(tl.math.div_rn(abs_sum, width_f), k)
        return tl.minimum(tl.maximum(s, 1e-5), 1e4)

    @DeviceFunction
    def fake_quantize_values(x, s, finite, INT8: tl.constexpr, COMPILED: tl.constexpr):
        """float32 ``x`` coded with scale ``s`` (broadcast): ``round(x / s) * s`` (clamped to int8 for
        ``INT8``), NaN where ``finite`` is False; not yet rounded to the output dtype."""
        quotient = quotient_rn(x, s, tl.math.div_rn(1.0, s), COMPILED)
        r = round_half_even(quotient, COMPILED)
        if INT8:
            r = tl.minimum(tl.maximum(r, -128.0), 127.0)
        return tl.where(finite, r * s, float("nan"))

    @lazy_jit
    def _fake_quant_kernel(
        x_ptr, y_ptr, scale_ptr, width, stride_x, stride_y, width_f, k,
        BLOCK: tl.constexpr, INT8: tl.constexpr, COMPILED: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        mask = offs < width
        dt = y_ptr.dtype.element_ty
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        abs_x = tl.abs(x)
        abs_sum = tl.sum(abs_x, axis=0)
        finite = abs_sum * 0.0 == 0.0  # NaN or Inf anywhere in the row
        s = fake_quant_scale(abs_sum, tl.max(abs_x, axis=0), width_f, k, INT8)
        y = fake_quantize_values(x, s, finite, INT8, COMPILED)
        tl.store(y_ptr + row * stride_y + offs, to_dtype(round_to(y, dt), dt), mask=mask)
        tl.store(scale_ptr + row, s)


def _launch(x: torch.Tensor, k: float, int8: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, scales)`` of the kernel for ``x [..., D]``: ``y`` in ``x``'s shape and dtype, float32 scales
    ``[rows]`` (for tests: the scale each row used)."""
    width = x.shape[-1]
    x2d = x.detach().reshape(-1, width)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    y = torch.empty(x2d.shape, dtype=x.dtype, device=x.device)
    scales = torch.empty(x2d.shape[0], dtype=torch.float32, device=x.device)
    if x2d.shape[0]:
        block = triton.next_power_of_2(width)
        _fake_quant_kernel[(x2d.shape[0],)](
            x2d, y, scales, width, x2d.stride(0), y.stride(0), float(width), float(k),
            BLOCK=block, INT8=int8, COMPILED=x.is_cuda, num_warps=max(1, min(8, block // 256)),
        )
    return y.reshape(x.shape), scales


def _check(x: object, name: str) -> torch.Tensor:
    x = check_float_tensor(x, name, finite=False)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape [..., D] with D >= 1, got {tuple(x.shape)}")
    return x


def _backend(backend: Backend, x: torch.Tensor, op: str) -> str:
    too_wide = f"rows wider than {MAX_TRITON_WIDTH}" if x.shape[-1] > MAX_TRITON_WIDTH else None
    return resolve_forward_backend(backend, x, op=op, dtypes=TRITON_DTYPES, unsupported=too_wide)


def spike_fake_quantize(x: torch.Tensor, k: float = 3.0, *, backend: Backend = "auto") -> torch.Tensor:
    """Adaptive-threshold spike coding of each row, dequantized: ``round(x / v_th) * v_th`` in ``x.dtype``.

    Args:
        x: ``[..., D]``, float16/bfloat16/float32 for the Triton path (float64 too on the torch path).
        k: ``k > 0``; ``v_th = clamp(mean(|x|) / k, 1e-5, 1e4)`` per row.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).

    Returns:
        ``x``'s shape and dtype; rows holding NaN or Inf are NaN. Gradient (torch path): identity.
    """
    x = _check(x, "x")
    k = check_positive(k, "k")
    if _backend(backend, x, "spike_fake_quantize") == "torch":
        return spike_fake_quantize_reference(x, k)
    return _launch(x, k, int8=False)[0]


def int8_fake_quantize(x: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """Symmetric int8 quantization of each row, dequantized: ``clamp(round(x / s), -128, 127) * s``,
    ``s = clamp(max(|x|) / 127, 1e-5, 1e4)``, in ``x.dtype``.

    Identities: a row already on its grid (``x = n s`` with integers ``|n| <= 127`` and ``max |n| = 127``)
    is returned unchanged, and ``|y - x| <= s / 2`` elementwise (before the cast to ``x.dtype``).

    Args:
        x: ``[..., D]``, float16/bfloat16/float32 for the Triton path (float64 too on the torch path).
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).

    Returns:
        ``x``'s shape and dtype; rows holding NaN or Inf are NaN. Gradient (torch path): identity.
    """
    x = _check(x, "x")
    if _backend(backend, x, "int8_fake_quantize") == "torch":
        return int8_fake_quantize_reference(x)
    return _launch(x, 0.0, int8=True)[0]


__all__ = [
    "int8_fake_quantize",
    "int8_fake_quantize_reference",
    "spike_fake_quantize",
    "spike_fake_quantize_reference",
]
