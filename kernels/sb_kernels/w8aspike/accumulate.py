"""Triton device functions shared by the W8ASpike kernels: per-group scaling of the integer sums, the
exact recomputation of rows (or slices) whose counts exceed 127, the weight codes past int8 (the sparse
residual of :mod:`~sb_kernels.w8aspike.residual`) and the row epilogue."""

from __future__ import annotations

from ..device import DeviceFunction, round_half_even

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None


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
    def _residual_acc(
        c_rows, row_ok, v_th, offs_n, mask_n, rptr_ptr, rcol_ptr, rval_ptr, scale_ptr, stride_sn, group,
        clamp_low, clamp_high, j_first, j_step, BM: tl.constexpr, BN: tl.constexpr,
        FROM_X: tl.constexpr, ONE_ROW: tl.constexpr, CLAMP: tl.constexpr, USE_RINT: tl.constexpr,
    ):
        """``sum_e scales[n, k_e / group] * (R_e * c[m, k_e])`` (float32 ``[BM, BN]``) over the residual
        entries ``e`` of the columns ``offs_n`` (CSR ``rptr``/``rcol``/``rval``) numbered ``j_first,
        j_first + j_step, ...`` within their row (``j_step`` programs share a column block's entries).

        Counts: ``FROM_X``: ``round(x / v_th)`` of the rows' activations (pointers ``c_rows`` ``[BM, 1]``
        and ``v_th [BM]``; ``ONE_ROW``: one row's pointer and a scalar ``v_th``, the result placed in row 0),
        recomputed exactly as the quantization does (any size); otherwise the int8 counts at ``c_rows``
        (rows whose counts exceed 127 are recomputed later from ``x``). Each ``R_e * c`` is an exact
        integer (below 2**24 for int8 counts), times its scale rounded once, then summed in float32."""
        start = tl.load(rptr_ptr + offs_n, mask=mask_n, other=0)
        count = tl.load(rptr_ptr + offs_n + 1, mask=mask_n, other=0) - start
        longest = tl.max(count, axis=0)
        if ONE_ROW:
            total = tl.zeros([BN], dtype=tl.float32)
        else:
            total = tl.zeros([BM, BN], dtype=tl.float32)
        for j in range(j_first, longest, j_step):
            live = (j < count) & mask_n
            col = tl.load(rcol_ptr + start + j, mask=live, other=0)
            value = tl.load(rval_ptr + start + j, mask=live, other=0).to(tl.float32)
            scale = tl.load(scale_ptr + offs_n * stride_sn + col // group, mask=live, other=0.0)
            if ONE_ROW:
                x = tl.load(c_rows + col, mask=live, other=0.0).to(tl.float32)
                q = round_half_even(tl.math.div_rn(x, v_th), USE_RINT)
            elif FROM_X:
                both = row_ok[:, None] & live[None, :]
                x = tl.load(c_rows + col[None, :], mask=both, other=0.0).to(tl.float32)
                q = round_half_even(tl.math.div_rn(x, v_th[:, None]), USE_RINT)
            else:
                both = row_ok[:, None] & live[None, :]
                q = tl.load(c_rows + col[None, :], mask=both, other=0).to(tl.float32)
            if FROM_X or ONE_ROW:
                if CLAMP:
                    q = tl.minimum(tl.maximum(q, clamp_low), clamp_high)
                q = tl.where(q == q, q, 0.0)  # a NaN row's output is NaN anyway (its row maximum says so)
            if ONE_ROW:
                total += tl.where(live, (q * value) * scale, 0.0)
            else:
                total += tl.where(both, (q * value[None, :]) * scale[None, :], 0.0)
        if ONE_ROW:
            first = tl.arange(0, BM)[:, None] == 0
            return tl.where(first, total[None, :], 0.0)
        return total

    @DeviceFunction
    def _finish_rows(acc, v_th, row_max, bias_ptr, offs_n, mask_n, HAS_BIAS: tl.constexpr):
        """``acc * v_th + bias`` (float32 ``[BM, BN]``); NaN on rows flagged non-finite or past int32."""
        y = acc * v_th[:, None]
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        bad = row_max > 2147483647.0
        return tl.where(bad[:, None], float("nan"), y)
