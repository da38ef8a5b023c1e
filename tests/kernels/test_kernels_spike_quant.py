"""sb_kernels.spike_count_rows: the fused Triton kernel against sb_neurons.spike_count.

Identities: ``counts == round(x.float() / v_th)`` bit for bit given the kernel's ``v_th`` (IEEE division,
half to even); ``v_th`` equals the reference's up to float32 summation order; wherever the two ``v_th``
agree the counts equal the reference's; the statistics equal ``sb_neurons.spike_stats`` of the counts.
CPU tests run the kernel in Triton's interpreter at small sizes; ``gpu`` tests compile it at model sizes,
and the property tests run compiled too (``device="cuda"``, the same identities: the compiled quotient is
the correctly rounded one by Markstein's correction and ``cvt.rni`` rounds half to even; PyTorch divides
tensor by tensor correctly rounded on CUDA too).
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, heavy_tailed, triton_interpreter, widths  # noqa: F401  (autouse fixture)

from sb_kernels import spike_count_rows, spike_count_rows_reference
from sb_kernels import spike_quant as sq
from sb_neurons import spike_count, spike_stats

DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# Triton's interpreter multiplies NaN/Inf rows on purpose (the error-path tests): numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def assert_kernel_identities(x, k=3.0, clamp=None, counts=None, v_th=None):
    """The kernel's counts/v_th satisfy its documented identities against the float reference."""
    if counts is None:
        counts, v_th = spike_count_rows(x, k, clamp, backend="triton")
    assert counts.dtype == torch.int32 and v_th.dtype == torch.float32
    assert counts.shape == x.shape and v_th.shape == (*x.shape[:-1], 1)
    # Exact: the kernel's own rounding of x / v_th (float32 division, round half to even).
    expected = torch.round(x.float() / v_th)
    bounds = sq.resolve_clamp(clamp)
    if bounds is not None:
        expected = expected.clamp(*bounds)
    assert torch.equal(counts.double(), expected.double())
    # v_th: the reference's mean |x| / k up to float32 summation order (float64 sum of the same values).
    ref_counts, ref_v_th = spike_count(x, k, -1, clamp)
    exact_v_th = (x.double().abs().mean(-1, keepdim=True) / k).clamp(1e-5, 1e4)
    width = x.shape[-1]
    assert torch.all((v_th.double() - exact_v_th).abs() <= exact_v_th * (width + 2) * 2**-24)
    same = (v_th == ref_v_th).expand_as(x)
    assert torch.equal(counts.double()[same], ref_counts.double()[same])


@pytest.mark.parametrize("device", DEVICES)
@given(
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 5),
    scale=st.sampled_from([1e-7, 1e-3, 1.0, 1e3, 1e6]),
    k=st.floats(0.25, 8.0),
    dtype=st.sampled_from(DTYPES),
    clamp=st.sampled_from([None, 2, 8, (-3, 300), (0, 5)]),
)
def test_counts_round_x_over_the_kernel_threshold_exactly(device, data, seed, rows, scale, k, dtype, clamp):
    # width picks the kernel's BLOCK: on CUDA a few widths (blocks 1, 8, 64, 256, 512) bound the compiles.
    width = data.draw(widths(device, 1, 300, (1, 7, 64, 129, 300)), label="width")
    scale = min(scale, 10.0) if dtype == torch.float16 else scale  # heavy tails reach 100x: stay under 65504
    x = heavy_tailed((rows, width), seed, scale, dtype, device)
    assert_kernel_identities(x, k, clamp)


def test_half_way_ties_round_to_even():
    # k = mean |x| makes v_th = 1 exactly, so x / v_th = x and every .5 is a tie.
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 4.0]])
    k = float(x.abs().mean())
    counts, v_th = spike_count_rows(x, k, backend="triton")
    assert float(v_th) == 1.0
    assert counts.tolist() == [[0, 2, 2, 0, -2, -2, 4, 4]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0.5, 2.5, 7.5])
def test_a_one_element_row_is_a_tie_at_half_integer_k(k, dtype):
    # mean |x| = |x|, so x / v_th is +-k up to the rounding of v_th: on a tie or an ulp off it, as IEEE
    # division decides (issue 19: an interpreter fma rounded twice and gave -7 where round(-7.5) is -8).
    x = torch.tensor([[-0.37109375], [0.37109375], [-3.0], [1e-3]], dtype=dtype)
    counts, v_th = spike_count_rows(x, k, backend="triton")
    assert torch.equal(counts.double(), torch.round(x.float() / v_th).double())
    assert torch.equal(counts, spike_count_rows_reference(x, k).counts)


def near_ties(rows, width, seed, device="cpu", rounds=3):
    """``(x, k)``: rows whose quotients ``x / v_th`` lie on or within a few ulps of ``n + 1/2`` for the
    kernel's own ``v_th``. Every row permutes the same integers ``n`` (so one ``k = mean|n + 1/2|`` fits
    all), scaled by a random threshold; each round rebuilds ``x = (n + 1/2) * v_th`` from the kernel's last
    ``v_th``, which then moves by a few ulps at most. A quotient one ulp off flips such counts."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(-9, 9, (width,), generator=g).double()
    order = torch.rand(rows, width, generator=g).argsort(-1)
    half = (n[order] + 0.5).to(device)
    k = float((n + 0.5).abs().mean())
    v_th = (10 ** (torch.rand(rows, 1, generator=g, dtype=torch.float64) * 6 - 3)).to(device)
    for _ in range(rounds):
        x = (half * v_th.double()).float()
        v_th = spike_count_rows(x, k, backend="triton").v_th
    flip = torch.randint(0, 3, x.shape, generator=g).to(device)
    up, down = torch.nextafter(x, torch.full_like(x, float("inf"))), torch.nextafter(x, torch.full_like(x, -float("inf")))
    return torch.where(flip == 1, up, torch.where(flip == 2, down, x)), k


def test_quotients_near_ties_round_like_ieee_division():
    # Compiled, the kernel divides by multiplying with RN(1 / v_th) and correcting once with fused
    # multiply-adds: exact only if the corrected quotient is the correctly rounded one, which ties expose
    # (the interpreter divides; the gpu test below holds the compiled form to the same rule).
    x, k = near_ties(8, 257, seed=0)
    counts, v_th = spike_count_rows(x, k, backend="triton")
    quotient = x / v_th
    assert torch.equal(counts.double(), torch.round(quotient).double())
    assert float(((quotient - quotient.round()).abs() - 0.5).abs().max()) < 1e-5  # all near ties
    assert float((quotient - quotient.trunc()).abs().eq(0.5).float().mean()) > 0.1  # many exact ties


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_quotient_past_float32_range_is_an_overflow_not_a_nan():
    # v_th = mean|x| / k with a huge k makes x / v_th overflow float32: counts saturate, OverflowError.
    x = torch.tensor([[3.0e38, 1.0, -2.0, 0.0], [-3.0e38, 1.0, -2.0, 0.0]])
    with pytest.raises(OverflowError, match="int32"):
        spike_count_rows(x, 1e38, backend="triton")
    counts, v_th = spike_count_rows(x, 1e38, clamp=(-7, 9), backend="triton")
    assert torch.equal(counts, torch.round(x / v_th).clamp(-7, 9).int())  # the signs survive saturation
    assert counts[:, 0].tolist() == [9, -7]


@pytest.mark.parametrize("rows_per_program, num_warps", [(1, 1), (3, 2), (16, 4)])
def test_launch_configuration_changes_no_result(rows_per_program, num_warps):
    x = heavy_tailed((37, 300), seed=5, scale=2.0)
    hist0 = torch.zeros(sq.STATS_BINS, dtype=torch.int32)
    base = sq.quantize_rows(x, 3.0, None, torch.int32, hist0)
    hist = torch.zeros(sq.STATS_BINS, dtype=torch.int32)
    other = sq.quantize_rows(x, 3.0, None, torch.int32, hist, num_warps=num_warps, rows_per_program=rows_per_program)
    assert torch.equal(base.counts, other.counts) and torch.equal(base.row_max, other.row_max)
    assert torch.equal(hist0, hist) and int(hist.sum()) == x.numel()
    assert torch.equal(base.v_th, other.v_th) or num_warps != 4  # the sum's order follows the warps
    assert torch.equal(base.row_max, base.counts.abs().amax(-1).float())


def test_bursts_past_127_are_exact_and_unbounded():
    # |count| <= k * D + 1/2: a large k lets a 200-wide row reach past int16.
    x = torch.randn(4, 200)
    x[:, 3] = 5000.0
    x[2, 5] = 3e6
    counts, v_th = spike_count_rows(x, 300.0, backend="triton")
    assert int(counts.abs().max()) > 32767 and int(counts[0].abs().max()) > 127
    assert_kernel_identities(x, 300.0, counts=counts, v_th=v_th)


def test_counts_dtype_narrow_and_checked():
    x = torch.randn(3, 64)
    wide, _ = spike_count_rows(x, backend="triton")
    for dtype in (torch.int8, torch.int16):
        narrow, _ = spike_count_rows(x, backend="triton", counts_dtype=dtype)
        assert narrow.dtype == dtype and torch.equal(narrow.to(torch.int32), wide)
    x[1, 0] = 1e4
    with pytest.raises(ValueError, match="counts_dtype"):
        spike_count_rows(x, backend="triton", counts_dtype=torch.int8)
    assert spike_count_rows(x, backend="triton", counts_dtype=torch.int8, clamp=8).counts.dtype == torch.int8


def test_long_rows_take_the_two_pass_path(monkeypatch):
    # Shrink the single-pass limit so the chunked loop runs at an interpreter-friendly size.
    monkeypatch.setattr(sq, "SINGLE_PASS_MAX", 64)
    monkeypatch.setattr(sq, "CHUNK", 32)
    x = heavy_tailed((3, 150), seed=4, scale=2.0)
    counts, v_th, stats = spike_count_rows(x, backend="triton", return_stats=True, clamp=(-200, 200))
    assert_kernel_identities(x, clamp=(-200, 200), counts=counts, v_th=v_th)
    assert_stats_equal(stats, spike_stats(counts=counts, codec="ternary"))


def assert_stats_equal(got, want):
    for name in ("time_steps", "num_channels", "total_spikes", "spike_slots", "silent_channels"):
        assert getattr(got, name) == getattr(want, name), name
    assert torch.equal(got.count_histogram, want.count_histogram)


@pytest.mark.parametrize("device", DEVICES)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 4), burst=st.sampled_from([0.0, 200.0, 5e4]))
def test_stats_in_the_same_pass_equal_spike_stats(device, data, seed, rows, burst):
    # The histogram is integer atomics: exact compiled as interpreted.
    width = data.draw(widths(device, 1, 200, (1, 7, 64, 129, 200)), label="width")
    x = heavy_tailed((rows, width), seed, device=device)
    if burst:
        x[0, 0] = burst * x.abs().mean()
    counts, v_th, stats = spike_count_rows(x, backend="triton", return_stats=True)
    assert counts.device == x.device
    assert_stats_equal(stats, spike_stats(counts=counts.cpu(), codec="ternary"))
    assert_kernel_identities(x, counts=counts, v_th=v_th)
    ref = spike_count_rows(x, backend="torch", return_stats=True)
    assert ref.stats.num_channels == stats.num_channels


def test_shapes_strides_and_empty_rows():
    x = torch.randn(6, 3, 40).transpose(0, 1)  # non-contiguous [3, 6, 40]
    counts, v_th = spike_count_rows(x, backend="triton")
    assert counts.shape == (3, 6, 40) and v_th.shape == (3, 6, 1)
    assert_kernel_identities(x, counts=counts, v_th=v_th)
    strided = torch.randn(4, 80)[:, ::2]  # last-dim stride 2
    assert_kernel_identities(strided)
    empty = spike_count_rows(torch.randn(0, 7), backend="triton")
    assert empty.counts.shape == (0, 7) and empty.v_th.shape == (0, 1)
    one = torch.tensor([-2.0])
    assert spike_count_rows(one, backend="triton").counts.tolist() == [-3]


def test_threshold_clamps_and_overflow():
    tiny = torch.full((1, 8), 1e-9)  # v_th clamps at 1e-5: counts 0
    counts, v_th = spike_count_rows(tiny, backend="triton")
    assert float(v_th) == pytest.approx(1e-5) and not counts.any()
    huge = torch.full((2, 4), 1e14)  # v_th clamps at 1e4: counts 1e10, beyond int32
    with pytest.raises(OverflowError, match="clamp="):
        spike_count_rows(huge, backend="triton")
    with pytest.raises(OverflowError):
        spike_count_rows(huge, backend="torch")
    clamped = spike_count_rows(huge, backend="triton", clamp=16).counts
    assert torch.equal(clamped, torch.full_like(clamped, 32767))
    for backend in ("triton", "torch"):  # the widest clamp saturates at int32's ends (no overflow error)
        widest = spike_count_rows(torch.cat([huge, -huge]), backend=backend, clamp=32).counts
        assert widest[:2].eq(2**31 - 1).all() and widest[2:].eq(-(2**31)).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_non_finite_input_is_an_error(bad, backend):
    x = torch.randn(3, 50)
    x[1, 7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        spike_count_rows(x, backend=backend)


@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        (dict(x=torch.randn(2, 4), k=0.0), "k", ValueError),
        (dict(x=torch.randn(2, 4), counts_dtype=torch.float32), "counts_dtype", TypeError),
        (dict(x=torch.randn(2, 4), backend="cuda"), "backend", ValueError),
        (dict(x=torch.randn(2, 4), return_stats=1), "return_stats", TypeError),
        (dict(x=torch.randn(2, 4), clamp=1), "clamp", ValueError),
        (dict(x=torch.tensor(1.0)), "at least one dimension", ValueError),
        (dict(x=torch.randn(2, 0)), "non-empty", ValueError),
        (dict(x=torch.randn(2, 4, dtype=torch.float64), backend="triton"), "float16, bfloat16 or float32", TypeError),
        (dict(x=torch.arange(4)), "x", TypeError),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match, error):
    with pytest.raises(error, match=match):
        spike_count_rows(**kwargs)


def test_reference_matches_spike_count_and_float64():
    x = heavy_tailed((3, 33), seed=1, dtype=torch.float64)
    counts, v_th = spike_count_rows_reference(x, 2.0, clamp=(-40, 40))
    ref_counts, ref_v_th = spike_count(x, 2.0, -1, (-40, 40))
    assert torch.equal(counts, ref_counts.to(torch.int32)) and torch.equal(v_th, ref_v_th.float())
    auto = spike_count_rows(x, 2.0, (-40, 40))  # auto on CPU: the reference
    assert torch.equal(auto.counts, counts)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096, 3584), (512, 18944), (16, 3584), (3, 1)])
def test_gpu_full_size(shape, dtype):
    torch.manual_seed(sum(shape))
    x = (torch.randn(shape, device="cuda") * 2).to(dtype)
    x[:, ::997] *= 60  # bursts past 127
    counts, v_th, stats = spike_count_rows(x, backend="triton", return_stats=True)
    assert counts.is_cuda
    assert_kernel_identities(x, counts=counts, v_th=v_th)
    assert_stats_equal(stats, spike_stats(counts=counts.cpu(), codec="ternary"))
    for clamp in (8, (-3, 100)):
        assert_kernel_identities(x, clamp=clamp)
    auto = spike_count_rows(x, backend="auto")
    assert torch.equal(auto.counts, counts)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_near_ties_and_every_16_bit_value(dtype):
    # Quotients on and next to n + 1/2 at model width, and every finite 16-bit value under many thresholds.
    x, k = near_ties(2048, 3584, seed=7, device="cuda")
    x = x.to(dtype)
    counts, v_th = spike_count_rows(x, k, backend="triton")
    assert torch.equal(counts.double(), torch.round(x.float() / v_th).double())
    if dtype == torch.float32:
        return
    # Every finite 16-bit value up to 2**64 (the row sums stay finite), one row per threshold: 4096 more
    # columns of a per-row size move each row's mean, hence v_th's mantissa; k moves its exponent.
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype).float()
    values = values[torch.isfinite(values) & (values.abs() <= 2.0**64)].to("cuda")
    ballast = torch.logspace(-4, 0, 512, device="cuda")[:, None] * values.abs().max()
    rows = torch.cat([values[None, :].expand(512, -1), ballast.expand(-1, 4096)], dim=1).to(dtype)
    mean = float(rows.float().abs().mean())
    for target in (1e-3, 1.0, 1e3):  # v_th around these values
        counts, v_th = spike_count_rows(rows, mean / target, clamp=32, backend="triton")
        assert float(v_th.min()) > target / 10 and float(v_th.max()) < target * 10
        assert torch.equal(counts.double(), torch.round(rows.float() / v_th).double().clamp(-(2**31), 2**31 - 1))


@pytest.mark.gpu
def test_gpu_errors_and_int8_counts():
    x = torch.randn(64, 256, device="cuda")
    x[5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        spike_count_rows(x, backend="triton")
    x[5, 3] = 1e5
    with pytest.raises(ValueError, match="counts_dtype"):
        spike_count_rows(x, backend="triton", counts_dtype=torch.int8)
    narrow = spike_count_rows(x, backend="triton", counts_dtype=torch.int16).counts
    assert narrow.dtype == torch.int16 and torch.equal(narrow.int(), spike_count_rows(x, backend="triton").counts)
