"""Launch heuristics of the W8ASpike kernels: tile shapes, split-K, and which path a call takes.

Measured on an H100 (``benchmarks/bench_w8aspike.py``); under Triton's interpreter small tiles keep the
CPU tests fast.
"""

from __future__ import annotations

import math

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

SHARED_BYTES = 220 * 1024  # pipeline buffers per block, under Hopper's 227 KB (leaves room for Triton's own)
FUSED_MAX_ROWS = 1  # rows up to this many take the one-launch decode kernel ...
UNSPLIT_MAX_K = 8192  # ... unless K is one weight group (per-channel scales) longer than this: every program
# then quantizes the whole row, which at K = 18944 cost more than a second launch (H100, CUDA graphs)
SPLIT_PROGRAMS_PER_SM = 1.5  # split K until the one-token kernel has about this many programs per SM ...
MAX_SPLITS = 8  # ... in at most this many slices (each program also reads the whole row for v_th)
INTERPRETER_SMS = 4  # stands in for the SM count under Triton's CPU interpreter (tests exercise split-K)
MAX_COLUMN_BLOCKS = 2**16  # arrival counters kept per device and stream (wider layers are not split)



def _takes_one_launch(rows: int, width: int, groups: int) -> bool:
    """Whether a call of ``rows`` rows takes the one-launch decode kernel (else quantize + GEMM)."""
    return rows <= FUSED_MAX_ROWS and (groups > 1 or width <= UNSPLIT_MAX_K)


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
