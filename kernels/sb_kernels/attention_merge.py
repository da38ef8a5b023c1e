"""Merge attention results over disjoint key sets through their log-sum-exp, writing the final layout.

Softmax attention of one query over keys split into disjoint sets ``S_1 .. S_n``, each computed apart as
``(o_i, lse_i)`` (``o_i`` the softmax-weighted values over ``S_i``, ``lse_i = logsumexp`` of its scores),
is exactly

    o = sum_i w_i o_i,    w_i = exp(lse_i - lse),    lse = logsumexp_i(lse_i)

(a set a query does not see has ``lse_i = -inf``, weight 0). Sliding-window prefill
(:func:`sb_layers.sliding_window.windowed_attention`) computes a causal square, an optional full
rectangle and an anti-causal triangle (as a causal square reversed in time) per block of queries; this
op merges the two or three parts in one pass, reading the third part in reversed row order, and writes
the result in the activations' dtype straight into the caller's output rows. PyTorch needed float32
copies, two flips, the merge's products and sums and a transposing copy: ~4% of a 32k-token prefill.

Rows: ``o_a`` has ``m`` rows; ``o_b`` (optional) ``m`` rows; ``o_c`` ``m_c <= m`` rows, row ``r`` of it
belonging to query ``m_c - 1 - r`` when ``reverse_c`` (else query ``r``); queries past its rows see no key
of it. The Triton path is forward only.
"""

from __future__ import annotations

import torch

from sb_neurons.validation import FLOAT_DTYPES
from sb_neurons.spike import compute_dtype

from .device import DeviceFunction, round_to, to_dtype
from .dispatch import Backend, lazy_jit, resolve_forward_backend

try:  # the module must import without triton: the torch backend needs none of this
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = tl = None

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
BLOCK_M = 16


def merge_attention_reference(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``sum_i exp(lse_i - logsumexp_i lse_i) o_i`` in float32 (float64 for float64 outputs).

    ``parts``: ``(o [B, H, m, D], lse [B, H, m])`` pairs of one shape (rows a part lacks padded with
    ``lse = -inf`` by the caller). Returns ``[B, H, m, D]`` in the compute dtype.
    """
    compute = compute_dtype(parts[0][0].dtype)
    lses = torch.stack([lse.to(compute) for _, lse in parts])
    total = torch.logsumexp(lses, dim=0)
    return sum((lse - total).exp().unsqueeze(-1) * o.to(compute) for (o, _), lse in zip(parts, lses, strict=True))


if triton is not None:

    @DeviceFunction
    def _part_rows(ptr, b, h, stride_b, stride_h, stride_m, rows64, cols, mask):
        """Rows ``rows64`` of one part's ``o[b, h]`` as float32 ``[BLOCK_M, BLOCK_D]`` (0 where masked)."""
        return tl.load(ptr + b * stride_b + h * stride_h + rows64[:, None] * stride_m + cols[None, :], mask=mask, other=0.0).to(tl.float32)

    @lazy_jit
    def _merge_kernel(
        out_ptr, a_ptr, a_lse_ptr, b_ptr, b_lse_ptr, c_ptr, c_lse_ptr, num_heads, rows, rows_c, dim,
        out_sb, out_sh, out_sm, a_sb, a_sh, a_sm, al_sb, al_sh, b_sb, b_sh, b_sm, bl_sb, bl_sh,
        c_sb, c_sh, c_sm, cl_sb, cl_sh,
        HAS_B: tl.constexpr, HAS_C: tl.constexpr, REVERSE_C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        bh = tl.program_id(1)
        b = (bh // num_heads).to(tl.int64)
        h = (bh % num_heads).to(tl.int64)
        row = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.arange(0, BLOCK_D)
        in_rows = row < rows
        mask = in_rows[:, None] & (cols < dim)[None, :]
        r64 = row.to(tl.int64)
        lse_a = tl.load(a_lse_ptr + b * al_sb + h * al_sh + r64, mask=in_rows, other=0.0).to(tl.float32)
        top = lse_a
        if HAS_B:
            lse_b = tl.load(b_lse_ptr + b * bl_sb + h * bl_sh + r64, mask=in_rows, other=0.0).to(tl.float32)
            top = tl.maximum(top, lse_b)
        if HAS_C:
            if REVERSE_C:
                row_c = rows_c - 1 - row
            else:
                row_c = row
            has_c = in_rows & (row_c >= 0) & (row_c < rows_c)
            rc64 = tl.where(has_c, row_c, 0).to(tl.int64)
            lse_c = tl.load(c_lse_ptr + b * cl_sb + h * cl_sh + rc64, mask=has_c, other=float("-inf")).to(tl.float32)
            top = tl.maximum(top, lse_c)
        w_a = tl.exp(lse_a - top)
        o = w_a[:, None] * _part_rows(a_ptr, b, h, a_sb, a_sh, a_sm, r64, cols, mask)
        total = w_a
        if HAS_B:
            w_b = tl.exp(lse_b - top)
            o += w_b[:, None] * _part_rows(b_ptr, b, h, b_sb, b_sh, b_sm, r64, cols, mask)
            total += w_b
        if HAS_C:
            w_c = tl.exp(lse_c - top)  # 0 where the query sees no key of this part
            mask_c = has_c[:, None] & (cols < dim)[None, :]
            o += w_c[:, None] * _part_rows(c_ptr, b, h, c_sb, c_sh, c_sm, rc64, cols, mask_c)
            total += w_c
        dt = out_ptr.dtype.element_ty
        o = round_to(o / total[:, None], dt)  # rounded to nearest in the interpreter too
        tl.store(out_ptr + b * out_sb + h * out_sh + r64[:, None] * out_sm + cols[None, :], to_dtype(o, dt), mask=mask)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def merge_attention_into(
    out: torch.Tensor,
    a: tuple[torch.Tensor, torch.Tensor],
    b: tuple[torch.Tensor, torch.Tensor] | None = None,
    c: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    reverse_c: bool = False,
    backend: Backend = "auto",
) -> None:
    """Write the merge of the parts ``a``, optional ``b`` and optional ``c`` (module docstring) into ``out``.

    Args:
        out: floating ``[B, H, m, D]`` (any strides, e.g. a head-transposed view of ``[B, m, H, D]`` rows,
            but no two elements sharing memory: an expanded, stride-0 view is an error), written in place.
        a: ``(o [B, H, m, D], lse [B, H, m])``; ``lse`` float32 (float64 for float64 ``o``).
        b: as ``a``, or None.
        c: ``(o [B, H, m_c, D], lse [B, H, m_c])`` with ``m_c <= m``; query ``q`` sees it at row
            ``m_c - 1 - q`` when ``reverse_c``, else row ``q``; queries past its rows do not see it.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (see :mod:`sb_kernels.dispatch`).
    """
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise ValueError(f"out must be a [B, H, m, D] tensor, got {getattr(out, 'shape', type(out).__name__)}")
    if out.dtype not in FLOAT_DTYPES:
        raise TypeError(f"out must have a floating dtype among float16, bfloat16, float32, float64; got {out.dtype}")
    if any(stride == 0 and size > 1 for stride, size in zip(out.stride(), out.shape)):
        raise ValueError(f"out must not be an expanded (stride-0) view: its elements would share memory; got strides {out.stride()}")
    batch, heads, rows, dim = out.shape
    named = [("a", a)] + ([("b", b)] if b is not None else [])
    for name, (o, lse) in named:
        if tuple(o.shape) != (batch, heads, rows, dim) or tuple(lse.shape) != (batch, heads, rows):
            raise ValueError(
                f"{name} must be (o [B, H, m, D], lse [B, H, m]) matching out {tuple(out.shape)}, got {tuple(o.shape)}, {tuple(lse.shape)}"
            )
    rows_c = 0
    if c is not None:
        o_c, lse_c = c
        rows_c = o_c.shape[2] if o_c.ndim == 4 else -1
        shape_ok = o_c.ndim == 4 and o_c.shape[:2] == out.shape[:2] and o_c.shape[3] == dim and rows_c <= rows
        if not shape_ok or tuple(lse_c.shape) != (batch, heads, rows_c):
            raise ValueError(
                f"c must be (o [B, H, m_c, D], lse [B, H, m_c]) with m_c <= {rows}, got {tuple(o_c.shape)}, {tuple(lse_c.shape)}"
            )
    outputs = [out] + [o for _, (o, _) in named] + ([c[0]] if c is not None else [])
    unsupported = None if out.stride(-1) == 1 else "out needs unit stride along D"
    chosen = resolve_forward_backend(backend, *outputs, op="merge_attention_into", dtypes=TRITON_DTYPES, unsupported=unsupported)
    parts = [part for _, part in named]
    if chosen == "torch":
        if c is not None:
            order = torch.arange(rows_c - 1, -1, -1, device=o_c.device) if reverse_c else torch.arange(rows_c, device=o_c.device)
            padded_o = o_c.new_zeros(batch, heads, rows, dim)
            padded_lse = torch.full((batch, heads, rows), float("-inf"), dtype=lse_c.dtype, device=lse_c.device)
            padded_o[:, :, :rows_c], padded_lse[:, :, :rows_c] = o_c[:, :, order], lse_c[:, :, order]
            parts.append((padded_o, padded_lse))
        out.copy_(merge_attention_reference(parts))
        return
    if out.numel() == 0:
        return
    o_a, lse_a = (_unit_stride(t) for t in a)
    o_b, lse_b = (_unit_stride(t) for t in b) if b is not None else (o_a, lse_a)
    o_c, lse_c = (_unit_stride(t) for t in c) if c is not None else (o_a, lse_a)
    grid = (triton.cdiv(rows, BLOCK_M), batch * heads)
    _merge_kernel[grid](
        out, o_a, lse_a, o_b, lse_b, o_c, lse_c, heads, rows, rows_c, dim,
        out.stride(0), out.stride(1), out.stride(2), o_a.stride(0), o_a.stride(1), o_a.stride(2), lse_a.stride(0), lse_a.stride(1),
        o_b.stride(0), o_b.stride(1), o_b.stride(2), lse_b.stride(0), lse_b.stride(1),
        o_c.stride(0), o_c.stride(1), o_c.stride(2), lse_c.stride(0), lse_c.stride(1),
        HAS_B=b is not None, HAS_C=c is not None, REVERSE_C=bool(reverse_c),
        BLOCK_M=BLOCK_M, BLOCK_D=triton.next_power_of_2(dim), num_warps=4,
    )
