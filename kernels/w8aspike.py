"""W8ASpike linear: int8 spike counts x int8 weights on tensor cores, int32 accumulation.

Reference semantics (computed in float, :func:`w8aspike_linear_reference`):

    counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)           # one threshold per token row
    y = (counts * v_th) @ (weight_int8 * scales).T + bias             # scales per group of K

``scales`` is float32 ``[N, K // group, 1]``: group 128 as the release, or one group of ``K``
(``[N, 1, 1]``) for per-output-channel scales. The Triton path computes, per row ``m`` and column ``n``,

    y[m, n] = v_th[m] * sum_g scales[n, g] * P[m, n, g] + bias[n],    P[m, n, g] = sum_{k in g} c[m, k] W[n, k]

where every ``P`` is an exact integer sum of int8 x int8 products (tensor cores, int32 accumulation);
only the scaling is rounded (float32, then cast to ``x.dtype``).

Counts past int8. Counts are unbounded (bursts far past 127). Each count is split into int8 digits,
``c = d0 + 256 d1 + 65536 d2 + ...`` with ``d_i`` in ``[-128, 127]``. The hot GEMM multiplies ``d0``
only (one byte per count) while every row's ``max |count|`` is recorded; rows whose counts exceed 127
are then recomputed exactly on the device (same ``v_th``, same rounding, digits split in registers,
``P = sum_i 256^i P_i`` summed in int64 and rounded once) and overwritten. Nothing is read back to the
host: the call is asynchronous and can be captured in a CUDA graph.

- One token (decode, ``M = 1``): one launch. K is split into slices of whole weight groups (split-K:
  enough programs for every SM even on 512-wide layers); each program computes the row's ``v_th``
  itself, quantizes its K tiles on the fly (a ``[BK]`` vector: a few IEEE divisions per thread and
  tile) into row 0 of the int8 tile for ``tl.dot``, and redoes its slice with all digits only when the
  slice exceeds 127 (a uniform branch after the loop): the hot loop stays int8. The last program of a
  column block to arrive adds the slices' float32 partial sums in slice order (deterministic). On an
  H100 (CUDA graphs) split-K took q/o from 0.96x to 1.20x bf16, k/v from 0.72x to 1.17x and the down
  projection (before: quantize + GEMM, 1.01x) to 1.44x. Splitting every count into digits *inside* the
  loop, tried before, streamed the weights 1.3-2x slower than int8 counts; quantizing a ``[16, BK]``
  tile per program for up to 16 rows was 2-3.3x slower than the two-pass path, its divisions and
  per-tile reductions sitting on the loop's critical path.
- Several rows (or one token with per-channel scales and ``K > UNSPLIT_MAX_K``): the quantization kernel (:mod:`sb_kernels.spike_quant`)
  writes ``d0`` and the row maxima, the GEMM runs on ``d0``, a one-program kernel lists the rows past
  127 on the device (past 16 rows; up to 16 the next kernel reads the maxima itself), and a persistent
  kernel (one program per SM) recomputes exactly those rows; with none, it returns at once.

Errors without a host read. A row of ``x`` holding NaN or Inf gives a NaN output row, as in a float
matmul, and so does a row whose counts leave int32 (possible only with ``v_th`` clamped at 1e4 and
``|x| >= 2**31 * 1e4``); the other rows are unaffected. ``check=True`` reads the row maxima back once
(one device-to-host synchronization) and raises ``ValueError`` / ``OverflowError`` instead.
"""

from __future__ import annotations

import math

import torch

from sb_neurons import spike_count
from sb_neurons.validation import check_float_tensor, check_positive, check_same_device, check_tensor
from sb_neurons.spike import ClampSpec, resolve_clamp

from .device import DeviceFunction, round_half_even
from .dispatch import Backend, lazy_jit, resolve_backend, sm_count
from .spike_quant import TRITON_INPUT_DTYPES, check_rows_finite, quantize_rows

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

INT8_MAX = 127
INT32_MAX = 2**31 - 1
SHARED_BYTES = 220 * 1024  # pipeline buffers per block, under Hopper's 227 KB (leaves room for Triton's own)
DIGIT_BASE = 256
FUSED_MAX_ROWS = 1  # rows up to this many take the one-launch decode kernel ...
UNSPLIT_MAX_K = 8192  # ... unless K is one weight group (per-channel scales) longer than this: every program
# then quantizes the whole row, which at K = 18944 cost more than a second launch (H100, CUDA graphs)
WIDE_ROWS_BLOCK = 4096  # rows scanned per step by the one-program kernel that lists rows past 127
MAX_K = 2**17 - 1  # d0 x int8 products summed over K stay in int32: 128 * 128 * K < 2**31


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

    @DeviceFunction
    def _close_group(acc, group_int, kt, scale_ptr, offs_n, stride_sn, mask_n, GROUP_TILES: tl.constexpr):
        """After the last K tile of a weight group: ``acc += group_int * scales[n, group]`` and the group's
        integer sum restarted at 0 (its dtype kept); other tiles return both unchanged."""
        if (kt % GROUP_TILES) == GROUP_TILES - 1:
            scale = tl.load(scale_ptr + offs_n * stride_sn + kt // GROUP_TILES, mask=mask_n, other=0.0)
            acc += group_int.to(tl.float32) * scale[None, :]
            group_int = tl.zeros_like(group_int)
        return acc, group_int

    @DeviceFunction
    def _channel_scaled(group_int, scale_ptr, offs_n, stride_sn, mask_n):
        """``group_int * scales[n]`` as float32: the whole K is one group (per-output-channel scales)."""
        scale = tl.load(scale_ptr + offs_n * stride_sn, mask=mask_n, other=0.0)
        return group_int.to(tl.float32) * scale[None, :]

    @DeviceFunction
    def _exact_rows_acc(
        x_rows, row_ok, v_th, w_cols, mask_n, scale_ptr, offs_n, stride_sn, n_groups, clamp_low, clamp_high,
        many_digits, GROUP_TILES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        PER_CHANNEL: tl.constexpr, CLAMP: tl.constexpr, USE_RINT: tl.constexpr, ONE_ROW: tl.constexpr,
    ):
        """``sum_g scales[n, g] * P[m, n, g]`` (float32 ``[BM, BN]``) with every count of the rows
        recomputed as ``round(x / v_th)`` and split into int8 digits in registers; each group's ``P`` is
        summed exactly in int64, then rounded once. ``x_rows``: row pointers ``[BM, 1]`` with ``v_th``
        ``[BM]``, or with ``ONE_ROW`` the one row's pointer and scalar ``v_th`` (quantized as a ``[BK]``
        vector, placed in row 0). ``many_digits``: some count exceeds 32639 (two digits do not hold it)."""
        offs_k = tl.arange(0, BK)
        first = tl.arange(0, BM)[:, None] == 0
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        group_int = tl.zeros([BM, BN], dtype=tl.int64)
        n_tiles = n_groups * GROUP_TILES
        if ONE_ROW:
            x_next = tl.load(x_rows + offs_k).to(tl.float32)
        else:
            x_next = tl.load(x_rows + offs_k[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        for kt in range(n_tiles):
            k0 = kt * BK
            x = x_next  # loaded one tile ahead: its latency hides under this tile's work
            if ONE_ROW:
                x_next = tl.load(x_rows + k0 + BK + offs_k, mask=kt + 1 + 0 * offs_k < n_tiles, other=0.0).to(tl.float32)
                q = round_half_even(tl.math.div_rn(x, v_th), USE_RINT)
            else:
                ahead = row_ok[:, None] & (kt + 1 + 0 * offs_k[None, :] < n_tiles)
                x_next = tl.load(x_rows + k0 + BK + offs_k[None, :], mask=ahead, other=0.0).to(tl.float32)
                q = round_half_even(tl.math.div_rn(x, v_th[:, None]), USE_RINT)
            if CLAMP:
                q = tl.minimum(tl.maximum(q, clamp_low), clamp_high)
            # NaN and counts past int32 (those rows' outputs become NaN) are pinned into int32 range.
            q = tl.where(q == q, q, 0.0)
            c = tl.minimum(tl.maximum(q, -2147483648.0), 2147483520.0).to(tl.int32)
            if ONE_ROW:
                c = tl.where(first, c[None, :], tl.zeros([BM, BK], dtype=tl.int32))
            w = tl.load(w_cols + k0, mask=mask_n[None, :], other=0)
            # c = d0 + 256 d1 + ...: d = the sign-extended low byte, then c <- (c - d) / 256 without overflow.
            d = (c << 24) >> 24
            c = (c >> 8) + (d < 0).to(tl.int32)
            group_int += tl.dot(d.to(tl.int8), w, out_dtype=tl.int32).to(tl.int64)
            d = (c << 24) >> 24
            c = (c >> 8) + (d < 0).to(tl.int32)
            group_int += tl.dot(d.to(tl.int8), w, out_dtype=tl.int32).to(tl.int64) << 8
            if many_digits:  # counts past 32639: rare
                for i in tl.static_range(2, 5):  # five digits hold any int32 (the fifth only near 2**31)
                    d = (c << 24) >> 24
                    c = (c >> 8) + (d < 0).to(tl.int32)
                    group_int += tl.dot(d.to(tl.int8), w, out_dtype=tl.int32).to(tl.int64) << (8 * i)
            if not PER_CHANNEL:
                acc, group_int = _close_group(acc, group_int, kt, scale_ptr, offs_n, stride_sn, mask_n, GROUP_TILES)
        if PER_CHANNEL:
            acc = _channel_scaled(group_int, scale_ptr, offs_n, stride_sn, mask_n)
        return acc

    @DeviceFunction
    def _finish_rows(acc, v_th, row_max, bias_ptr, offs_n, mask_n, HAS_BIAS: tl.constexpr):
        """``acc * v_th + bias`` (float32 ``[BM, BN]``); NaN on rows flagged non-finite or past int32."""
        y = acc * v_th[:, None]
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        bad = row_max > 2147483647.0
        return tl.where(bad[:, None], float("nan"), y)

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
                acc, group_int = _close_group(acc, group_int, kt, scale_ptr, offs_n, stride_sn, mask_n, GROUP_TILES)
        if PER_CHANNEL and not OUT_INT32:
            acc = _channel_scaled(group_int, scale_ptr, offs_n, stride_sn, mask_n)

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
    def _w8a_decode_kernel(
        x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, vth_ptr, rowmax_ptr, part_ptr, slicemax_ptr, arrived_ptr,
        N, K, width, stride_wn, stride_sn, n_groups, groups_per_split, k, clamp_low, clamp_high,
        GROUP_TILES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, VBLOCK: tl.constexpr,
        SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, PER_CHANNEL: tl.constexpr, CLAMP: tl.constexpr,
        USE_RINT: tl.constexpr,
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
        x_ptr, w_ptr, vth_ptr, rowmax_ptr, idx_ptr, count_ptr, scale_ptr, bias_ptr, out_ptr,
        M, N, stride_xm, stride_wn, stride_sn, stride_om, n_groups, clamp_low, clamp_high,
        GROUP_TILES: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        HAS_BIAS: tl.constexpr, PER_CHANNEL: tl.constexpr, CLAMP: tl.constexpr, USE_RINT: tl.constexpr,
        DIRECT: tl.constexpr,
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
            y = _finish_rows(acc, v_th, row_max, bias_ptr, offs_n, mask_n, HAS_BIAS)
            out_ptrs = out_ptr + rows[:, None] * stride_om + offs_n[None, :]
            tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=listed[:, None] & mask_n[None, :])


def _tile_config(m: int, n: int, group: int, compiled: bool, per_channel: bool = False) -> dict[str, int]:
    """Block shapes by the number of rows: weight-streaming tiles for decode, larger tiles for prefill.

    Large M: 256 x 128 tiles only with per-channel scales. Per-group scaling keeps a float32 and an int32
    accumulator per output, and each group's rescale waits for its MMAs; 128 x 64 tiles of 4 warps let
    two blocks share an SM, so one block's rescale runs under the other's MMAs (H100 sweep, M = 4096 and
    32768, the 7B's q/o, gate/up and down: 1.2-1.3x faster than 128 x 128 with 8 warps; larger tiles spill).
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
    if per_channel:
        return dict(BM=128, BN=128, BK=bk, GROUP_M=8, num_warps=8, num_stages=4)
    return dict(BM=128, BN=64, BK=bk, GROUP_M=8, num_warps=4, num_stages=4)


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


def _check_weight(weight_int8: object, in_features: int | None, input_name: str = "x") -> tuple[int, int]:
    weight = check_tensor(weight_int8, "weight_int8")
    if weight.dtype != torch.int8 or weight.ndim != 2:
        raise TypeError(f"weight_int8 must be an int8 tensor [N, K], got {weight.dtype} of shape {tuple(weight.shape)}")
    if in_features is not None and weight.shape[1] != in_features:
        raise ValueError(f"{input_name}'s last dimension is {in_features}, but weight_int8 is [N, K] = {tuple(weight.shape)}: "
                         f"{input_name} must be [..., {weight.shape[1]}]")
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


def _check_bias(bias: object, cols: int, check_finite: bool = True) -> torch.Tensor | None:
    if bias is None:
        return None
    b = check_float_tensor(bias, "bias", finite=check_finite)
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
    cols, _ = _check_weight(weight_int8, counts.shape[1], "counts")
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


def _scaled_matmul(counts, v_th, weight_int8, scales, bias):
    """``(counts * v_th) @ (weight_int8 * scales).T + bias`` in ``v_th``'s dtype.

    The left factor is made contiguous first: the matmul's summation order follows its strides, so any
    layout of ``x`` gives, to the bit, its contiguous copy's result."""
    compute = v_th.dtype
    weight = dequantize_weight(weight_int8, scales, torch.float32).to(compute)
    y = (counts * v_th).contiguous() @ weight.T
    if bias is not None:
        y = y + bias.to(compute)
    return y.detach()


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
    cast to ``x.dtype``; ``counts, v_th = sb_neurons.spike_count(x, k, -1, clamp)`` (``x`` finite).

    Arguments as :func:`w8aspike_linear`, checked the same way (all on one device; ``scales`` and ``bias``
    finite). Any layout of ``x`` gives its contiguous copy's result, to the bit."""
    check_same_device([("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)])  # before values are read
    check_float_tensor(x, "x")
    k = check_positive(k, "k")
    resolve_clamp(clamp)
    if x.ndim == 0:
        raise ValueError("x must have shape [..., K]")
    cols, _, _ = _check_weight_and_scales(weight_int8, scales, x.shape[-1])
    bias = _check_bias(bias, cols)
    counts, v_th = spike_count(x, k, -1, clamp)
    return _scaled_matmul(counts, v_th, weight_int8, scales, bias).to(x.dtype)


def w8aspike_linear(
    x: torch.Tensor,
    weight_int8: torch.Tensor,
    scales: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    k: float = 3.0,
    clamp: ClampSpec = None,
    backend: Backend = "auto",
    check: bool = False,
) -> torch.Tensor:
    """Spike-coded linear layer with int8 weights (W8ASpike), forward only.

    ``y = (counts * v_th) @ (weight_int8 * scales).T + bias`` with ``counts, v_th = spike_count(x, k)``,
    one threshold per row. On the Triton backend every integer product is exact, for counts of any size
    (bursts far past 127 included), and only the float32 scaling rounds. The Triton call never
    synchronizes with the host (unless ``check=True``): it can be captured in a CUDA graph.

    Args:
        x: activations ``[..., K]``, float16/bfloat16/float32 (float64 on the torch backend).
        weight_int8: int8 ``[N, K]``.
        scales: float32 ``[N, K // group, 1]`` (``[N, 1, 1]`` for per-output-channel scales).
        bias: ``[N]`` or None.
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        clamp: ``None`` (counts unbounded and handled exactly), a signed bit width or a ``(low, high)`` range.
        backend: ``"torch"``, ``"triton"`` or ``"auto"``. The Triton path needs ``K`` divisible by 32
            (at most 131071) and the group size divisible by 32.
        check: ``False`` (default): a row of ``x`` holding NaN or Inf gives a NaN output row, as in a
            float matmul, and so does a row whose counts leave int32 (only with ``v_th`` clamped at
            1e4, ``|x| >= 2**31 * 1e4``); other rows are unaffected, and nothing is read back.
            ``True``: raise ``ValueError`` (NaN/Inf) or ``OverflowError`` (counts past int32) instead,
            at the price of one device-to-host read per call.

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
    chosen = resolve_backend(backend, x, weight_int8, scales, op="w8aspike_linear")
    check_same_device([("x", x), ("weight_int8", weight_int8), ("scales", scales), ("bias", bias)])
    cols, width, groups = _check_weight_and_scales(weight_int8, scales, x.shape[-1], check_finite=chosen == "torch")
    bias = _check_bias(bias, cols, check_finite=chosen == "torch")
    if chosen == "torch":
        return _torch_linear(x, weight_int8, scales, bias, k, clamp, check)
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
        _, row_max = _linear_fused(x2d, weight, scales2d, bias, k, bounds, out)
    else:
        _, row_max = _linear_two_pass(x2d, weight, scales2d, bias, k, bounds, out)
    if check:
        _raise_if_flagged(float(row_max.max()))
    return out.reshape(*x.shape[:-1], cols)


def _torch_linear(x, weight_int8, scales, bias, k, clamp, check) -> torch.Tensor:
    """The reference with the kernel's conventions for bad rows: NaN rows, or errors with ``check``."""
    rows_finite = torch.isfinite(x).all(dim=-1, keepdim=True)
    if check:
        check_rows_finite(0.0 if bool(rows_finite.all()) else math.inf)
    counts, v_th = spike_count(torch.where(rows_finite, x, 0.0), k, -1, clamp)
    largest = counts.abs().amax(dim=-1, keepdim=True)
    if check and largest.numel():
        _raise_if_flagged(float(largest.max()))
    y = _scaled_matmul(counts, v_th, weight_int8, scales, bias).to(x.dtype)
    return torch.where(rows_finite & (largest <= INT32_MAX), y, float("nan"))


def _raise_if_flagged(largest: float) -> None:
    """Errors flagged in the largest row maximum: a non-finite row (``inf``), counts beyond int32."""
    check_rows_finite(largest)
    if largest > INT32_MAX:
        raise OverflowError(f"a spike count reaches {largest:.3g}, beyond int32; pass clamp= to bound counts")


def _clamp_args(bounds) -> tuple[float, float]:
    return (0.0, 0.0) if bounds is None else (float(bounds[0]), float(bounds[1]))


SPLIT_PROGRAMS_PER_SM = 1.5  # split K until the one-token kernel has about this many programs per SM ...
MAX_SPLITS = 8  # ... in at most this many slices (each program also reads the whole row for v_th)
INTERPRETER_SMS = 4  # stands in for the SM count under Triton's CPU interpreter (tests exercise split-K)
MAX_COLUMN_BLOCKS = 2**16  # arrival counters kept per device and stream (wider layers are not split)
_ARRIVAL_COUNTERS: dict[tuple, list] = {}  # (device, stream) -> [counters, zeroed only by a captured graph so far]


def _decode_config(n: int, group: int, n_groups: int, sms: int, compiled: bool) -> dict[str, int]:
    """Tiles of the one-token decode kernel and its split of K into ``SPLITS`` slices of whole weight
    groups, so that every SM streams weights even for 512-wide layers."""
    bk = next(b for b in (128, 64, 32) if group % b == 0)
    if not compiled:
        cfg = dict(BN=16, BK=bk, num_warps=1, num_stages=1)
    elif n_groups == 1:
        # Per-output-channel scales: one group, no split. H100: 16 (32 for N >= 8192) columns, 4 warps,
        # 6 stages, 1.24x bf16 for q/o and 1.61x for gate/up (its K above UNSPLIT_MAX_K: two passes).
        return dict(BN=32 if n >= 8192 else 16, BK=bk, num_warps=4, num_stages=6, SPLITS=1)
    elif 2048 <= n < 8192:
        # H100 sweep (benchmarks/bench_w8aspike.py, CUDA graphs, 2026-11-23): q/o 1.20x bf16 and down
        # (K = 18944) 1.44x with 128 x 128 tiles, 8 warps, 7 slices; gate/up 1.60x and k/v 1.17x with
        # 64 columns, 4 warps (gate/up unsplit, k/v in 7 slices).
        cfg = dict(BN=128, BK=bk, num_warps=8, num_stages=3)
    else:
        cfg = dict(BN=64, BK=bk, num_warps=4, num_stages=4)
    blocks = triton.cdiv(n, cfg["BN"])
    wanted = min(n_groups, MAX_SPLITS, max(1, math.ceil(SPLIT_PROGRAMS_PER_SM * sms / blocks)))
    cfg["SPLITS"] = 1 if blocks > MAX_COLUMN_BLOCKS else triton.cdiv(n_groups, triton.cdiv(n_groups, wanted))
    return cfg


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


def _takes_one_launch(rows: int, width: int, groups: int) -> bool:
    """Whether a call of ``rows`` rows takes the one-launch decode kernel (else quantize + GEMM)."""
    return rows <= FUSED_MAX_ROWS and (groups > 1 or width <= UNSPLIT_MAX_K)


def _linear_fused(x2d, weight, scales2d, bias, k, bounds, out, config=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, one token: quantize + GEMM + exact redo of a slice past 127 in one launch; returns
    ``(v_th, row_max)`` (float32 ``[1]``)."""
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
    _w8a_decode_kernel[(blocks, splits)](
        x2d, weight, scales2d, bias if bias is not None else scales2d, out, v_th, row_max, partial, slice_max, arrived,
        cols, width, float(width), weight.stride(0), scales2d.stride(0), groups, per_split, float(k), low, high,
        GROUP_TILES=group // cfg["BK"], BM=16, BN=cfg["BN"], BK=cfg["BK"], VBLOCK=min(4096, triton.next_power_of_2(width)),
        SPLITS=splits, HAS_BIAS=bias is not None, PER_CHANNEL=groups == 1, CLAMP=bounds is not None,
        USE_RINT=x2d.is_cuda, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return v_th, row_max


def _linear_two_pass(x2d, weight, scales2d, bias, k, bounds, out, config=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill: quantization kernel (int8 ``d0``), GEMM on ``d0``, then the rows past 127 recomputed
    exactly by :func:`_launch_wide_rows`; returns ``(v_th, row_max)``."""
    codes = quantize_rows(x2d, k, bounds, torch.int8)
    _launch_gemm(codes.counts.unsqueeze(0), weight, codes.v_th, scales2d, bias, out, config)
    _launch_wide_rows(x2d, weight, codes.v_th, codes.row_max, scales2d, bias, bounds, out)
    return codes.v_th, codes.row_max


def _launch_wide_rows(x2d, weight, v_th, row_max, scales2d, bias, bounds, out) -> None:
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
    _w8a_wide_rows_kernel[(programs,)](
        x2d, weight, v_th, row_max, index, count, scales2d, bias if bias is not None else scales2d, out,
        rows, cols, x2d.stride(0), weight.stride(0), scales2d.stride(0), out.stride(0), groups, low, high,
        GROUP_TILES=group // bk, BM=bm, BN=bn, BK=bk,
        HAS_BIAS=bias is not None, PER_CHANNEL=groups == 1, CLAMP=bounds is not None, USE_RINT=compiled,
        DIRECT=direct, num_warps=warps, num_stages=stages,
    )


__all__ = [
    "dequantize_weight",
    "int8_matmul_int32",
    "split_int8_digits",
    "w8aspike_linear",
    "w8aspike_linear_reference",
]
