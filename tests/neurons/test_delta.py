"""Delta and sigma-delta encoders: event semantics, bounded error without drift, streaming."""

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sb_neurons import DeltaEncoder, SigmaDeltaEncoder
from strategies import names


def test_delta_fires_on_changes_of_at_least_threshold():
    x = torch.tensor([[0.0], [0.5], [0.55], [0.1], [0.1]])
    enc = DeltaEncoder(threshold=0.4)
    assert enc(x).flatten().tolist() == [0.0, 1.0, 0.0, -1.0, 0.0]
    on_only = DeltaEncoder(threshold=0.4, off_spike=False)
    assert on_only(x).flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_delta_padding_controls_the_first_step():
    x = torch.tensor([[1.0], [1.0]])
    assert DeltaEncoder(0.5)(x).flatten().tolist() == [1.0, 0.0]
    assert DeltaEncoder(0.5, padding=True)(x).flatten().tolist() == [0.0, 0.0]


@pytest.mark.parametrize("off_spike", [True, False])
@pytest.mark.parametrize("padding", [True, False])
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.05, 2.0))
def test_delta_matches_snntorch_spikegen_delta(off_spike, padding, seed, threshold):
    spikegen = pytest.importorskip("snntorch.spikegen")
    x = torch.randn(12, 2, 5, generator=torch.Generator().manual_seed(seed)).cumsum(0)
    ours = DeltaEncoder(threshold, off_spike=off_spike, padding=padding)(x)
    assert torch.equal(ours, spikegen.delta(x, threshold=threshold, padding=padding, off_spike=off_spike))


@given(seed=st.integers(0, 10_000), cut=st.integers(1, 19))
def test_encoders_stream_in_pieces(seed, cut):
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).cumsum(0)
    for make in (lambda: DeltaEncoder(0.3), lambda: SigmaDeltaEncoder(0.3)):
        whole = make()(x)
        enc = make()
        assert torch.equal(torch.cat([enc(x[:cut]), enc(x[cut:])]), whole)


@given(seed=st.integers(0, 10_000), threshold=st.floats(1e-3, 10.0), scale=st.floats(1e-2, 1e3))
def test_sigma_delta_error_bounded_at_every_step_of_long_sequences(seed, threshold, scale):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(2000, 4, generator=g, dtype=torch.float64) * scale).cumsum(0) / 10
    enc = SigmaDeltaEncoder(threshold)
    counts = enc(x)
    recon = enc.decode(counts, dtype=torch.float64)
    error = (recon - x).abs()
    slack = 1e-12 * float(x.abs().max() + threshold)  # one float rounding of the products
    assert bool((error <= threshold / 2 + slack).all())
    assert torch.equal(enc.level, counts.sum(0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@given(seed=st.integers(0, 10_000), threshold=st.floats(1e-2, 10.0))
def test_sigma_delta_error_bounded_in_low_precision(dtype, seed, threshold):
    """Low-precision input is encoded in float32: the bound gains one float32 rounding of x / threshold."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(500, 3, generator=g).cumsum(0) / 4).to(dtype)
    enc = SigmaDeltaEncoder(threshold)
    counts = enc(x)
    assert counts.dtype == torch.int64
    error = (enc.decode(counts, dtype=torch.float64) - x.double()).abs()
    slack = 2.0**-22 * (x.double().abs() + threshold)
    assert bool((error <= threshold / 2 + slack).all())


@given(seed=st.integers(0, 10_000), T=st.integers(1, 60))
@example(seed=1267, T=21)  # on the old 2^-20 grid a step hit a tie with an odd previous level
def test_sigma_delta_equals_its_residual_feedback_loop(seed, T):
    """The closed form L_t = round(x_t / threshold) is the feedback loop q_t = round((x_t - r_{t-1}) / threshold)
    wherever no x_t / threshold is a tie: half-to-even rounding is not shift-invariant there (round(2.5) - 1
    = 1, round(1.5) = 2), and the encoder's definition is the closed form."""
    threshold = 0.125  # a power of two and inputs on a 2^-21 grid keep every float step exact
    g = torch.Generator().manual_seed(seed)
    # k * 2^-20 + 2^-21: x / threshold = k * 2^-17 + 2^-18 never has the fractional part 1/2
    x = torch.round(torch.randn(T, 3, generator=g, dtype=torch.float64).cumsum(0) * 2**20) / 2**20 + 2.0**-21
    reconstruction = torch.zeros(3, dtype=torch.float64)
    expected = []
    for x_t in x:
        q = torch.round((x_t - reconstruction) / threshold)
        reconstruction = reconstruction + q * threshold
        expected.append(q.to(torch.int64))
    assert torch.equal(SigmaDeltaEncoder(threshold)(x), torch.stack(expected))


def test_sigma_delta_decode_continues_from_a_level():
    x = torch.randn(30, 4, dtype=torch.float64).cumsum(0)
    enc = SigmaDeltaEncoder(0.2)
    first = enc(x[:10])
    level = enc.level.clone()
    second = enc(x[10:])
    whole = enc.decode(torch.cat([first, second]), dtype=torch.float64)
    assert torch.equal(enc.decode(second, level=level, dtype=torch.float64), whole[10:])


@given(seed=st.integers(0, 10_000))
def test_sigma_delta_is_exact_on_integer_multiples(seed):
    threshold = 0.25  # a power of two: multiples are exact in float
    levels = torch.randint(-50, 50, (100, 5), generator=torch.Generator().manual_seed(seed))
    x = levels.to(torch.float64) * threshold
    enc = SigmaDeltaEncoder(threshold)
    counts = enc(x)
    assert torch.equal(enc.decode(counts, dtype=torch.float64), x)
    assert torch.equal(counts.cumsum(0), levels)


def _fed(encoder, x):
    """``encoder`` after encoding ``x``: it now carries state of ``x[0]``'s shape."""
    encoder(x)
    return encoder


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: DeltaEncoder(threshold=0), "threshold"),
        (lambda: SigmaDeltaEncoder(threshold=-1.0), "threshold"),
        (lambda: DeltaEncoder()(torch.tensor([1, 2])), "x"),
        (lambda: SigmaDeltaEncoder()(torch.tensor([float("inf")])), "x"),
        (lambda: SigmaDeltaEncoder().decode(torch.tensor([0.5])), "counts"),
        (lambda: SigmaDeltaEncoder().decode(torch.tensor([1]), dtype=torch.int32), "dtype"),
        (lambda: SigmaDeltaEncoder(1e-30)(torch.tensor([1e10])), "threshold"),
        (lambda: DeltaEncoder()(torch.ones(0, 3)), "x"),
        (lambda: _fed(DeltaEncoder(), torch.ones(2, 3))(torch.ones(2, 4)), "x"),
        (lambda: _fed(SigmaDeltaEncoder(), torch.ones(2, 3))(torch.ones(2, 1, 3)), "x"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()
