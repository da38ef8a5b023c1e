"""sb_kernels W8ASpike on the CPU in integers (:mod:`sb_kernels.w8aspike.cpu`).

Identity: ``w8aspike_linear_cpu(x) == v_th * sum_g s_g P_g + bias`` with exact integer
``P_g = counts_g @ (weight_int8 + R)_g.T`` and ``counts, v_th = spike_count(x, k)`` (the reference's own
counts and threshold), within the error bound of float32 scaling (a few units in the last place of
``v_th * sum_g |s_g P_g|``, one per group summed); hence ``== w8aspike_linear_reference`` to float
rounding. Checked for both integer-product methods (``torch._int_mm`` and the float fallback), any
group size, counts bursting past int8, int16 and int24, weight codes past int8 (residual), clamps,
float16/bfloat16/float32/float64 inputs; ``backend="auto"`` takes this path on CPU tensors, ``"torch"``
and :func:`sb_kernels.use_reference` the reference.
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_testing import heavy_tailed

from sb_kernels import (
    int_mm_available,
    split_weight_codes,
    use_reference,
    w8aspike_linear,
    w8aspike_linear_cpu,
    w8aspike_linear_reference,
)
from sb_kernels.w8aspike import cpu
from sb_neurons import spike_count

METHODS = ["int_mm", "float"]
needs_int_mm = pytest.mark.skipif(not int_mm_available(), reason="torch._int_mm does not run on CPU tensors here")


def codes_with_residual(n, k, share, size, seed):
    """Weight codes ``[n, k]`` with about ``share`` of them past int8 (``|code|`` up to ``size``), split
    into base codes and residual; returns ``(base, residual, codes)``."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int32)
    past = torch.rand(n, k, generator=g) < share
    sign = torch.where(torch.rand(n, k, generator=g) < 0.5, -1, 1).to(torch.int32)
    codes = torch.where(past, sign * torch.randint(128, size + 1, (n, k), generator=g, dtype=torch.int32), codes)
    base, residual = split_weight_codes(codes)
    return base, residual, codes


def exact(x, codes, scales, bias, k=3.0, clamp=None):
    """``v_th * sum_g s_g P_g + bias`` in float64 with exact integer ``P_g`` (the reference's counts and
    ``v_th``), and the magnitude of float32 (or float64) scaling's error bound: ``v_th * sum_k |c_k Q_nk|
    s_ng + |bias|``, which ``assert_exact`` multiplies by ``(groups + extra terms + 6)`` units."""
    n, kk = codes.shape
    counts, v_th = spike_count(x.reshape(-1, kk), k, -1, clamp)
    groups = scales.shape[1]
    c = counts.double().reshape(-1, groups, kk // groups)
    p = torch.einsum("mgk,ngk->mng", c, codes.double().reshape(n, groups, kk // groups))  # exact: |p| < 2**53
    s = scales.double().reshape(1, n, groups)
    v = v_th.double().reshape(-1, 1)
    y = v * (p * s).sum(-1)
    # The path sums its pieces apart (int8 digits, bursts, residual entries), each of which may be larger
    # than their sum: bound every partial sum by the sum of absolute products.
    abs_products = torch.einsum("mgk,ngk->mng", c.abs(), codes.double().abs().reshape(n, groups, kk // groups))
    magnitude = v * (abs_products * s).sum(-1)
    if bias is not None:
        y = y + bias.double()
        magnitude = magnitude + bias.double().abs()
    return y, magnitude


def assert_exact(out, x, codes, scales, bias, k=3.0, clamp=None, extra_terms=0):
    y, magnitude = exact(x, codes, scales, bias, k, clamp)
    unit = 2**-52 if out.dtype == torch.float64 else 2**-24  # the scaling's precision
    cast = {torch.float64: 0.0, torch.float32: 0.0, torch.bfloat16: 2**-8, torch.float16: 2**-11}[out.dtype]
    tol = magnitude * (scales.shape[1] + extra_terms + 6) * unit * (1 + cast) + y.abs() * cast + 1e-30
    err = (out.reshape(y.shape).double() - y).abs()
    assert torch.all(err <= tol), float((err / tol).max())


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 40),
    n=st.integers(1, 48),
    group=st.sampled_from([8, 32, 128, None]),
    groups=st.integers(1, 4),
    bias=st.booleans(),
    burst=st.sampled_from([0, 200, 40_000, 9_000_000]),
    share=st.sampled_from([0.0, 0.01, 0.2]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.float64]),
)
@example(seed=0, rows=1, n=1, group=None, groups=1, bias=False, burst=0, share=0.0, dtype=torch.float32)
def test_integer_path_equals_exact_integer_form(method, seed, rows, n, group, groups, bias, burst, share, dtype):
    if method == "int_mm" and not int_mm_available():
        pytest.skip("torch._int_mm does not run on CPU tensors here")
    width = (group or 96) * groups
    base, residual, codes = codes_with_residual(n, width, share, 700, seed)
    g = torch.Generator().manual_seed(seed + 1)
    scales = torch.rand(n, width // (group or width), 1, generator=g) * 0.02 + 1e-3
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    x = heavy_tailed((rows, width), seed, dtype=torch.float64)
    if dtype == torch.float16:
        burst = min(burst, 200)  # float16 tops out at 65504: larger bursts would be Inf
        x = x / x.abs().amax(dim=-1, keepdim=True) * 100
    if burst:  # one count far past int8 in the first and the last row (v_th barely moves)
        x[0, -1] = burst * x[0].abs().mean() / 3
        x[-1, 0] = -burst * x[-1].abs().mean() / 3
    x = x.to(dtype)
    out = w8aspike_linear_cpu(x, base, scales, b, residual=residual, matmul=method)
    assert out.dtype == dtype and out.shape == (rows, n)
    entries = 0 if residual is None else int((residual.row_ptr[1:] - residual.row_ptr[:-1]).max())
    assert_exact(out, x, codes, scales, b, extra_terms=entries + 2)
    # The reference computes the same function, rounding its float32 weights: equal to float rounding.
    ref = w8aspike_linear_reference(x, base, scales, b, residual=residual)
    y, magnitude = exact(x, codes, scales, b)
    assert torch.all((out.double() - ref.double()).abs() <= 2 * (magnitude * width * 2**-22 + y.abs() * 2**-7) + 1e-30)


@needs_int_mm
@pytest.mark.parametrize("clamp", [None, 8, (-3, 100)])
def test_clamped_counts(clamp):
    base, residual, codes = codes_with_residual(24, 256, 0.02, 300, 3)
    scales = torch.rand(24, 2, 1, generator=torch.Generator().manual_seed(3)) * 0.01 + 1e-3
    x = heavy_tailed((5, 3, 256), 4)
    out = w8aspike_linear_cpu(x, base, scales, None, k=2.5, clamp=clamp, residual=residual)
    assert out.shape == (5, 3, 24)
    assert_exact(out, x, codes, scales, None, k=2.5, clamp=clamp, extra_terms=8)


def test_methods_agree_and_int_mm_is_exact():
    """Both methods give the same exact integer sums, so the same output to the bit."""
    if not int_mm_available():
        pytest.skip("torch._int_mm does not run on CPU tensors here")
    base, residual, _ = codes_with_residual(40, 384, 0.01, 254, 5)
    scales = torch.rand(40, 3, 1, generator=torch.Generator().manual_seed(5)) * 0.01 + 1e-3
    x = heavy_tailed((33, 384), 6)
    a = w8aspike_linear_cpu(x, base, scales, residual=residual, matmul="int_mm")
    b = w8aspike_linear_cpu(x, base, scales, residual=residual, matmul="float")
    assert torch.equal(a, b)


def test_wide_groups_are_cut_into_exact_chunks(monkeypatch):
    """A group wider than int32 can sum (one scale per output channel of a very wide layer) is cut into
    chunks whose int32 sums add in int64: with the limit lowered, the result is unchanged and exact."""
    if not int_mm_available():
        pytest.skip("torch._int_mm does not run on CPU tensors here")
    base, _, codes = codes_with_residual(16, 200, 0.0, 200, 7)
    base = torch.full_like(base, 127)  # largest products: 128 * 127 per column
    scales = torch.full((16, 1, 1), 1e-3)
    x = heavy_tailed((4, 200), 7)  # counts of every size: int8 digits of -128 to 127 and bursts
    whole = w8aspike_linear_cpu(x, base, scales)
    monkeypatch.setattr(cpu, "INT32_GROUP_MAX", 64)
    cut = w8aspike_linear_cpu(x, base, scales)
    assert torch.equal(whole, cut)
    assert_exact(cut, x, base.to(torch.int32), scales, None)


def test_auto_takes_the_integer_path_on_cpu_and_the_reference_when_asked(monkeypatch):
    base, residual, _ = codes_with_residual(8, 64, 0.05, 200, 8)
    scales = torch.rand(8, 2, 1, generator=torch.Generator().manual_seed(8)) * 0.01 + 1e-3
    x = heavy_tailed((3, 64), 9)
    calls = []
    real = cpu.w8aspike_linear_cpu
    import sb_kernels.w8aspike.linear as linear_module

    monkeypatch.setattr(linear_module, "w8aspike_linear_cpu", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    auto = w8aspike_linear(x, base, scales, residual=residual)
    assert calls == [1]
    assert torch.equal(auto, real(x, base, scales, residual=residual))
    assert torch.equal(w8aspike_linear(x, base, scales, residual=residual, backend="cpu"), auto)
    forced = w8aspike_linear(x, base, scales, residual=residual, backend="torch")
    with use_reference():
        in_block = w8aspike_linear(x, base, scales, residual=residual)
    assert calls == [1, 1]  # "torch" and use_reference() run the reference
    assert torch.equal(in_block, forced)
    assert torch.equal(forced, w8aspike_linear_reference(x, base, scales, residual=residual))


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_rows_and_counts_past_int32(method):
    if method == "int_mm" and not int_mm_available():
        pytest.skip("torch._int_mm does not run on CPU tensors here")
    base, _, codes = codes_with_residual(6, 32, 0.0, 200, 10)
    scales = torch.full((6, 1, 1), 0.01)
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(10))
    x[1, 3] = float("nan")
    x[2, 0] = 3e15  # v_th clamps at 1e4: counts past int32
    out = w8aspike_linear_cpu(x, base, scales, matmul=method)
    assert out[1].isnan().all() and out[2].isnan().all()
    assert torch.isfinite(out[[0, 3]]).all()
    assert_exact(out[[0, 3]], x[[0, 3]], codes, scales, None)
    with pytest.raises(ValueError, match="NaN or Inf"):
        w8aspike_linear_cpu(x, base, scales, check=True)
    with pytest.raises(OverflowError, match="int32"):
        w8aspike_linear_cpu(x[[0, 2]], base, scales, check=True)


def test_leading_dims_empty_and_noncontiguous():
    base, _, _ = codes_with_residual(5, 64, 0.0, 200, 11)
    scales = torch.rand(5, 2, 1) + 0.01
    assert w8aspike_linear_cpu(torch.randn(0, 64), base, scales).shape == (0, 5)
    assert w8aspike_linear_cpu(torch.randn(2, 0, 64), base, scales).shape == (2, 0, 5)
    x = torch.randn(64, 6).T  # a transposed view
    assert torch.equal(w8aspike_linear_cpu(x, base, scales), w8aspike_linear_cpu(x.contiguous(), base, scales))


def test_int_mm_probe_and_fallback(monkeypatch):
    assert int_mm_available() == (cpu.resolve_matmul("auto") == "int_mm")
    cpu.int_mm_available.cache_clear()
    monkeypatch.delattr(torch, "_int_mm")
    try:
        assert not cpu.int_mm_available()
        assert cpu.resolve_matmul("auto") == "float"
        with pytest.raises(RuntimeError, match="matmul='float'"):
            cpu.resolve_matmul("int_mm")
        base, _, codes = codes_with_residual(7, 64, 0.0, 200, 12)
        scales = torch.rand(7, 2, 1) + 0.01
        x = heavy_tailed((3, 64), 13)
        assert_exact(w8aspike_linear_cpu(x, base, scales), x, codes, scales, None)
    finally:
        cpu.int_mm_available.cache_clear()


@pytest.mark.parametrize(
    "override, match, error",
    [
        (dict(x=torch.ones(2, 32, dtype=torch.int32)), "x", TypeError),
        (dict(x=torch.randn(2, 31)), "x's last dimension", ValueError),
        (dict(x=torch.tensor(1.0)), "x must have shape", ValueError),
        (dict(weight_int8=torch.zeros(4, 32)), "weight_int8", TypeError),
        (dict(scales=torch.ones(4, 3, 1)), "scales", ValueError),
        (dict(scales=torch.ones(4, 1, 1, dtype=torch.float64)), "scales", ValueError),
        (dict(bias=torch.ones(5)), "bias", ValueError),
        (dict(k=0.0), "k", ValueError),
        (dict(k=True), "k", TypeError),
        (dict(clamp=1), "clamp", ValueError),
        (dict(check="yes"), "check", TypeError),
        (dict(matmul="blas"), "matmul", ValueError),
        (dict(residual="codes"), "residual", TypeError),
        (dict(x=torch.randn(2, 32, device="meta")), "x must be a CPU tensor", ValueError),
        (dict(scales=torch.ones(4, 1, 1, device="meta")), "scales must be a CPU tensor", ValueError),
    ],
)
def test_bad_arguments_name_the_argument(override, match, error):
    args = dict(x=torch.randn(2, 32), weight_int8=torch.zeros(4, 32, dtype=torch.int8), scales=torch.ones(4, 1, 1),
                bias=None, k=3.0, clamp=None, check=False, matmul="auto", residual=None)
    args.update(override)
    x, weight, scales, bias = args.pop("x"), args.pop("weight_int8"), args.pop("scales"), args.pop("bias")
    with pytest.raises(error, match=match):
        w8aspike_linear_cpu(x, weight, scales, bias, **args)


def test_residual_of_another_shape_is_refused_and_any_residual_is_exact():
    _, residual, _ = codes_with_residual(5, 32, 0.3, 300, 14)
    with pytest.raises(ValueError, match="residual"):
        w8aspike_linear_cpu(torch.randn(2, 32), torch.zeros(4, 32, dtype=torch.int8), torch.ones(4, 1, 1), residual=residual)
    # Canonical form is not checked per call (a pass over the entries): base + R is multiplied as given.
    base = torch.randint(-127, 128, (5, 32), generator=torch.Generator().manual_seed(15), dtype=torch.int8)
    scales = torch.rand(5, 1, 1) + 0.01
    x = heavy_tailed((3, 32), 16)
    out = w8aspike_linear_cpu(x, base, scales, residual=residual)
    assert_exact(out, x, base.to(torch.int32) + residual.dense(), scales, None, extra_terms=8)


@pytest.mark.parametrize("method", METHODS)
def test_tiled_outputs_equal_one_tile(method, monkeypatch):
    """Large outputs are summed tile by tile (cache-sized); tiles of any shape give the same output."""
    if method == "int_mm" and not int_mm_available():
        pytest.skip("torch._int_mm does not run on CPU tensors here")
    base, residual, codes = codes_with_residual(70, 256, 0.02, 300, 17)
    scales = torch.rand(70, 2, 1, generator=torch.Generator().manual_seed(17)) * 0.01 + 1e-3
    x = heavy_tailed((45, 256), 18)
    whole = w8aspike_linear_cpu(x, base, scales, residual=residual, matmul=method)
    assert cpu._tiles(45, 70) == [(slice(0, 45), slice(0, 70))]
    monkeypatch.setattr(cpu, "TILE_ELEMENTS", 64)
    monkeypatch.setattr(cpu, "TILE_COLUMNS", 32)
    assert len(cpu._tiles(45, 70)) == 9  # rows in blocks of 16, columns of 32: ragged edges included
    tiled = w8aspike_linear_cpu(x, base, scales, residual=residual, matmul=method)
    assert torch.equal(tiled, whole)
    assert_exact(tiled, x, codes, scales, None, extra_terms=8)
