"""W8ASpike linear: int8 spike counts x int8 weights on tensor cores, int32 accumulation.

Reference semantics (computed in float, :func:`w8aspike_linear_reference`):

    counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)           # one threshold per token row
    y = (counts * v_th) @ (weight_int8 * scales).T + bias             # scales per group of K

``scales`` is float32 ``[N, K // group, 1]``: group 128 as the release, or one group of ``K``
(``[N, 1, 1]``) for per-output-channel scales. The Triton path computes, per row ``m`` and column ``n``,

    y[m, n] = v_th[m] * sum_g scales[n, g] * P[m, n, g] + bias[n],    P[m, n, g] = sum_{k in g} c[m, k] W[n, k]

where every ``P`` is an exact int32 sum of int8 x int8 products (tensor cores); only the scaling is
rounded (float32, then cast to ``x.dtype``).

Counts past int8. Counts are unbounded (bursts far past 127), so each count is split into int8
digits, ``c = d0 + 256 d1 + 65536 d2 + ...`` with ``d_i`` in ``[-128, 127]``. The fused path writes only
``d0`` (one byte per count) and the row's ``max |count|``; the GEMM runs on ``d0`` for every row, then
once more on the few rows whose counts exceed 127, with all their digits (``P = sum_i 256^i P_i``,
exact in int32 because ``sum |c| <= (k + 1/2) K`` bounds ``|P|`` by ``127 (k + 1/2) K``). Those rows are
found on the host (one device-to-host read of the row maxima per call, after both launches are queued):
that read, the gather and the second launch are the cost of exactness, reported by
``benchmarks/bench_w8aspike.py``. Decode (a few rows) takes the same path: whole int32 counts split into
digits inside the GEMM (tried, with a block-wide test per K tile for higher digits) streamed the weights
1.3-2x slower on an H100 than int8 counts.
"""

from __future__ import annotations

import torch

from sb_neurons import spike_count
from sb_neurons._validation import check_float_tensor, check_positive, check_tensor
from sb_neurons.spike import ClampSpec, resolve_clamp

from ._dispatch import Backend, lazy_jit, resolve_backend
from .spike_quant import TRITON_INPUT_DTYPES, check_rows_finite, quantize_rows

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

INT8_MAX = 127
SHARED_BYTES = 220 * 1024  # pipeline buffers per block, under Hopper's 227 KB (leaves room for Triton's own)
DIGIT_BASE = 256


def split_int8_digits(counts: torch.Tensor) -> torch.Tensor:
    """Integer ``counts`` as int8 digits ``[n_digits, *counts.shape]`` with ``counts = sum_i 256^i d_i``.

    Each digit is in ``[-128, 127]``; ``n_digits`` is the fewest that represent every count (at least 1).
    """
    check_tensor(counts, "counts")
    if counts.is_floating_point() or counts.dtype == torch.bool:
        raise TypeError(f"counts must have an integer dtype, got {counts.dtype}")
    rest = counts.to(torch.int64)
    digits = []
    while True:
        low = ((rest + 128) & 255) - 128
        digits.append(low.to(torch.int8))
        rest = (rest - low) >> 8
        if not bool(rest.any()):
            break
    return torch.stack(digits)


if tl is not None:

    @lazy_jit
    def _w8a_gemm_kernel(
        a_ptr, w_ptr, vth_ptr, scale_ptr, bias_ptr, out_ptr,
        M, N, stride_ad, stride_am, stride_wn, stride_sn, stride_om, n_groups,
        N_DIGITS: tl.constexpr, GROUP_TILES: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr, OUT_INT32: tl.constexpr, PER_CHANNEL: tl.constexpr,
    ):
        # Grouped launch order: GROUP_M row blocks share each column block's weights in L2.
        pid = tl.program_id(0)
        blocks_m = tl.cdiv(M, BM)
        blocks_n = tl.cdiv(N, BN)
        per_group = GROUP_M * blocks_n
        first_m = (pid // per_group) * GROUP_M
        size_m = tl.minimum(blocks_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % size_m
        pid_n = (pid % per_group) // size_m

        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        offs_k = tl.arange(0, BK)
        mask_m = offs_m < M
        mask_n = offs_n < N
        a_rows = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
        w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None]

        # One flat loop over K tiles (what Triton software-pipelines); a group's int32 sum is scaled
        # into the float accumulator when the group ends, or once at the end for per-channel scales.
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        group_int = tl.zeros([BM, BN], dtype=tl.int32)
        for kt in range(n_groups * GROUP_TILES):
            k0 = kt * BK
            w = tl.load(w_cols + k0, mask=mask_n[None, :], other=0)
            for d in tl.static_range(N_DIGITS):
                a = tl.load(a_rows + d * stride_ad + k0, mask=mask_m[:, None], other=0)
                if d == 0:
                    group_int = tl.dot(a, w, group_int, out_dtype=tl.int32)
                else:
                    group_int += tl.dot(a, w, out_dtype=tl.int32) * (256**d)
            if not PER_CHANNEL:
                if (kt % GROUP_TILES) == GROUP_TILES - 1:
                    scale = tl.load(scale_ptr + offs_n * stride_sn + kt // GROUP_TILES, mask=mask_n, other=0.0)
                    as_float = group_int.to(tl.float32)
                    acc += as_float * scale[None, :]
                    group_int = tl.zeros([BM, BN], dtype=tl.int32)
        if PER_CHANNEL and not OUT_INT32:
            scale = tl.load(scale_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)
            acc = group_int.to(tl.float32) * scale[None, :]

        out_ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
        mask = mask_m[:, None] & mask_n[None, :]
        if OUT_INT32:
            tl.store(out_ptrs, group_int, mask=mask)
        else:
            v_th = tl.load(vth_ptr + offs_m, mask=mask_m, other=0.0)
            y = acc * v_th[:, None]
            if HAS_BIAS:
                y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=mask)


def _tile_config(m: int, n: int, group: int, compiled: bool, per_channel: bool = False) -> dict[str, int]:
    """Block shapes by the number of rows: weight-streaming tiles for decode, square-ish for prefill.

    Large M: 256 x 128 tiles only with per-channel scales; per-group scaling keeps a float32 and an int32
    accumulator per output, and at that size it spills (255 registers, H100 sweep: 1.4-2x slower).
    """
    bk = next(b for b in (128, 64, 32) if group % b == 0)
    if not compiled:  # the interpreter: small tiles keep CPU tests fast
        return dict(BM=16, BN=16, BK=bk, GROUP_M=4, num_warps=1, num_stages=1)
    if m <= 16:
        # Decode streams the weights once (H100 sweep, benchmarks/bench_w8aspike.py): narrow column
        # blocks, so that every SM has several weight tiles in flight even for 512-wide layers.
        if n >= 8192:
            return dict(BM=16, BN=32, BK=bk, GROUP_M=1, num_warps=4, num_stages=6)
        return dict(BM=16, BN=16, BK=bk, GROUP_M=1, num_warps=2, num_stages=8)
    if m <= 64:
        return dict(BM=64, BN=64, BK=bk, GROUP_M=4, num_warps=4, num_stages=4)
    if per_channel and m > 512:
        return dict(BM=256, BN=128, BK=bk, GROUP_M=8, num_warps=8, num_stages=3)
    return dict(BM=128, BN=128, BK=bk, GROUP_M=8, num_warps=8, num_stages=4)


def _launch_gemm(
    digits: torch.Tensor,
    weight: torch.Tensor,
    v_th: torch.Tensor,
    scales2d: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """``digits`` int8 ``[n_digits, M, K]`` (contiguous), ``weight`` int8
    ``[N, K]``, ``scales2d`` float32 ``[N, G]``; writes ``out [M, N]`` (int32: the raw integer products,
    G must be 1). ``config`` overrides the tile shapes of :func:`_tile_config` (benchmark sweeps)."""
    n_digits, rows, width = digits.shape
    cols = weight.shape[0]
    groups = scales2d.shape[1]
    group = width // groups
    cfg = _tile_config(rows, cols, group, digits.is_cuda, groups == 1) if config is None else dict(config)
    # Each pipeline stage holds n_digits A tiles and one W tile in shared memory (H100: 227 KB per block).
    stage_bytes = (cfg["BM"] * n_digits + cfg["BN"]) * cfg["BK"]
    cfg["num_stages"] = max(1, min(cfg["num_stages"], SHARED_BYTES // stage_bytes))
    bm, bn, bk = cfg["BM"], cfg["BN"], cfg["BK"]
    grid = (triton.cdiv(rows, bm) * triton.cdiv(cols, bn),)
    _w8a_gemm_kernel[grid](
        digits, weight, v_th, scales2d, bias if bias is not None else scales2d, out,
        rows, cols, digits.stride(0), digits.stride(1), weight.stride(0), scales2d.stride(0), out.stride(0), groups,
        N_DIGITS=n_digits, GROUP_TILES=group // bk, BM=bm, BN=bn, BK=bk, GROUP_M=cfg["GROUP_M"],
        HAS_BIAS=bias is not None, OUT_INT32=out.dtype == torch.int32, PER_CHANNEL=groups == 1,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def _check_weight(weight_int8: object, in_features: int | None) -> tuple[int, int]:
    weight = check_tensor(weight_int8, "weight_int8")
    if weight.dtype != torch.int8 or weight.ndim != 2:
        raise TypeError(f"weight_int8 must be an int8 tensor [N, K], got {weight.dtype} of shape {tuple(weight.shape)}")
    if in_features is not None and weight.shape[1] != in_features:
        raise ValueError(f"weight_int8 is [N, K] = {tuple(weight.shape)}, but the input's last dimension is {in_features}")
    return weight.shape[0], weight.shape[1]


def _check_weight_and_scales(
    weight_int8: object, scales: object, in_features: int | None = None, check_finite: bool = True
) -> tuple[int, int, int]:
    cols, width = _check_weight(weight_int8, in_features)
    s = check_tensor(scales, "scales")
    if s.dtype != torch.float32 or s.ndim != 3 or s.shape[0] != cols or s.shape[2] != 1 or s.shape[1] < 1:
        raise ValueError(f"scales must be float32 [N, K // group, 1] with N = {cols}, got {s.dtype} {tuple(s.shape)}")
    groups = s.shape[1]
    if width % groups:
        raise ValueError(f"scales has {groups} groups, which do not divide K = {width}")
    if check_finite and not bool(torch.isfinite(s).all()):
        raise ValueError("scales contains NaN or Inf")
    return cols, width, groups


def _check_bias(bias: object, cols: int) -> torch.Tensor | None:
    if bias is None:
        return None
    b = check_float_tensor(bias, "bias")
    if b.shape != (cols,):
        raise ValueError(f"bias must have shape ({cols},), got {tuple(b.shape)}")
    return b


def int8_matmul_int32(counts: torch.Tensor, weight_int8: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """Exact ``counts @ weight_int8.T`` as int32 for integer ``counts [M, K]`` of any size (split into
    int8 digits) and int8 ``weight_int8 [N, K]``; the integer core of :func:`w8aspike_linear`.

    Raises ``OverflowError`` when a result could leave int32 (``max|c| * 127 * K >= 2**31``) and
    the true products are not checked otherwise.
    """
    check_tensor(counts, "counts")
    if counts.is_floating_point() or counts.dtype == torch.bool or counts.ndim != 2:
        raise TypeError(f"counts must be a 2-d integer tensor [M, K], got {counts.dtype} {tuple(counts.shape)}")
    cols, _ = _check_weight(weight_int8, counts.shape[1])
    bound = int(counts.abs().sum(dim=1).max()) * INT8_MAX if counts.numel() else 0
    if bound >= 2**31:
        raise OverflowError(f"|counts| @ 127 reaches {bound}, which int32 accumulation cannot hold")
    chosen = resolve_backend(backend, counts, weight_int8, op="int8_matmul_int32")
    if chosen == "torch":
        return (counts.to(torch.int64) @ weight_int8.to(torch.int64).T).to(torch.int32)
    digits = split_int8_digits(counts).contiguous()
    out = torch.empty(counts.shape[0], cols, dtype=torch.int32, device=counts.device)
    ones = torch.ones(cols, 1, dtype=torch.float32, device=counts.device)
    v_th = torch.ones(counts.shape[0], dtype=torch.float32, device=counts.device)
    return _launch_gemm(digits, weight_int8.contiguous(), v_th, ones, None, out)


def dequantize_weight(weight_int8: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``weight_int8 * scales`` per group, as ``dtype`` ``[N, K]`` (what the release's simulated path multiplies by)."""
    cols, width, groups = _check_weight_and_scales(weight_int8, scales)
    grouped = weight_int8.reshape(cols, groups, width // groups).to(torch.float32) * scales
    return grouped.reshape(cols, width).to(dtype)


def w8aspike_linear_reference(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
) -> torch.Tensor:
    """``(counts * v_th) @ (weight_int8 * scales).T + bias`` in float32 (float64 for float64 ``x``),
    cast to ``x.dtype``; ``counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)``."""
    counts, v_th = spike_count(x, k, -1, clamp)
    compute = v_th.dtype
    weight = dequantize_weight(weight_int8, scales, torch.float32).to(compute)
    y = (counts * v_th) @ weight.T
    if bias is not None:
        y = y + bias.to(compute)
    return y.detach().to(x.dtype)


def w8aspike_linear(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Spike-coded linear layer with int8 weights (W8ASpike), forward only.

    Args:
        x: activations ``[..., K]``, float16/bfloat16/float32 (float64 on the torch backend), finite.
        weight_int8: int8 ``[N, K]``.
        scales: float32 ``[N, K // group, 1]`` (``[N, 1, 1]`` for per-output-channel scales).
        bias: ``[N]`` or None.
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        clamp: ``None`` (counts unbounded and handled exactly), a signed bit width or a ``(low, high)`` range.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``. The Triton path needs ``K`` divisible by 32
            and the group size divisible by 32.

    Returns:
        ``[..., N]`` in ``x.dtype``. No gradient flows (inference kernel).
    """
    # The kernel path reads x once: its finiteness is flagged by the quantization kernel, and scales
    # (a layer's calibrated buffer) are not re-read on every call; the reference checks both.
    check_float_tensor(x, "x", finite=False)
    k = check_positive(k, "k")
    bounds = resolve_clamp(clamp)
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    chosen = resolve_backend(backend, x, weight_int8, scales, op="w8aspike_linear")
    cols, width, groups = _check_weight_and_scales(weight_int8, scales, x.shape[-1], check_finite=chosen == "torch")
    bias = _check_bias(bias, cols)
    if chosen == "torch":
        return w8aspike_linear_reference(x, weight_int8, scales, bias, k=k, clamp=clamp)
    if x.dtype not in TRITON_INPUT_DTYPES:
        raise TypeError(f"w8aspike_linear: the triton backend takes float16, bfloat16 or float32 x, got {x.dtype}")
    group = width // groups
    if width % 32 or group % 32:
        raise ValueError(f"w8aspike_linear: the triton backend needs K and the group size divisible by 32, got K={width}, group={group}")

    x2d = x.detach().reshape(-1, width)
    if x2d.stride(-1) != 1:
        x2d = x2d.contiguous()
    rows = x2d.shape[0]
    out = torch.empty(rows, cols, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out.reshape(*x.shape[:-1], cols)
    weight = weight_int8.contiguous()
    scales2d = scales.reshape(cols, groups).contiguous()
    codes = quantize_rows(x2d, k, bounds, torch.int8)
    _launch_gemm(codes.counts.unsqueeze(0), weight, codes.v_th, scales2d, bias, out)
    # The one host read of the call, queued after both launches: is any count past int8 (or non-finite)?
    largest = float(codes.row_max.max())
    if largest > INT8_MAX:
        _raise_if_flagged(largest)
        wide = (codes.row_max > INT8_MAX).nonzero().flatten()
        _redo_wide_rows(x2d, wide, codes.v_th, bounds, weight, scales2d, bias, out)
    return out.reshape(*x.shape[:-1], cols)


def _raise_if_flagged(largest: float) -> None:
    """Errors the quantization kernel flagged in the largest row maximum: a non-finite row (``inf``),
    counts beyond int32."""
    check_rows_finite(largest)
    if largest > 2**31 - 1:
        raise OverflowError(f"a spike count reaches {largest:.3g}, beyond int32; pass clamp= to bound counts")


def _redo_wide_rows(x2d, wide, v_th, bounds, weight, scales2d, bias, out) -> None:
    """Recompute the rows whose counts exceed int8 with all their digits (same v_th, same rounding)."""
    row_th = v_th[wide]
    counts = torch.round(x2d[wide].float() / row_th[:, None])
    if bounds is not None:
        counts = counts.clamp(bounds[0], bounds[1])
    digits = split_int8_digits(counts.to(torch.int32)).contiguous()
    part = torch.empty(wide.numel(), out.shape[1], dtype=out.dtype, device=out.device)
    _launch_gemm(digits, weight, row_th, scales2d, bias, part)
    out[wide] = part


__all__ = [
    "dequantize_weight",
    "int8_matmul_int32",
    "split_int8_digits",
    "w8aspike_linear",
    "w8aspike_linear_reference",
]
