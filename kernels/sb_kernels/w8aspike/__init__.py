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

Weight codes past int8. The release's weight codes ``round(w / s)`` are not clamped, and about 1% of its
codes lie outside ``[-127, 127]``. They travel as int8 base codes (clamped to ``±127``) plus a sparse
residual (:class:`~sb_kernels.w8aspike.residual.ResidualCodes`, CSR over the output rows): the tensor
cores multiply the base codes, and each residual entry adds ``scales[n, g] * (R[n, k] * c[m, k])`` (an
exact integer times its scale) to the float32 sum before ``v_th`` and the bias, in every Triton path: the
decode kernel (its SPLITS programs share a column block's entries), the GEMM's epilogue (on ``d0``) and
the exact redo of wide rows (on the recomputed counts).

Errors without a host read. A row of ``x`` holding NaN or Inf gives a NaN output row, as in a float
matmul, and so does a row whose counts leave int32 (possible only with ``v_th`` clamped at 1e4 and
``|x| >= 2**31 * 1e4``); the other rows are unaffected. ``check=True`` reads the row maxima back once
(one device-to-host synchronization) and raises ``ValueError`` / ``OverflowError`` instead.

Modules: :mod:`~sb_kernels.w8aspike.reference` (the PyTorch reference, checks, digit split),
:mod:`~sb_kernels.w8aspike.gemm` (several rows: quantize, GEMM, exact redo of wide rows),
:mod:`~sb_kernels.w8aspike.decode` (one token, one launch, split-K), :mod:`~sb_kernels.w8aspike.hopper`
(the CuTe DSL GEMM of ``backend="cutlass"``, optional), :mod:`~sb_kernels.w8aspike.tiles`
(tile and split heuristics), :mod:`~sb_kernels.w8aspike.accumulate` (device functions they share),
:mod:`~sb_kernels.w8aspike.residual` (weight codes past int8), :mod:`~sb_kernels.w8aspike.cpu` (the
integer path on CPUs: ``torch._int_mm`` per weight group, ``backend="cpu"``, what ``"auto"`` takes on CPU
tensors), and :mod:`~sb_kernels.w8aspike.linear`: the
op itself, :func:`w8aspike_linear`, which checks its arguments and picks among them. This package only
re-exports the public names; the private helpers are imported from the modules that define them.
"""

from .cpu import int_mm_available, w8aspike_linear_cpu
from .gemm import int8_matmul_int32
from .linear import w8aspike_linear
from .reference import dequantize_weight, split_int8_digits, w8aspike_linear_reference
from .residual import ResidualCodes, code_statistics, split_weight_codes, weight_codes

__all__ = [
    "ResidualCodes",
    "code_statistics",
    "dequantize_weight",
    "int8_matmul_int32",
    "int_mm_available",
    "split_int8_digits",
    "split_weight_codes",
    "w8aspike_linear",
    "w8aspike_linear_cpu",
    "w8aspike_linear_reference",
    "weight_codes",
]
