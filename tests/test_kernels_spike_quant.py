"""sb_kernels.spike_quantize: the fused Triton kernel against sb_neurons.spike_count.

Identities: ``counts == round(x.float() / v_th)`` bit for bit given the kernel's ``v_th`` (IEEE division,
half to even); ``v_th`` equals the reference's up to float32 summation order; wherever the two ``v_th``
agree the counts equal the reference's; the statistics equal ``sb_neurons.spike_stats`` of the counts.
CPU tests run the kernel in Triton's interpreter at small sizes; ``gpu`` tests compile it at model sizes.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kernel_testing import CUDA, heavy_tailed, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import spike_quantize, spike_quantize_reference
from sb_kernels import spike_quant as sq
from sb_neurons import spike_count, spike_stats

DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# Triton's interpreter multiplies NaN/Inf rows on purpose (the error-path tests): numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def assert_kernel_identities(x, k=3.0, clamp=None, counts=None, v_th=None):
    """The kernel's counts/v_th satisfy its documented identities against the float reference."""
    if counts is None:
        counts, v_th = spike_quantize(x, k, clamp, backend="triton")
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


@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 5),
    width=st.integers(1, 300),
    scale=st.sampled_from([1e-7, 1e-3, 1.0, 1e3, 1e6]),
    k=st.floats(0.25, 8.0),
    dtype=st.sampled_from(DTYPES),
    clamp=st.sampled_from([None, 2, 8, (-3, 300), (0, 5)]),
)
def test_counts_round_x_over_the_kernel_threshold_exactly(seed, rows, width, scale, k, dtype, clamp):
    scale = min(scale, 10.0) if dtype == torch.float16 else scale  # heavy tails reach 100x: stay under 65504
    x = heavy_tailed((rows, width), seed, scale, dtype)
    assert_kernel_identities(x, k, clamp)


def test_half_way_ties_round_to_even():
    # k = mean |x| makes v_th = 1 exactly, so x / v_th = x and every .5 is a tie.
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 4.0]])
    k = float(x.abs().mean())
    counts, v_th = spike_quantize(x, k, backend="triton")
    assert float(v_th) == 1.0
    assert counts.tolist() == [[0, 2, 2, 0, -2, -2, 4, 4]]


def test_bursts_past_127_are_exact_and_unbounded():
    # |count| <= k * D + 1/2: a large k lets a 200-wide row reach past int16.
    x = torch.randn(4, 200)
    x[:, 3] = 5000.0
    x[2, 5] = 3e6
    counts, v_th = spike_quantize(x, 300.0, backend="triton")
    assert int(counts.abs().max()) > 32767 and int(counts[0].abs().max()) > 127
    assert_kernel_identities(x, 300.0, counts=counts, v_th=v_th)


def test_counts_dtype_narrow_and_checked():
    x = torch.randn(3, 64)
    wide, _ = spike_quantize(x, backend="triton")
    for dtype in (torch.int8, torch.int16):
        narrow, _ = spike_quantize(x, backend="triton", counts_dtype=dtype)
        assert narrow.dtype == dtype and torch.equal(narrow.to(torch.int32), wide)
    x[1, 0] = 1e4
    with pytest.raises(ValueError, match="counts_dtype"):
        spike_quantize(x, backend="triton", counts_dtype=torch.int8)
    assert spike_quantize(x, backend="triton", counts_dtype=torch.int8, clamp=8).counts.dtype == torch.int8


def test_long_rows_take_the_two_pass_path(monkeypatch):
    # Shrink the single-pass limit so the chunked loop runs at an interpreter-friendly size.
    monkeypatch.setattr(sq, "SINGLE_PASS_MAX", 64)
    monkeypatch.setattr(sq, "CHUNK", 32)
    x = heavy_tailed((3, 150), seed=4, scale=2.0)
    counts, v_th, stats = spike_quantize(x, backend="triton", return_stats=True, clamp=(-200, 200))
    assert_kernel_identities(x, clamp=(-200, 200), counts=counts, v_th=v_th)
    assert_stats_equal(stats, spike_stats(counts=counts, codec="ternary"))


def assert_stats_equal(got, want):
    for name in ("time_steps", "num_channels", "total_spikes", "spike_slots", "silent_channels"):
        assert getattr(got, name) == getattr(want, name), name
    assert torch.equal(got.count_histogram, want.count_histogram)


@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 4), width=st.integers(1, 200),
       burst=st.sampled_from([0.0, 200.0, 5e4]))
def test_stats_in_the_same_pass_equal_spike_stats(seed, rows, width, burst):
    x = heavy_tailed((rows, width), seed)
    if burst:
        x[0, 0] = burst * x.abs().mean()
    counts, v_th, stats = spike_quantize(x, backend="triton", return_stats=True)
    assert_stats_equal(stats, spike_stats(counts=counts, codec="ternary"))
    ref = spike_quantize(x, backend="torch", return_stats=True)
    assert ref.stats.num_channels == stats.num_channels


def test_shapes_strides_and_empty_rows():
    x = torch.randn(6, 3, 40).transpose(0, 1)  # non-contiguous [3, 6, 40]
    counts, v_th = spike_quantize(x, backend="triton")
    assert counts.shape == (3, 6, 40) and v_th.shape == (3, 6, 1)
    assert_kernel_identities(x, counts=counts, v_th=v_th)
    strided = torch.randn(4, 80)[:, ::2]  # last-dim stride 2
    assert_kernel_identities(strided)
    empty = spike_quantize(torch.randn(0, 7), backend="triton")
    assert empty.counts.shape == (0, 7) and empty.v_th.shape == (0, 1)
    one = torch.tensor([-2.0])
    assert spike_quantize(one, backend="triton").counts.tolist() == [-3]


def test_threshold_clamps_and_overflow():
    tiny = torch.full((1, 8), 1e-9)  # v_th clamps at 1e-5: counts 0
    counts, v_th = spike_quantize(tiny, backend="triton")
    assert float(v_th) == pytest.approx(1e-5) and not counts.any()
    huge = torch.full((2, 4), 1e14)  # v_th clamps at 1e4: counts 1e10, beyond int32
    with pytest.raises(OverflowError, match="clamp="):
        spike_quantize(huge, backend="triton")
    with pytest.raises(OverflowError):
        spike_quantize(huge, backend="torch")
    clamped = spike_quantize(huge, backend="triton", clamp=16).counts
    assert torch.equal(clamped, torch.full_like(clamped, 32767))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_non_finite_input_is_an_error(bad, backend):
    x = torch.randn(3, 50)
    x[1, 7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        spike_quantize(x, backend=backend)


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
        spike_quantize(**kwargs)


def test_reference_matches_spike_count_and_float64():
    x = heavy_tailed((3, 33), seed=1, dtype=torch.float64)
    counts, v_th = spike_quantize_reference(x, 2.0, clamp=(-40, 40))
    ref_counts, ref_v_th = spike_count(x, 2.0, -1, (-40, 40))
    assert torch.equal(counts, ref_counts.to(torch.int32)) and torch.equal(v_th, ref_v_th.float())
    auto = spike_quantize(x, 2.0, (-40, 40))  # auto on CPU: the reference
    assert torch.equal(auto.counts, counts)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096, 3584), (512, 18944), (16, 3584), (3, 1)])
def test_gpu_full_size(shape, dtype):
    torch.manual_seed(sum(shape))
    x = (torch.randn(shape, device="cuda") * 2).to(dtype)
    x[:, ::997] *= 60  # bursts past 127
    counts, v_th, stats = spike_quantize(x, backend="triton", return_stats=True)
    assert counts.is_cuda
    assert_kernel_identities(x, counts=counts, v_th=v_th)
    assert_stats_equal(stats, spike_stats(counts=counts.cpu(), codec="ternary"))
    for clamp in (8, (-3, 100)):
        assert_kernel_identities(x, clamp=clamp)
    auto = spike_quantize(x, backend="auto")
    assert torch.equal(auto.counts, counts)


@pytest.mark.gpu
def test_gpu_errors_and_int8_counts():
    x = torch.randn(64, 256, device="cuda")
    x[5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        spike_quantize(x, backend="triton")
    x[5, 3] = 1e5
    with pytest.raises(ValueError, match="counts_dtype"):
        spike_quantize(x, backend="triton", counts_dtype=torch.int8)
    narrow = spike_quantize(x, backend="triton", counts_dtype=torch.int16).counts
    assert narrow.dtype == torch.int16 and torch.equal(narrow.int(), spike_quantize(x, backend="triton").counts)
