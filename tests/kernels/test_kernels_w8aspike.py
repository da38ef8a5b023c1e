"""sb_kernels W8ASpike: int8 digits, the exact int8 GEMM and the fused spike-quantize + GEMM linear.

Identities: ``sum_i 256^i d_i == counts`` with int8 digits; ``int8_matmul_int32 == counts @ W.T``
exactly for counts of any size; ``w8aspike_linear == v_th * sum_g s_g P_g + bias`` with exact integer
``P_g`` and ``counts == round(x / v_th)`` for the kernel's own ``v_th`` (only the float32 scaling
rounds), hence ``== w8aspike_linear_reference`` to float rounding, whether counts stay in int8 or burst
far past 127 (rows past 127 are recomputed on the device with all their digits). Both Triton paths are
covered: the one-launch decode kernel (one token) and the multi-row path (quantization
kernel, GEMM, device-side list of wide rows, persistent exact kernel). Bad rows (NaN/Inf, counts past
int32) give NaN rows without a host read, or errors with ``check=True``. The property tests of the
kernels run interpreted (CPU) and compiled (``device="cuda"``) with the same identities: integer products
exact, counts the correctly rounded quotient on both (``div_rn`` / Markstein's correction, ``cvt.rni``).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, heavy_tailed, rel_err, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import (
    ResidualCodes,
    dequantize_weight,
    int8_matmul_int32,
    split_int8_digits,
    split_weight_codes,
    w8aspike_linear,
    w8aspike_linear_reference,
    weight_codes,
)
from sb_kernels.dispatch import sm_count
from sb_kernels.w8aspike import decode, hopper
from sb_kernels.w8aspike.decode import _arrival_counters, _linear_fused
from sb_kernels.w8aspike.gemm import _linear_two_pass
from sb_kernels.w8aspike.tiles import INTERPRETER_SMS, _decode_config, _takes_one_launch
from sb_neurons import adaptive_threshold
from sb_neurons import spike_count as sb_spike_count
from sb_neurons.spike import resolve_clamp

# Triton's interpreter multiplies NaN/Inf rows on purpose (the error-path tests): numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def make_layer(n, k, group, seed=0, device="cpu", bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    groups = 1 if group is None else k // group
    scales = torch.rand(n, groups, 1, generator=g) * 0.02 + 1e-3
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    return w.to(device), scales.to(device), None if b is None else b.to(device)


def codes_past_int8(n, k, share, size, seed=0, device="cpu"):
    """Weight codes ``[n, k]``: int8 ones, and about ``share`` of them past int8 with ``|code|`` up to
    ``size`` (the release's checkpoint: about 1%, up to about 250), split into base codes and residual."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int32)
    past = torch.rand(n, k, generator=g) < share
    sign = torch.where(torch.rand(n, k, generator=g) < 0.5, -1, 1).to(torch.int32)
    codes = torch.where(past, sign * torch.randint(128, size + 1, (n, k), generator=g, dtype=torch.int32), codes)
    base, residual = split_weight_codes(codes)
    return base.to(device), None if residual is None else residual.to(device), codes


def triton_linear(x, weight, scales, bias, k=3.0, clamp=None, config=None, residual=None):
    """``w8aspike_linear`` on the Triton backend, with the ``v_th`` and row maxima its kernels used:
    the internal path it dispatches to, run again, must give the same output bit for bit."""
    out = w8aspike_linear(x, weight, scales, bias, k=k, clamp=clamp, backend="triton", residual=residual)
    n, kk = weight.shape
    x2d = x.reshape(-1, kk)
    again = torch.empty(x2d.shape[0], n, dtype=x.dtype, device=x.device)
    fused = _takes_one_launch(x2d.shape[0], kk, scales.reshape(n, -1).shape[1])
    path = _linear_fused if fused or config is not None else _linear_two_pass
    args = (x2d, weight, scales.reshape(n, -1).contiguous(), bias, k, resolve_clamp(clamp), again)
    v_th, row_max = path(*args, config=config, residual=residual)
    assert torch.equal(again.isnan(), out.reshape(-1, n).isnan())
    assert torch.equal(again.nan_to_num(), out.reshape(-1, n).nan_to_num())
    return out, v_th, row_max


def kernel_counts(x, v_th, clamp=None):
    """``round(x / v_th)`` (IEEE float32 division, half to even), clamped: the rule the kernels follow."""
    counts = torch.round(x.reshape(v_th.shape[0], -1).float() / v_th[:, None])
    bounds = resolve_clamp(clamp)
    return counts if bounds is None else counts.clamp(*bounds)


def exact_reference(x, v_th, weight, scales, bias, clamp=None, residual=None):
    """``v_th * sum_g s_g P_g + bias`` in float64 from the counts of the kernel's ``v_th`` (exact P_g of
    the full codes ``weight + R``), with the error bound of float32 scaling: a few ulps of
    ``v_th * (sum_g |s_g P_g| + sum_e |s_e R_e c_e|) + |bias|`` (the base codes' group sums and the
    residual entries, which the kernels scale and add one by one), and the number of terms summed."""
    counts2d = kernel_counts(x, v_th, clamp).double()  # float64 on x's device: exact for |P| < 2**53
    v2d = v_th.reshape(-1, 1).double()
    n, kk = weight.shape
    groups = scales.shape[1]
    c = counts2d.reshape(-1, groups, kk // groups)
    s = scales.double().reshape(1, n, groups)
    p = torch.einsum("mgk,ngk->mng", c, weight.double().reshape(n, groups, kk // groups))
    magnitude = v2d * (p * s).abs().sum(-1)
    terms = groups
    if residual is not None:
        r = residual.dense().double().to(x.device).reshape(n, groups, kk // groups)
        p_residual = torch.einsum("mgk,ngk->mng", c, r)
        p = p + p_residual
        magnitude = magnitude + v2d * torch.einsum("mgk,ngk->mn", c.abs(), r.abs() * s.reshape(n, groups, 1))
        terms += int((residual.row_ptr[1:] - residual.row_ptr[:-1]).max())
    y = v2d * (p * s).sum(-1)
    if bias is not None:
        y = y + bias.double()
        magnitude = magnitude + bias.double().abs()
    return y, magnitude, terms


def assert_matches_exact(out, x, v_th, weight, scales, bias, clamp=None, residual=None):
    y, magnitude, terms = exact_reference(x, v_th, weight, scales, bias, clamp, residual)
    out2d = out.reshape(-1, weight.shape[0]).double()
    # float32 scaling (~K/group + 3 roundings, one more per residual entry of the row) then the cast to
    # x.dtype: one unit in the last place, since Triton's interpreter casts float32 to bfloat16 by
    # truncation; compiled kernels round to nearest: half a unit (of the scaled sum, hence the factor
    # 1 + eps on its error).
    eps = {torch.float32: 2**-23, torch.bfloat16: 2**-7, torch.float16: 2**-10}[out.dtype]
    if out.is_cuda:
        eps /= 2
    tol = magnitude * (terms + 4) * 2**-24 * (1 + eps) + y.abs() * eps + 1e-30
    assert torch.all((out2d - y).abs() <= tol), float(((out2d - y).abs() / tol).max())


def assert_v_th_is_the_rule(x, v_th, k=3.0):
    """The kernels' ``v_th`` is the reference's ``clamp(mean|x| / k)`` up to float32 summation order."""
    ref = adaptive_threshold(x.reshape(v_th.shape[0], -1).double(), k).reshape(-1)
    assert torch.all((v_th.double() - ref).abs() <= ref * (x.shape[-1] + 2) * 2**-24)


def check_linear(x, weight, scales, bias, k=3.0, clamp=None, residual=None):
    """Run the Triton path and assert every identity it satisfies; returns its output."""
    out, v_th, row_max = triton_linear(x, weight, scales, bias, k, clamp, residual=residual)
    assert_v_th_is_the_rule(x, v_th, k)
    assert torch.equal(row_max, kernel_counts(x, v_th, clamp).abs().amax(dim=1))
    assert_matches_exact(out, x, v_th, weight, scales, bias, clamp, residual)
    return out


@given(counts=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=40))
def test_digits_reassemble_counts(counts):
    c = torch.tensor(counts, dtype=torch.int64)
    digits = split_int8_digits(c)
    assert digits.dtype == torch.int8
    weights = torch.tensor([256**i for i in range(digits.shape[0])], dtype=torch.int64)
    assert torch.equal((digits.to(torch.int64) * weights[:, None]).sum(0), c)
    biggest = int(c.abs().max())
    assert digits.shape[0] == (1 if -128 <= min(counts) and max(counts) <= 127 else digits.shape[0])
    assert digits.shape[0] <= 1 + (biggest.bit_length() + 7) // 8
    if digits.shape[0] > 1:
        assert digits[-1].any()  # the fewest digits: the top one is needed


def test_digits_reject_floats():
    with pytest.raises(TypeError, match="counts"):
        split_int8_digits(torch.randn(3))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=12)  # the interpreter runs every tile in Python: keep CI under a minute
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 24), n=st.integers(1, 24),
       k=st.sampled_from([32, 64, 96, 160]), burst=st.sampled_from([0, 300, 40000, 2_000_000]))
def test_int8_matmul_is_exact_for_any_counts(device, seed, m, n, k, burst):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int32)
    if burst:
        counts[0, -1] = burst
        counts[-1, 0] = -burst
    weight = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    want = counts.to(torch.int64) @ weight.to(torch.int64).T  # on the CPU: CUDA has no integer matmul
    counts, weight = counts.to(device), weight.to(device)
    got = int8_matmul_int32(counts, weight, backend="triton")
    assert got.dtype == torch.int32 and got.device == counts.device and torch.equal(got.cpu().to(torch.int64), want)
    assert torch.equal(int8_matmul_int32(counts, weight, backend="torch").cpu().to(torch.int64), want)


def test_int8_matmul_errors():
    weight = torch.zeros(4, 32, dtype=torch.int8)
    with pytest.raises(OverflowError, match="int32"):
        int8_matmul_int32(torch.full((1, 32), 2**26, dtype=torch.int32), weight, backend="triton")
    with pytest.raises(TypeError, match="counts"):
        int8_matmul_int32(torch.randn(2, 32), weight)
    with pytest.raises(TypeError, match="weight_int8"):
        int8_matmul_int32(torch.ones(2, 32, dtype=torch.int32), weight.float())
    with pytest.raises(ValueError, match="weight_int8"):
        int8_matmul_int32(torch.ones(2, 16, dtype=torch.int32), weight)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.sampled_from([1, 3, 16, 17, 33]),
    group=st.sampled_from([32, 64, None]),
    bias=st.booleans(),
    burst=st.sampled_from([0.0, 50.0, 3000.0]),
    clamp=st.sampled_from([None, None, 8, (-300, 300)]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
)
def test_linear_equals_exact_integer_form(device, seed, rows, group, bias, burst, clamp, dtype):
    # Compiled, 1 row takes the split-K decode kernel, 3 and 16 the decode-sized GEMM tiles and 17 and 33
    # the 64 x 64 ones, past 16 rows with the one-program list of the rows past 127.
    n, k = 16, 128
    weight, scales, b = make_layer(n, k, group, seed, device=device, bias=bias, dtype=dtype)
    x = heavy_tailed((rows, k), seed, 0.5, dtype, device)
    if burst:
        x[::5, 7] = burst  # some rows' counts past 127 (at most (k + 1/2) D = 448 here)
    out = check_linear(x, weight, scales, b, clamp=clamp)
    assert out.dtype == dtype and out.shape == (rows, n) and out.device == x.device
    ref = w8aspike_linear_reference(x.double(), weight, scales, None if b is None else b.double(), clamp=clamp)
    if dtype == torch.float32:  # v_th may differ in its last bit from the reference's: compare loosely
        assert rel_err(out, ref) < 1e-3


@given(codes=st.lists(st.integers(-(2**15), 2**15), min_size=1, max_size=60), width=st.integers(1, 6))
def test_split_weight_codes_reassembles_any_codes(codes, width):
    """``base + R == codes`` for codes of any size; the base is the clamp to +-127, the residual canonical
    (entries of at most 127 in the code's sign where the base is +-127), None when all codes fit."""
    rows = -(-len(codes) // width)
    q = torch.tensor(codes + [0] * (rows * width - len(codes)), dtype=torch.int32).reshape(rows, width)
    base, residual = split_weight_codes(q)
    assert base.dtype == torch.int8 and torch.equal(base.int(), q.clamp(-127, 127))
    assert torch.equal(weight_codes(base, residual), q)
    assert (residual is None) == bool((q.abs() <= 127).all())
    if residual is not None:
        residual.check_against(base)  # canonical
        assert residual.nnz == int(((q.abs() - 127).clamp(min=0) + 126).div(127, rounding_mode="floor").sum())


def test_residual_codes_reject_bad_inputs():
    base, residual, _ = codes_past_int8(4, 64, 0.1, 250, seed=1)
    assert residual is not None and residual.nnz > 2
    ptr, cols, vals = residual.row_ptr, residual.columns, residual.values
    with pytest.raises(TypeError, match="residual.columns"):
        ResidualCodes(ptr, cols.long(), vals, 64)
    with pytest.raises(TypeError, match="residual.values"):
        ResidualCodes(ptr, cols, vals.float(), 64)
    with pytest.raises(ValueError, match=r"residual.columns must lie in \[0, in_features\)"):
        ResidualCodes(ptr, torch.where(torch.arange(cols.numel()) == 0, 64, cols).int(), vals, 64)
    with pytest.raises(ValueError, match="row_ptr"):
        ResidualCodes(ptr.flip(0), cols, vals, 64)
    with pytest.raises(ValueError, match="non-zero"):
        ResidualCodes(ptr, cols, torch.zeros_like(vals), 64)
    with pytest.raises(ValueError, match="non-decreasing within each row"):
        ResidualCodes(ptr, cols.flip(0), vals.flip(0), 64)
    # a residual that would fit int8 (its entry against the base code's sign, or where the base is not +-127)
    with pytest.raises(ValueError, match="fits int8"):
        ResidualCodes(ptr, cols, -vals, 64).check_against(base)
    with pytest.raises(ValueError, match="fits int8"):
        residual.check_against(torch.zeros_like(base))
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        residual.check_against(base[:, :32])
    weight, scales, _ = make_layer(4, 64, 32)
    x = torch.randn(2, 64)
    for backend in ("torch", "triton"):
        with pytest.raises(TypeError, match="residual"):
            w8aspike_linear(x, weight, scales, backend=backend, residual=(ptr, cols, vals))
        with pytest.raises(ValueError, match="residual"):
            w8aspike_linear(x, weight[:2], scales[:2], backend=backend, residual=residual)
    with pytest.raises(ValueError, match="fits int8"):
        w8aspike_linear_reference(x, torch.zeros_like(base), scales, residual=residual)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=12)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.sampled_from([1, 3, 17, 33]),
    group=st.sampled_from([32, None]),
    share=st.floats(0.0, 0.05),
    size=st.sampled_from([128, 250, 600]),
    burst=st.sampled_from([0.0, 3000.0]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_linear_with_codes_past_int8_equals_exact_integer_form(device, seed, rows, group, share, size, burst, dtype):
    """Weight codes past int8 (the release's, unclamped: base codes plus residual) in every Triton path:
    1 row the split-K decode kernel, 3 to 33 the GEMM epilogue, rows with bursting counts the exact redo.
    Each equals ``v_th * sum_g s_g P_g`` of the full codes; the torch reference is the release's formula
    ``(counts * v_th) @ (round(w / s) * s).T`` on the same codes."""
    n, k = 40, 128
    base, residual, codes = codes_past_int8(n, k, share, size, seed, device)
    _, scales, b = make_layer(n, k, group, seed, device=device, dtype=dtype)
    x = heavy_tailed((rows, k), seed, 0.5, dtype, device)
    if burst:
        x[::5, 7] = burst
    out = check_linear(x, base, scales, b, residual=residual)
    # The release's weights: round(w / s) * s computed (and shipped) in float32.
    release = (codes.float().reshape(n, scales.shape[1], -1) * scales.cpu()).reshape(n, k).double()
    counts, v_th = sb_spike_count(x.double().cpu(), 3.0)
    ref = (counts * v_th) @ release.T + b.double().cpu()
    if dtype == torch.float32:  # v_th may differ in its last bit from the float64 one: compare loosely
        assert rel_err(out, ref) < 1e-3
    torch_path = w8aspike_linear(x.double().cpu(), base.cpu(), scales.cpu(), b.double().cpu(), backend="torch",
                                 residual=None if residual is None else residual.to("cpu"))
    assert rel_err(torch_path, ref) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), splits=st.sampled_from([1, 2, 6]), burst=st.sampled_from([0.0, 3000.0]))
def test_split_k_decode_with_codes_past_int8(device, seed, splits, burst):
    """The decode kernel's SPLITS programs share each column block's residual entries: together they add
    every entry once, whatever slice of K it falls in."""
    n, k, group = 40, 192, 32
    base, residual, _ = codes_past_int8(n, k, 0.05, 250, seed, device)
    _, scales, b = make_layer(n, k, group, seed, device=device)
    x = heavy_tailed((1, k), seed, 0.5, device=device)
    if burst:
        x[0, seed % k] = burst * x.abs().mean()
    out = torch.full((1, n), 7.0, device=device)
    cfg = dict(BN=16, BK=32, num_warps=1, num_stages=1, SPLITS=splits)
    v_th, _ = _linear_fused(x, base, scales.reshape(n, -1).contiguous(), b, 3.0, None, out, config=cfg, residual=residual)
    assert not bool(_arrival_counters(x.device).any())
    assert_matches_exact(out, x, v_th, base, scales, b, residual=residual)


@pytest.mark.parametrize("rows", [2, 20])
def test_counts_past_int16_take_three_digits(rows):
    weight, scales, b = make_layer(16, 256, 64, seed=3)
    x = torch.randn(rows, 256)
    x[1, 9] = 1e7
    check_linear(x, weight, scales, b, k=500.0)  # counts up to ~128000
    _, v_th, row_max = triton_linear(x, weight, scales, b, k=500.0)
    assert float(row_max.max()) > 65535


@pytest.mark.parametrize("rows", [1, 18])
def test_counts_near_int32_take_five_digits(rows):
    """v_th clamped at 1e4: counts near 2**31 (from 2139062144 on, a fifth int8 digit) stay exact."""
    weight, scales, b = make_layer(8, 64, 32, seed=5)
    x = torch.randn(rows, 64) * 1e9
    x[0, :32] = 2.1474835e13  # count 2147483392 = 2**31 - 256 = 0 + 256 (-1) + 2**24 (-128) + 2**32
    x[0, 32:] = -2.1474835e13
    x[-1, 5] = 1.3e12  # and a row of smaller bursts (~1.3e8: four digits)
    out = check_linear(x, weight, scales, b)
    assert bool(torch.isfinite(out).all())
    _, v_th, row_max = triton_linear(x, weight, scales, b)
    assert float(row_max[0]) == 2**31 - 256 and float(v_th[0]) == 1e4


def test_leading_dims_and_empty_input():
    weight, scales, b = make_layer(8, 64, 32)
    for shape in ((2, 3, 64), (3, 7, 64)):  # 6 rows (decode kernel) and 21 rows (prefill path)
        x = torch.randn(shape)
        out = w8aspike_linear(x, weight, scales, b, backend="triton")
        assert out.shape == (*shape[:-1], 8)
        assert torch.equal(out.reshape(-1, 8), check_linear(x.reshape(-1, 64), weight, scales, b))
    assert w8aspike_linear(torch.randn(0, 64), weight, scales, b, backend="triton").shape == (0, 8)


def division_traps(v_th: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` within 6 ulps of ``(j + 1/2) v_th``, |j| < 127, on which ``round(x * fl(1 / v_th))``
    and ``round(x / v_th)`` disagree (the multiplication's extra rounding crosses a half-integer)."""
    halves = torch.arange(-127, 127, dtype=torch.float64) + 0.5
    base = (halves * v_th.double()).float()
    cands, up, down = [base], base, base
    for _ in range(6):
        up, down = torch.nextafter(up, torch.tensor(math.inf)), torch.nextafter(down, torch.tensor(-math.inf))
        cands += [up, down]
    x = torch.cat(cands)
    return x[torch.round(x * (1 / v_th)) != torch.round(x / v_th)]


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_kernel_counts_on_division_traps(seed):
    """The one-token decode kernel's counts are ``round(x / v_th)`` with the IEEE division, also on
    inputs where a multiplication by ``1 / v_th`` would round the other way. With ``k = 1000`` the
    row's ``v_th`` is clamped to ``fl(1e-5)``, whatever the summation order."""
    weight, scales, b = make_layer(16, 64, 32, seed=seed)
    v_th = torch.tensor(1e-5, dtype=torch.float32)
    traps = division_traps(v_th)
    assert traps.numel() >= 32
    g = torch.Generator().manual_seed(seed)
    x = traps[torch.randint(0, traps.numel(), (1, 64), generator=g)]
    x[:, ::3] = (torch.randn(1, 22, generator=g) * 3e-4).float()  # ordinary values between the traps
    out, v, row_max = triton_linear(x, weight, scales, b, k=1000.0)
    assert torch.equal(v, torch.full((1,), 1e-5))
    assert float(row_max.max()) <= 127  # the int8 loop alone: no exact redo hides a wrong count
    assert_matches_exact(out, x, v, weight, scales, b)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=16, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    splits=st.sampled_from([1, 2, 3, 6]),
    bias=st.booleans(),
    burst=st.sampled_from([0.0, 40.0, 3000.0, float("nan")]),
    clamp=st.sampled_from([None, None, (-300, 300)]),
)
def test_split_k_decode_equals_exact_integer_form(device, seed, splits, bias, burst, clamp):
    """One token with K cut into ``SPLITS`` slices of whole weight groups: every program sums its slice
    (redoing it exactly if its own counts pass 127), the last one of a column block to arrive adds the
    partials in slice order. The output is the exact integer form for the kernel's ``v_th``, the row
    maximum is the whole row's, a NaN anywhere gives a NaN row, and the arrival counters are zero again."""
    n, k, group = 40, 192, 32  # 3 column blocks of 16, 6 weight groups
    weight, scales, b = make_layer(n, k, group, seed, device=device, bias=bias)
    x = heavy_tailed((1, k), seed, 0.5, device=device)
    if burst:
        x[0, seed % k] = burst * x.abs().mean()  # in one slice only
    bounds = resolve_clamp(clamp)
    out = torch.full((1, n), 7.0, device=device)
    cfg = dict(BN=16, BK=32, num_warps=1, num_stages=1, SPLITS=splits)
    v_th, row_max = _linear_fused(x, weight, scales.reshape(n, -1).contiguous(), b, 3.0, bounds, out, config=cfg)
    assert not bool(_arrival_counters(x.device).any())
    if burst != burst:
        assert bool(out.isnan().all()) and float(row_max) == math.inf
        return
    assert_v_th_is_the_rule(x, v_th)
    assert torch.equal(row_max, kernel_counts(x, v_th, clamp).abs().amax(dim=1))
    assert_matches_exact(out, x, v_th, weight, scales, b, clamp)


def test_split_k_configuration():
    """The default one-token launch splits K when there are few column blocks per SM (so the CPU tests
    run the split path), never for per-output-channel scales (one group), and a split that would leave
    a slice empty is refused."""
    assert _decode_config(40, 32, 6, INTERPRETER_SMS, False)["SPLITS"] > 1
    assert _decode_config(512, 128, 28, 132, True)["SPLITS"] > 1  # k/v of the 7B model on an H100
    assert _decode_config(64, 64, 1, 132, True)["SPLITS"] == 1
    # one token of the 7B down projection (K = 18944): one launch when split, two passes per-channel
    assert _takes_one_launch(1, 18944, 148) and not _takes_one_launch(1, 18944, 1)
    assert _takes_one_launch(1, 3584, 1) and not _takes_one_launch(2, 3584, 28)
    for n_groups, sms in ((6, 4), (28, 132), (148, 132), (5, 1000)):
        cfg = _decode_config(48, 32, n_groups, sms, False)
        per_split = -(-n_groups // cfg["SPLITS"])
        assert -(-n_groups // per_split) == cfg["SPLITS"] <= n_groups  # every slice non-empty
    weight, scales, b = make_layer(16, 128, 32)
    with pytest.raises(ValueError, match="SPLITS=3"):
        _linear_fused(torch.randn(1, 128), weight, scales.reshape(16, -1), b, 3.0, None, torch.empty(1, 16),
                         config=dict(BN=16, BK=32, num_warps=1, num_stages=1, SPLITS=3))


@pytest.mark.parametrize("rows", [3, 30])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_rows_give_nan_rows_or_errors_with_check(rows, bad):
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(rows, 64)
    x[1, 9] = 500.0  # a burst next to the bad row: still exact
    x[rows - 1, 5] = bad
    for backend in ("triton", "torch"):
        out = w8aspike_linear(x, weight, scales, b, backend=backend)
        assert bool(out[-1].isnan().all()) and bool(torch.isfinite(out[:-1]).all())
        assert torch.allclose(out[:-1], w8aspike_linear(x[:-1], weight, scales, b, backend=backend), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="NaN or Inf"):
            w8aspike_linear(x, weight, scales, b, backend=backend, check=True)
    clean = check_linear(x[:-1], weight, scales, b)  # rows are independent: the bad row changes no other
    assert torch.equal(w8aspike_linear(x, weight, scales, b, backend="triton")[:-1], clean)


@pytest.mark.parametrize("rows", [1, 2, 20])
def test_triton_path_reads_nothing_back(rows, monkeypatch):
    """No host read on the Triton path (what CUDA graphs need): every way a tensor's value reaches
    Python raises during the call, unless ``check=True`` asks for the one read of the row maxima."""
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(rows, 64)
    x[0, 3] = 900.0  # a row past 127: its exact redo must be decided on the device too
    expected = check_linear(x, weight, scales, b)

    def host_read(*args, **kwargs):
        raise AssertionError("host read of a tensor value")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            patch.setattr(torch.Tensor, name, host_read)
        out = w8aspike_linear(x, weight, scales, b, backend="triton")
        with pytest.raises(AssertionError, match="host read"):
            w8aspike_linear(x, weight, scales, b, backend="triton", check=True)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("rows", [2, 20])
def test_counts_beyond_int32_give_nan_rows_or_overflow_with_check(rows):
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(rows, 64)
    x[0] = 1e15  # v_th clamps at 1e4: counts 1e11
    for backend in ("triton", "torch"):
        out = w8aspike_linear(x, weight, scales, b, backend=backend)
        assert bool(out[0].isnan().all()) and bool(torch.isfinite(out[1:]).all())
        with pytest.raises(OverflowError, match="clamp="):
            w8aspike_linear(x, weight, scales, b, backend=backend, check=True)
    clamped = check_linear(x, weight, scales, b, clamp=16)
    assert torch.equal(clamped, w8aspike_linear(x, weight, scales, b, clamp=16, backend="triton", check=True))


def test_dequantize_weight_is_grouped_product():
    weight, scales, _ = make_layer(6, 64, 32)
    dense = dequantize_weight(weight, scales)
    assert torch.equal(dense[:, :32], weight[:, :32].float() * scales[:, 0])
    assert torch.equal(dense[:, 32:], weight[:, 32:].float() * scales[:, 1])
    assert dequantize_weight(weight, scales, torch.bfloat16).dtype == torch.bfloat16


def _bad_call(**override):
    weight, scales, b = make_layer(8, 64, 32)
    kwargs = dict(x=torch.randn(3, 64), weight_int8=weight, scales=scales, bias=b, backend="triton")
    kwargs.update(override)
    return lambda: w8aspike_linear(**kwargs)


@pytest.mark.parametrize(
    "call, match, error",
    [
        (_bad_call(weight_int8=torch.zeros(8, 64)), "weight_int8", TypeError),
        (_bad_call(x=torch.randn(3, 48)), "weight_int8", ValueError),
        (_bad_call(scales=torch.ones(8, 2)), "scales", ValueError),
        (_bad_call(scales=torch.ones(8, 3, 1)), "scales", ValueError),
        (_bad_call(bias=torch.ones(7)), "bias", ValueError),
        (_bad_call(k=-1.0), "k", ValueError),
        (_bad_call(backend="gpu"), "backend", ValueError),
        (_bad_call(x=torch.randn(3, 64, dtype=torch.float64)), "float16, bfloat16 or float32", TypeError),
        (_bad_call(x=torch.randn(3, 48), weight_int8=torch.zeros(8, 48, dtype=torch.int8),
                   scales=torch.ones(8, 1, 1)), "divisible by 32", ValueError),
        (_bad_call(x=torch.tensor(2.0)), "x", ValueError),
        (_bad_call(check=1), "check", TypeError),
    ],
)
def test_bad_arguments_name_the_argument(call, match, error):
    with pytest.raises(error, match=match):
        call()


def test_scales_nan_is_an_error_on_the_reference_path():
    weight, scales, b = make_layer(8, 64, 32)
    scales[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="scales"):
        w8aspike_linear(torch.randn(2, 64), weight, scales, b, backend="torch")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    weight, scales, b = make_layer(8, 64, 32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        w8aspike_linear(torch.randn(2, 64), weight, scales, b, backend="triton")
    auto = w8aspike_linear(torch.randn(2, 64), weight, scales, b, backend="auto")  # CPU: the reference
    assert auto.shape == (2, 8)


# --- GPU, SpikingBrain-7B shapes -------------------------------------------------------------------

LAYERS_7B = {"q/o": (3584, 3584), "k/v": (512, 3584), "gate/up": (18944, 3584), "down": (3584, 18944)}


def test_cutlass_backend_says_what_it_needs(monkeypatch):
    # backend="cutlass" never falls back: without the CuTe DSL, off Hopper or on a shape it does not take,
    # it names what is missing.
    weight, scales, _ = make_layer(128, 256, 128)
    x = torch.randn(4, 256)
    if not hopper.cutlass_available():
        with pytest.raises(RuntimeError, match="nvidia-cutlass-dsl"):
            w8aspike_linear(x, weight, scales, backend="cutlass")
    monkeypatch.setattr(hopper, "cutlass_available", lambda: True)
    with pytest.raises(RuntimeError, match="CUDA tensors on an sm_90"):
        w8aspike_linear(x, weight, scales, backend="cutlass")
    if CUDA and torch.cuda.get_device_capability()[0] == 9:
        weight, scales, _ = make_layer(128, 256, 64, device="cuda")  # groups of 64: not the release's layout
        with pytest.raises(ValueError, match="groups of 128"):
            w8aspike_linear(x.to("cuda"), weight, scales, backend="cutlass")


def test_cutlass_shape_rule():
    assert hopper.supports(3584, 3584, 128) and hopper.supports(512, 18944, 128)
    assert not hopper.supports(3584, 3584, 64)  # groups of 128 only
    assert hopper.supports(128, 384, 128)  # any number of groups
    assert not hopper.supports(3600, 3584, 128)  # N not a multiple of the 128-column tile


CUTLASS_RUNS = CUDA and hopper.cutlass_available() and torch.cuda.get_device_capability()[0] == 9


@pytest.mark.gpu
@pytest.mark.skipif(not CUTLASS_RUNS, reason="needs nvidia-cutlass-dsl (extra gpu) and an sm_90 GPU")
@pytest.mark.parametrize("layer", list(LAYERS_7B))
@pytest.mark.parametrize("rows", [2, 17, 300, 4096])
@pytest.mark.parametrize("bias", [True, False])
def test_gpu_cutlass_equals_exact_integer_form(layer, rows, bias):
    # The CuTe DSL GEMM under the same identity as the Triton path: exact integer group sums, float32
    # scaling, one rounding to bfloat16; M not a multiple of the 128-row tile, bursts past 127 redone.
    from sb_kernels.spike_quant import quantize_rows

    n, k = LAYERS_7B[layer]
    weight, scales, b = make_layer(n, k, 128, seed=rows, device="cuda", bias=bias, dtype=torch.bfloat16)
    x = heavy_tailed((rows, k), seed=rows + 2, dtype=torch.bfloat16, device="cuda")
    x[::3, 11] = 20 * x.abs().mean()
    torch.empty(rows, n, dtype=torch.bfloat16, device="cuda").fill_(float("nan"))  # poison the allocator's next block
    out = w8aspike_linear(x, weight, scales, b, backend="cutlass")
    v_th = quantize_rows(x, 3.0, None, torch.int8).v_th  # the quantization kernel both backends use
    # The float64 reference of all 4096 rows needs gigabytes: the first and the last 64 rows (the tail tile).
    rows_checked = torch.cat([torch.arange(64), torch.arange(rows - 64, rows)]).cuda() if rows > 300 else slice(None)
    assert_matches_exact(out[rows_checked], x[rows_checked], v_th[rows_checked], weight, scales, b)


@pytest.mark.gpu
@pytest.mark.parametrize("layer", list(LAYERS_7B))
@pytest.mark.parametrize("rows", [1, 16, 17, 300])
@pytest.mark.parametrize("group", [128, None])
def test_gpu_7b_shapes(layer, rows, group):
    n, k = LAYERS_7B[layer]
    weight, scales, b = make_layer(n, k, group, seed=rows, device="cuda", dtype=torch.bfloat16)
    x = heavy_tailed((rows, k), seed=rows + 1, dtype=torch.bfloat16, device="cuda")
    x[::3, 11] = 20 * x.abs().mean()  # every third row bursts past 127
    torch.empty(rows, n, dtype=torch.bfloat16, device="cuda").fill_(float("nan"))  # poison the allocator's next block
    out = check_linear(x, weight, scales, b)
    assert out.is_cuda and bool(torch.isfinite(out).all())
    ref = w8aspike_linear_reference(x.double(), weight, scales, b.double())
    assert rel_err(out, ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 16, 300])
def test_gpu_cuda_graph_replay_equals_eager(rows):
    """The call holds no host synchronization: captured in a CUDA graph and replayed on new inputs
    (bursts past 127 and a NaN row included), it gives the eager output bit for bit."""
    n, k = LAYERS_7B["q/o"]
    weight, scales, b = make_layer(n, k, 128, seed=rows, device="cuda", dtype=torch.bfloat16)
    static_x = heavy_tailed((rows, k), seed=rows, dtype=torch.bfloat16, device="cuda")

    def call():
        return w8aspike_linear(static_x, weight, scales, b, backend="triton")

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()  # compile and warm up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call inside raises
    try:
        with torch.cuda.graph(graph):
            static_out = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for seed, burst in ((rows + 7, 0.0), (rows + 8, 40.0), (rows + 9, float("nan"))):
        fresh = heavy_tailed((rows, k), seed=seed, dtype=torch.bfloat16, device="cuda")
        if burst:
            fresh[-1, 3] = burst * fresh.abs().mean() if burst == burst else burst
        static_x.copy_(fresh)
        graph.replay()
        eager = w8aspike_linear(fresh, weight, scales, b, backend="triton")
        assert torch.equal(static_out.isnan(), eager.isnan())
        assert torch.equal(static_out.nan_to_num(), eager.nan_to_num())
        assert bool(static_out[-1].isnan().all()) == (burst != burst)
    if rows > 1:
        check_linear(static_x[:-1], weight, scales, b)


@pytest.mark.gpu
def test_gpu_split_k_counters_first_made_inside_a_capture(monkeypatch):
    """The split-K decode kernel's arrival counters for a stream first used inside a graph capture are
    zeroed by the graph (on replay) and, before an eager call on that stream, on the stream itself."""
    monkeypatch.setattr(decode, "_ARRIVAL_COUNTERS", {})
    n, k = LAYERS_7B["k/v"]  # 32 column blocks: split on any GPU
    weight, scales, b = make_layer(n, k, 128, seed=3, device="cuda", dtype=torch.bfloat16)
    x = heavy_tailed((1, k), seed=4, dtype=torch.bfloat16, device="cuda")
    assert _decode_config(n, 128, k // 128, sm_count(torch.device("cuda", 0), 0), True)["SPLITS"] > 1
    warm = torch.cuda.Stream()
    with torch.cuda.stream(warm):
        expected = w8aspike_linear(x, weight, scales, b, backend="triton")  # compiles; counters of `warm`
    torch.cuda.synchronize()
    capture = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=capture):
        static_out = w8aspike_linear(x, weight, scales, b, backend="triton")
    with torch.cuda.stream(capture):
        eager = w8aspike_linear(x, weight, scales, b, backend="triton")
    torch.cuda.synchronize()
    assert torch.equal(eager, expected)
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, expected)
    assert not any(bool(counters.any()) for counters, _ in decode._ARRIVAL_COUNTERS.values())


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 64, 4096])
def test_gpu_int8_matmul_exact(rows):
    torch.manual_seed(rows)
    counts = torch.randint(-3000, 3000, (rows, 3584), device="cuda", dtype=torch.int32)
    counts[:, 7:] //= 100
    weight = torch.randint(-128, 128, (512, 3584), device="cuda", dtype=torch.int8)
    got = int8_matmul_int32(counts, weight, backend="triton")
    want = counts.double() @ weight.double().T  # exact: |P| < 2**53
    assert torch.equal(got.double(), want)


@pytest.mark.gpu
def test_gpu_errors():
    weight, scales, b = make_layer(64, 256, 128, device="cuda")
    for rows in (4, 64):
        x = torch.randn(rows, 256, device="cuda")
        x[1, 1] = float("nan")
        out = w8aspike_linear(x, weight, scales, b, backend="triton")
        assert bool(out[1].isnan().all()) and int(out.isnan().sum()) == 64
        with pytest.raises(ValueError, match="NaN or Inf"):
            w8aspike_linear(x, weight, scales, b, backend="triton", check=True)
        x[1, 1] = 1e15  # counts past int32
        assert bool(w8aspike_linear(x, weight, scales, b, backend="triton")[1].isnan().all())
        with pytest.raises(OverflowError, match="clamp="):
            w8aspike_linear(x, weight, scales, b, backend="triton", check=True)
    with pytest.raises(RuntimeError, match="CUDA"):
        w8aspike_linear(torch.randn(2, 256), weight, scales, b, backend="triton")
