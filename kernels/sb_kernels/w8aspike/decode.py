"""W8ASpike on one token (decode): quantization, GEMM and the exact redo of a slice past 127 in one
launch, with K split into slices of whole weight groups (split-K) and the slices' partial sums added by
the last program of each column block to arrive (arrival counters kept per device and stream)."""

from __future__ import annotations

import torch

from ..device import round_half_even
from ..dispatch import lazy_jit, sm_count
from .accumulate import _channel_scaled, _close_group, _exact_rows_acc, _finish_rows, _residual_acc
from .gemm import _clamp_args, _residual_args
from .tiles import INTERPRETER_SMS, MAX_COLUMN_BLOCKS, _decode_config

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

_ARRIVAL_COUNTERS: dict[tuple, list] = {}  # (device, stream) -> [counters, zeroed only by a captured graph so far]


if tl is not None:

    @lazy_jit
    def _w8a_decode_kernel(
        x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, vth_ptr, rowmax_ptr, part_ptr, slicemax_ptr, arrived_ptr,
        rptr_ptr, rcol_ptr, rval_ptr,
        N, K, width, stride_wn, stride_sn, n_groups, groups_per_split, k, clamp_low, clamp_high,
        GROUP_TILES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, VBLOCK: tl.constexpr,
        SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, PER_CHANNEL: tl.constexpr, CLAMP: tl.constexpr,
        USE_RINT: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ):
        # One token (M = 1). Program (n, s) takes column block n and the s-th slice of K's weight groups
        # (split-K: enough programs to keep every SM streaming, even for 512-wide layers). The row is
        # quantized as a [BK] vector (a handful of divisions per thread and tile) and placed in row 0 of
        # the [16, BK] tile that the tensor cores need (BM = 16); the weights stream through Triton's
        # pipelined loads as in the GEMM.
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        offs_m = tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        offs_k = tl.arange(0, BK)
        mask_n = offs_n < N
        first = offs_m[:, None] == 0
        first_group = pid_s * groups_per_split
        slice_groups = tl.minimum(n_groups - first_group, groups_per_split)
        k_start = first_group * GROUP_TILES * BK
        slice_k = slice_groups * GROUP_TILES * BK
        x_slice = x_ptr + k_start
        scale_slice = scale_ptr + first_group
        w_cols = w_ptr + k_start + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None]

        # v_th = clamp(mean|x| / k, 1e-5, 1e4), the quantization kernel's rule, over the whole row. Every
        # program sums the same loads in the same order, so all of them hold the same bits (the row is in
        # L2). Wide chunks (the whole row up to 4096): a loop of [BK] loads would wait on each in turn.
        offs_v = tl.arange(0, VBLOCK)
        abs_acc = tl.zeros([VBLOCK], dtype=tl.float32)
        for v0 in range(0, K, VBLOCK):
            abs_acc += tl.abs(tl.load(x_ptr + v0 + offs_v, mask=v0 + offs_v < K, other=0.0).to(tl.float32))
        abs_sum = tl.sum(abs_acc, axis=0)
        finite = abs_sum * 0.0 == 0.0  # a NaN or Inf anywhere in the row
        v_th = tl.minimum(tl.maximum(tl.math.div_rn(tl.math.div_rn(abs_sum, width), k), 1e-5), 1e4)

        acc = tl.zeros([BM, BN], dtype=tl.float32)
        group_int = tl.zeros([BM, BN], dtype=tl.int32)
        top = tl.zeros([BK], dtype=tl.float32)  # running max |count| per lane, reduced once after the loop
        x_next = tl.load(x_slice + offs_k).to(tl.float32)
        for kt in range(slice_groups * GROUP_TILES):
            k0 = kt * BK
            x = x_next
            # The next tile's activations are loaded one iteration ahead: their latency hides under this
            # tile's work (Triton pipelines only the loads that feed tl.dot, the weights).
            x_next = tl.load(x_slice + k0 + BK + offs_k, mask=k0 + BK + offs_k < slice_k, other=0.0).to(tl.float32)
            q = round_half_even(tl.math.div_rn(x, v_th), USE_RINT)
            if CLAMP:
                q = tl.minimum(tl.maximum(q, clamp_low), clamp_high)
            top = tl.maximum(top, tl.abs(q))
            # d0, the low int8 digit (two's-complement wrap); a slice past 127 is redone below.
            c = tl.minimum(tl.maximum(q, -2147483648.0), 2147483520.0).to(tl.int32).to(tl.int8)
            a = tl.where(first, c[None, :], tl.zeros([BM, BK], dtype=tl.int8))
            w = tl.load(w_cols + k0, mask=mask_n[None, :], other=0)
            group_int = tl.dot(a, w, group_int, out_dtype=tl.int32)
            if not PER_CHANNEL:
                acc, group_int = _close_group(acc, group_int, kt, scale_slice, offs_n, stride_sn, mask_n, GROUP_TILES)
        if PER_CHANNEL:
            acc = _channel_scaled(group_int, scale_ptr, offs_n, stride_sn, mask_n)

        slice_max = tl.max(top, axis=0)
        if slice_max > 127.0:  # uniform: the loop above stays int8; the exact redo runs only for bursts
            acc = _exact_rows_acc(
                x_slice, offs_m == 0, v_th, w_cols, mask_n, scale_slice, offs_n, stride_sn,
                slice_groups, clamp_low, clamp_high, slice_max > 32639.0, GROUP_TILES, BM, BN, BK, PER_CHANNEL,
                CLAMP, USE_RINT, True,
            )
        if HAS_RESIDUAL:
            # Weight codes past int8: the column block's residual entries, shared among its SPLITS programs
            # by their place in the row (whatever K slice they fall in); counts recomputed from x, exactly.
            acc += _residual_acc(
                x_ptr, offs_m == 0, v_th, offs_n, mask_n, rptr_ptr, rcol_ptr, rval_ptr, scale_ptr, stride_sn,
                GROUP_TILES * BK, clamp_low, clamp_high, pid_s, SPLITS, BM, BN, True, True, CLAMP, USE_RINT,
            )
        out_tile = out_ptr + offs_m[:, None] * 0 + offs_n[None, :]
        store_mask = first & mask_n[None, :]
        if SPLITS == 1:
            row_max = tl.where(finite, slice_max, float("inf"))
            y = _finish_rows(acc, tl.full([BM], 1.0, tl.float32) * v_th, tl.full([BM], 1.0, tl.float32) * row_max,
                             bias_ptr, offs_n, mask_n, HAS_BIAS)
            tl.store(out_tile, y.to(out_ptr.dtype.element_ty), mask=store_mask)
            if pid_n == 0:
                tl.store(vth_ptr, v_th)
                tl.store(rowmax_ptr, row_max)
        else:
            # Split-K: each program leaves its float32 partial sum and its slice's max |count|; the last
            # program of the column block to arrive (release/acquire on the counter) adds the partials
            # in slice order, so the result does not depend on the arrival order, then resets the
            # counter for the next call. Every column block writes the same slice maxima.
            part_tile = part_ptr + pid_s * N + offs_m[:, None] * 0 + offs_n[None, :]
            tl.store(part_tile, acc, mask=store_mask)
            tl.store(slicemax_ptr + pid_s, slice_max)
            # One thread does the atomic: the barrier orders every thread's stores before its release
            # (without it a partial could still be in flight when the last program reads it).
            tl.debug_barrier()
            arrived = tl.atomic_add(arrived_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLITS - 1:
                total = tl.load(part_ptr + offs_m[:, None] * 0 + offs_n[None, :], mask=store_mask, other=0.0,
                                cache_modifier=".cg")
                largest = tl.load(slicemax_ptr, cache_modifier=".cg")
                for s in tl.static_range(1, SPLITS):
                    part = part_ptr + s * N + offs_m[:, None] * 0 + offs_n[None, :]
                    total += tl.load(part, mask=store_mask, other=0.0, cache_modifier=".cg")
                    largest = tl.maximum(largest, tl.load(slicemax_ptr + s, cache_modifier=".cg"))
                row_max = tl.where(finite, largest, float("inf"))
                y = _finish_rows(total, tl.full([BM], 1.0, tl.float32) * v_th,
                                 tl.full([BM], 1.0, tl.float32) * row_max, bias_ptr, offs_n, mask_n, HAS_BIAS)
                tl.store(out_tile, y.to(out_ptr.dtype.element_ty), mask=store_mask)
                tl.store(arrived_ptr + pid_n, 0)
                if pid_n == 0:
                    tl.store(vth_ptr, v_th)
                    tl.store(rowmax_ptr, row_max)


def _arrival_counters(device: torch.device) -> torch.Tensor:
    """Zeroed int32 counters (one per column block) for the split-K decode kernel, one array per device
    and stream: calls on one stream run in order, so they can share it. The last program of each block
    resets its counter, so the array is zero again after every call. An array first made inside a CUDA
    graph capture is zeroed by that graph's own memset node only: it is zeroed again (on the stream, or
    as a node of the next graph) before any other use."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    entry = _ARRIVAL_COUNTERS.get((device, stream))
    if entry is None:
        # Kept for the life of the process: a captured graph holds its address.
        entry = _ARRIVAL_COUNTERS[(device, stream)] = [torch.zeros(MAX_COLUMN_BLOCKS, dtype=torch.int32, device=device), capturing]
    elif entry[1]:
        entry[0].zero_()
        entry[1] = capturing
    return entry[0]


def _linear_fused(x2d, weight, scales2d, bias, k, bounds, out, config=None, residual=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, one token: quantize + GEMM + exact redo of a slice past 127 in one launch (with the weight
    codes past int8 of ``residual``); returns ``(v_th, row_max)`` (float32 ``[1]``)."""
    rows, width = x2d.shape
    cols, groups = scales2d.shape
    group = width // groups
    if rows != 1:
        raise ValueError(f"the fused decode kernel takes one row, got {rows}")
    if config is None:
        sms = sm_count(x2d.device, INTERPRETER_SMS)
        cfg = _decode_config(cols, group, groups, sms, x2d.is_cuda)
    else:
        cfg = {"SPLITS": 1, **config}
    blocks = triton.cdiv(cols, cfg["BN"])
    splits = cfg["SPLITS"]
    per_split = triton.cdiv(groups, splits)
    if triton.cdiv(groups, per_split) != splits or (splits > 1 and blocks > MAX_COLUMN_BLOCKS):
        raise ValueError(f"SPLITS={splits} does not cut {groups} weight groups into non-empty slices")
    v_th = torch.empty(1, dtype=torch.float32, device=x2d.device)
    row_max = torch.empty(1, dtype=torch.float32, device=x2d.device)
    if splits > 1:
        partial = torch.empty(splits, cols, dtype=torch.float32, device=x2d.device)
        slice_max = torch.empty(splits, dtype=torch.float32, device=x2d.device)
        arrived = _arrival_counters(x2d.device)
    else:
        partial = slice_max = arrived = v_th  # unused pointers
    low, high = _clamp_args(bounds)
    rptr, rcol, rval = _residual_args(residual, scales2d)
    _w8a_decode_kernel[(blocks, splits)](
        x2d, weight, scales2d, bias if bias is not None else scales2d, out, v_th, row_max, partial, slice_max, arrived,
        rptr, rcol, rval, cols, width, float(width), weight.stride(0), scales2d.stride(0), groups, per_split, float(k), low, high,
        GROUP_TILES=group // cfg["BK"], BM=16, BN=cfg["BN"], BK=cfg["BK"], VBLOCK=min(4096, triton.next_power_of_2(width)),
        SPLITS=splits, HAS_BIAS=bias is not None, PER_CHANNEL=groups == 1, CLAMP=bounds is not None,
        USE_RINT=x2d.is_cuda, HAS_RESIDUAL=residual is not None, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return v_th, row_max
