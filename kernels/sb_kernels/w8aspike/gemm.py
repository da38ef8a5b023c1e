"""W8ASpike on several rows (prefill): the quantization kernel writes int8 ``d0`` and the row maxima, the
GEMM runs on ``d0`` (int8 x int8 on tensor cores, int32 accumulation), then the rows past 127 are listed
and recomputed exactly on the device. Also :func:`int8_matmul_int32`, the exact integer core."""

from __future__ import annotations

import torch

from sb_neurons.validation import check_tensor

from ..dispatch import Backend, lazy_jit, resolve_backend, sm_count
from ..spike_quant import quantize_rows
from .accumulate import _channel_scaled, _close_group, _exact_rows_acc, _finish_rows, _residual_acc
from .reference import INT8_MAX, _check_weight, split_int8_digits
from .residual import ResidualCodes
from .tiles import SHARED_BYTES, _tile_config

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

WIDE_ROWS_BLOCK = 4096  # rows scanned per step by the one-program kernel that lists rows past 127


def _clamp_args(bounds) -> tuple[float, float]:
    return (0.0, 0.0) if bounds is None else (float(bounds[0]), float(bounds[1]))


if tl is not None:

    @lazy_jit
    def _w8a_gemm_kernel(
        a_ptr, w_ptr, vth_ptr, scale_ptr, bias_ptr, out_ptr, rptr_ptr, rcol_ptr, rval_ptr,
        M, N, stride_ad, stride_am, stride_wn, stride_sn, stride_om, n_groups,
        N_DIGITS: tl.constexpr, GROUP_TILES: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
        HAS_BIAS: tl.constexpr, OUT_INT32: tl.constexpr, PER_CHANNEL: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
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
                acc, group_int = _close_group(acc, group_int, kt, scale_ptr, offs_n, stride_sn, mask_n, GROUP_TILES)
        if PER_CHANNEL and not OUT_INT32:
            acc = _channel_scaled(group_int, scale_ptr, offs_n, stride_sn, mask_n)
        if HAS_RESIDUAL:  # weight codes past int8, on the low digit (rows past 127 are redone from x)
            acc += _residual_acc(
                a_ptr + offs_m.to(tl.int64)[:, None] * stride_am, mask_m, 0.0, offs_n, mask_n, rptr_ptr, rcol_ptr,
                rval_ptr, scale_ptr, stride_sn, GROUP_TILES * BK, 0.0, 0.0, 0, 1, BM, BN, False, False, False, False,
            )

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

    @lazy_jit
    def _wide_rows_kernel(rowmax_ptr, idx_ptr, count_ptr, M, BLOCK: tl.constexpr):
        """One program: the indices of the rows whose ``max |count|`` exceeds 127 (or is non-finite),
        in increasing order, and their number."""
        offs = tl.arange(0, BLOCK)
        total = 0
        for start in range(0, M, BLOCK):
            rows = start + offs
            in_range = rows < M
            rmax = tl.load(rowmax_ptr + rows, mask=in_range, other=0.0)
            wide = ((rmax > 127.0) | (rmax != rmax)) & in_range
            flags = wide.to(tl.int32)
            slots = total + tl.cumsum(flags, axis=0) - flags
            tl.store(idx_ptr + slots, rows, mask=wide)
            total += tl.sum(flags, axis=0)
        tl.store(count_ptr, total)

    @lazy_jit
    def _w8a_wide_rows_kernel(
        x_ptr, w_ptr, vth_ptr, rowmax_ptr, idx_ptr, count_ptr, scale_ptr, bias_ptr, out_ptr, rptr_ptr, rcol_ptr,
        rval_ptr, M, N, stride_xm, stride_wn, stride_sn, stride_om, n_groups, clamp_low, clamp_high,
        GROUP_TILES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        HAS_BIAS: tl.constexpr, PER_CHANNEL: tl.constexpr, CLAMP: tl.constexpr, USE_RINT: tl.constexpr,
        DIRECT: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ):
        # Persistent: the grid's programs share the (listed rows x column blocks) tiles; with no listed
        # row there is no tile and every program returns at once. DIRECT (M <= BM): no list, the
        # programs read the M row maxima themselves (one launch fewer for small batches).
        blocks_n = tl.cdiv(N, BN)
        if DIRECT:
            first_rows = tl.arange(0, BM)
            first_max = tl.load(rowmax_ptr + first_rows, mask=first_rows < M, other=0.0)
            first_wide = ((first_max > 127.0) | (first_max != first_max)) & (first_rows < M)
            n_wide = tl.max(first_wide.to(tl.int32), axis=0) * BM  # one block of rows if any is wide
        else:
            n_wide = tl.load(count_ptr)
        n_tiles = tl.cdiv(n_wide, BM) * blocks_n
        offs_k = tl.arange(0, BK)
        for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
            slots = (tile // blocks_n) * BM + tl.arange(0, BM)
            if DIRECT:
                listed = first_wide
                rows = slots.to(tl.int64)
            else:
                listed = slots < n_wide
                rows = tl.load(idx_ptr + slots, mask=listed, other=0).to(tl.int64)
            v_th = tl.load(vth_ptr + rows, mask=listed, other=1.0)
            row_max = tl.load(rowmax_ptr + rows, mask=listed, other=0.0)
            offs_n = (tile % blocks_n) * BN + tl.arange(0, BN)
            mask_n = offs_n < N
            x_rows = x_ptr + rows[:, None] * stride_xm
            w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None]
            many_digits = tl.max(tl.where(listed, row_max, 0.0), axis=0) > 32639.0
            acc = _exact_rows_acc(
                x_rows, listed, v_th, w_cols, mask_n, scale_ptr, offs_n, stride_sn, n_groups, clamp_low, clamp_high,
                many_digits, GROUP_TILES, BM, BN, BK, PER_CHANNEL, CLAMP, USE_RINT, False,
            )
            if HAS_RESIDUAL:
                acc += _residual_acc(
                    x_rows, listed, v_th, offs_n, mask_n, rptr_ptr, rcol_ptr, rval_ptr, scale_ptr, stride_sn,
                    GROUP_TILES * BK, clamp_low, clamp_high, 0, 1, BM, BN, True, False, CLAMP, USE_RINT,
                )
            y = _finish_rows(acc, v_th, row_max, bias_ptr, offs_n, mask_n, HAS_BIAS)
            out_ptrs = out_ptr + rows[:, None] * stride_om + offs_n[None, :]
            tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=listed[:, None] & mask_n[None, :])


def _launch_gemm(
    digits: torch.Tensor,
    weight: torch.Tensor,
    v_th: torch.Tensor,
    scales2d: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    config: dict[str, int] | None = None,
    residual: ResidualCodes | None = None,
) -> torch.Tensor:
    """``digits`` int8 ``[n_digits, M, K]`` (contiguous), ``weight`` int8
    ``[N, K]``, ``scales2d`` float32 ``[N, G]``; writes ``out [M, N]`` (int32: the raw integer products,
    G must be 1, no residual). ``config`` overrides the tile shapes of :func:`_tile_config` (benchmark
    sweeps). ``residual``: the weight codes past int8, applied to digit 0 (one-digit calls)."""
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
    if residual is not None and (n_digits != 1 or out.dtype == torch.int32):
        raise ValueError("a residual applies to one-digit calls with a float output")
    rptr, rcol, rval = _residual_args(residual, scales2d)
    _w8a_gemm_kernel[grid](
        digits, weight, v_th, scales2d, bias if bias is not None else scales2d, out, rptr, rcol, rval,
        rows, cols, digits.stride(0), digits.stride(1), weight.stride(0), scales2d.stride(0), out.stride(0), groups,
        N_DIGITS=n_digits, GROUP_TILES=group // bk, BM=bm, BN=bn, BK=bk, GROUP_M=cfg["GROUP_M"],
        HAS_BIAS=bias is not None, OUT_INT32=out.dtype == torch.int32, PER_CHANNEL=groups == 1,
        HAS_RESIDUAL=residual is not None,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


def int8_matmul_int32(counts: torch.Tensor, weight_int8: torch.Tensor, *, backend: Backend = "auto") -> torch.Tensor:
    """Exact ``counts @ weight_int8.T`` as int32 for integer ``counts [M, K]`` of any size (split into
    int8 digits) and int8 ``weight_int8 [N, K]``; the integer core of :func:`w8aspike_linear`.

    Raises ``OverflowError`` when a result could leave int32 (``max|c| * 127 * K >= 2**31``) and
    the true products are not checked otherwise.
    """
    check_tensor(counts, "counts")
    if counts.is_floating_point() or counts.dtype == torch.bool or counts.ndim != 2:
        raise TypeError(f"counts must be a 2-d integer tensor [M, K], got {counts.dtype} {tuple(counts.shape)}")
    cols, _ = _check_weight(weight_int8, counts.shape[1], "counts")
    bound = int(counts.abs().sum(dim=1).max()) * INT8_MAX if counts.numel() else 0
    if bound >= 2**31:
        raise OverflowError(f"|counts| @ 127 reaches {bound}, which int32 accumulation cannot hold")
    chosen = resolve_backend(backend, counts, weight_int8, op="int8_matmul_int32")
    if chosen == "torch":
        # float64, not int64: CUDA has no integer matmul, and with every partial sum below the bound
        # (< 2**31 < 2**53) each float64 product and sum is an exact integer on any device.
        return (counts.to(torch.float64) @ weight_int8.to(torch.float64).T).to(torch.int32)
    digits = split_int8_digits(counts).contiguous()
    out = torch.empty(counts.shape[0], cols, dtype=torch.int32, device=counts.device)
    ones = torch.ones(cols, 1, dtype=torch.float32, device=counts.device)
    v_th = torch.ones(counts.shape[0], dtype=torch.float32, device=counts.device)
    return _launch_gemm(digits, weight_int8.contiguous(), v_th, ones, None, out)


def _residual_args(residual: ResidualCodes | None, stand_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The residual's three CSR tensors as kernel arguments (``stand_in`` for each, never read, without one)."""
    if residual is None:
        return stand_in, stand_in, stand_in
    return residual.row_ptr, residual.columns, residual.values


def _linear_two_pass(
    x2d, weight, scales2d, bias, k, bounds, out, config=None, gemm: str = "triton", residual=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill: quantization kernel (int8 ``d0``), GEMM on ``d0`` (``gemm``: Triton's, or with
    ``"cutlass"`` the warp-specialized CuTe DSL kernel of :mod:`~sb_kernels.w8aspike.hopper`), then the
    rows past 127 recomputed exactly by :func:`_launch_wide_rows`; returns ``(v_th, row_max)``.
    ``residual``: the weight codes past int8 (the Triton GEMM only)."""
    codes = quantize_rows(x2d, k, bounds, torch.int8)
    if gemm == "cutlass":
        from .hopper import hopper_w8a_gemm

        hopper_w8a_gemm(codes.counts, weight, codes.v_th, scales2d.T.contiguous(), bias, out)
    else:
        _launch_gemm(codes.counts.unsqueeze(0), weight, codes.v_th, scales2d, bias, out, config, residual)
    _launch_wide_rows(x2d, weight, codes.v_th, codes.row_max, scales2d, bias, bounds, out, residual)
    return codes.v_th, codes.row_max


def _launch_wide_rows(x2d, weight, v_th, row_max, scales2d, bias, bounds, out, residual=None) -> None:
    """Overwrite the rows of ``out`` whose ``row_max`` exceeds 127 (or is non-finite) with their exact
    value, all on the device: a one-program kernel lists them (past 16 rows), a persistent kernel
    recomputes them."""
    rows, width = x2d.shape
    cols, groups = scales2d.shape
    group = width // groups
    compiled = x2d.is_cuda
    bk = next(b for b in (128, 64, 32) if group % b == 0)
    programs = sm_count(x2d.device, interpreter=3)  # persistent: one program per SM
    if compiled:
        bm, bn, warps, stages = 16, 64, 4, 3  # int64 group sums: 32 x 64 spilled (255 registers)
    else:
        bm, bn, warps, stages = 16, 16, 1, 1
    direct = rows <= bm
    if direct:
        index = count = row_max  # unused pointers
    else:
        index = torch.empty(rows, dtype=torch.int32, device=x2d.device)
        count = torch.empty(1, dtype=torch.int32, device=x2d.device)
        _wide_rows_kernel[(1,)](row_max, index, count, rows, BLOCK=WIDE_ROWS_BLOCK, num_warps=8)
    programs = min(programs, triton.cdiv(rows, bm) * triton.cdiv(cols, bn))
    low, high = _clamp_args(bounds)
    rptr, rcol, rval = _residual_args(residual, scales2d)
    _w8a_wide_rows_kernel[(programs,)](
        x2d, weight, v_th, row_max, index, count, scales2d, bias if bias is not None else scales2d, out,
        rptr, rcol, rval, rows, cols, x2d.stride(0), weight.stride(0), scales2d.stride(0), out.stride(0), groups, low, high,
        GROUP_TILES=group // bk, BM=bm, BN=bn, BK=bk,
        HAS_BIAS=bias is not None, PER_CHANNEL=groups == 1, CLAMP=bounds is not None, USE_RINT=compiled,
        DIRECT=direct, HAS_RESIDUAL=residual is not None, num_warps=warps, num_stages=stages,
    )
