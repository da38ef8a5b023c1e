"""sb_kernels W8ASpike: int8 digits, the exact int8 GEMM and the fused spike-quantize + GEMM linear.

Identities: ``sum_i 256^i d_i == counts`` with int8 digits; ``int8_matmul_int32 == counts @ W.T``
exactly for counts of any size; ``w8aspike_linear == v_th * sum_g s_g P_g + bias`` with exact integer
``P_g`` (only the float32 scaling rounds), hence ``== w8aspike_linear_reference`` to float rounding,
whether counts stay in int8 or burst far past 127 (rows that burst are redone with all their digits).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, heavy_tailed, rel_err, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import (
    dequantize_weight,
    int8_matmul_int32,
    spike_quantize,
    split_int8_digits,
    w8aspike_linear,
    w8aspike_linear_reference,
)
from sb_kernels import w8aspike as w8

# Triton's interpreter multiplies NaN/Inf rows on purpose (the error-path tests): numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def make_layer(n, k, group, seed=0, device="cpu", bias=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    groups = 1 if group is None else k // group
    scales = torch.rand(n, groups, 1, generator=g) * 0.02 + 1e-3
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    return w.to(device), scales.to(device), None if b is None else b.to(device)


def exact_reference(x, weight, scales, bias, k=3.0, clamp=None):
    """``v_th * sum_g s_g P_g + bias`` in float64 from the kernel's own counts and v_th (exact P_g),
    with the error bound of float32 scaling: a few ulps of ``v_th * sum_g |s_g P_g| + |bias|``."""
    counts, v_th = spike_quantize(x, k, clamp, backend="triton" if x.is_cuda else "torch")
    counts2d = counts.reshape(-1, x.shape[-1]).double()  # float64 on x's device: exact for |P| < 2**53
    v2d = v_th.reshape(-1, 1).double()
    n, kk = weight.shape
    groups = scales.shape[1]
    wg = weight.double().reshape(n, groups, kk // groups)
    p = torch.einsum("mgk,ngk->mng", counts2d.reshape(-1, groups, kk // groups), wg)
    s = scales.double().reshape(1, n, groups)
    y = v2d * (p * s).sum(-1)
    magnitude = v2d * (p * s).abs().sum(-1)
    if bias is not None:
        y = y + bias.double()
        magnitude = magnitude + bias.double().abs()
    return y, magnitude


def assert_matches_exact(out, x, weight, scales, bias, k=3.0, clamp=None):
    y, magnitude = exact_reference(x, weight, scales, bias, k, clamp)
    out2d = out.reshape(-1, weight.shape[0]).double()
    # float32 scaling (~K/group + 3 roundings) then the cast to x.dtype: one unit in the last place,
    # since Triton's interpreter casts float32 to bfloat16 by truncation (compiled kernels round).
    eps = {torch.float32: 2**-23, torch.bfloat16: 2**-7, torch.float16: 2**-10}[out.dtype]
    tol = magnitude * (scales.shape[1] + 4) * 2**-24 + y.abs() * eps + 1e-30
    assert torch.all((out2d - y).abs() <= tol), float(((out2d - y).abs() / tol).max())


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


@settings(max_examples=12)  # the interpreter runs every tile in Python: keep CI under a minute
@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 24), n=st.integers(1, 24),
       k=st.sampled_from([32, 64, 96, 160]), burst=st.sampled_from([0, 300, 40000, 2_000_000]))
def test_int8_matmul_is_exact_for_any_counts(seed, m, n, k, burst):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(-127, 128, (m, k), generator=g, dtype=torch.int32)
    if burst:
        counts[0, -1] = burst
        counts[-1, 0] = -burst
    weight = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    got = int8_matmul_int32(counts, weight, backend="triton")
    want = counts.to(torch.int64) @ weight.to(torch.int64).T
    assert got.dtype == torch.int32 and torch.equal(got.to(torch.int64), want)
    assert torch.equal(int8_matmul_int32(counts, weight, backend="torch").to(torch.int64), want)


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
def test_linear_equals_exact_integer_form(seed, rows, group, bias, burst, clamp, dtype):
    n, k = 16, 128
    weight, scales, b = make_layer(n, k, group, seed, bias=bias, dtype=dtype)
    x = heavy_tailed((rows, k), seed, 0.5, dtype)
    if burst:
        x[::5, 7] = burst  # some rows' counts past 127 (at most (k + 1/2) D = 448 here)
    out = w8aspike_linear(x, weight, scales, b, clamp=clamp, backend="triton")
    assert out.dtype == dtype and out.shape == (rows, n)
    assert_matches_exact(out, x, weight, scales, b, clamp=clamp)
    ref = w8aspike_linear_reference(x.double(), weight, scales, None if b is None else b.double(), clamp=clamp)
    if dtype == torch.float32:  # v_th may differ in its last bit from the reference's: compare loosely
        assert rel_err(out, ref) < 1e-3


@pytest.mark.parametrize("rows", [2, 20])
def test_counts_past_int16_take_three_digits(rows):
    weight, scales, b = make_layer(16, 256, 64, seed=3)
    x = torch.randn(rows, 256)
    x[1, 9] = 1e7
    out = w8aspike_linear(x, weight, scales, b, k=500.0, backend="triton")  # counts up to ~128000
    counts, _ = spike_quantize(x, 500.0, backend="torch")
    assert int(counts.abs().max()) > 65535
    assert_matches_exact(out, x, weight, scales, b, k=500.0)


def test_leading_dims_and_empty_input():
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(2, 3, 64)
    out = w8aspike_linear(x, weight, scales, b, backend="triton")
    assert out.shape == (2, 3, 8)
    assert_matches_exact(out, x, weight, scales, b)
    assert w8aspike_linear(torch.randn(0, 64), weight, scales, b, backend="triton").shape == (0, 8)


@pytest.mark.parametrize("rows", [3, 30])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_an_error(rows, bad):
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(rows, 64)
    x[rows - 1, 5] = bad
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            w8aspike_linear(x, weight, scales, b, backend=backend)


@pytest.mark.parametrize("rows", [2, 20])
def test_counts_beyond_int32_overflow(rows):
    weight, scales, b = make_layer(8, 64, 32)
    x = torch.randn(rows, 64)
    x[0] = 1e15  # v_th clamps at 1e4: counts 1e11
    with pytest.raises(OverflowError, match="clamp="):
        w8aspike_linear(x, weight, scales, b, backend="triton")
    clamped = w8aspike_linear(x, weight, scales, b, clamp=16, backend="triton")
    assert_matches_exact(clamped, x, weight, scales, b, clamp=16)


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


@pytest.mark.gpu
@pytest.mark.parametrize("layer", list(LAYERS_7B))
@pytest.mark.parametrize("rows", [1, 17, 300])
@pytest.mark.parametrize("group", [128, None])
def test_gpu_7b_shapes(layer, rows, group):
    n, k = LAYERS_7B[layer]
    weight, scales, b = make_layer(n, k, group, seed=rows, device="cuda", dtype=torch.bfloat16)
    x = heavy_tailed((rows, k), seed=rows + 1, dtype=torch.bfloat16, device="cuda")
    x[::3, 11] = 20 * x.abs().mean()  # every third row bursts past 127
    torch.empty(rows, n, dtype=torch.bfloat16, device="cuda").fill_(float("nan"))  # poison the allocator's next block
    out = w8aspike_linear(x, weight, scales, b, backend="triton")
    assert out.is_cuda and bool(torch.isfinite(out).all())
    assert_matches_exact(out, x, weight, scales, b)
    ref = w8aspike_linear_reference(x.double(), weight, scales, b.double())
    assert rel_err(out, ref) < 1e-2


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
        with pytest.raises(ValueError, match="NaN or Inf"):
            w8aspike_linear(x, weight, scales, b, backend="triton")
    with pytest.raises(RuntimeError, match="CUDA"):
        w8aspike_linear(torch.randn(2, 256), weight, scales, b, backend="triton")
