"""Spike codecs: exact round trips, event-driven matmul identity, step counts, errors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons import CODEC_NAMES, get_codec, spike_count, spike_train_matmul
from strategies import float_tensors, int_counts, names

SIGNED = [n for n in CODEC_NAMES if get_codec(n).signed]
UNSIGNED = [n for n in CODEC_NAMES if not get_codec(n).signed]


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(data=st.data())
def test_decode_inverts_encode(name, data):
    codec = get_codec(name)
    counts = data.draw(int_counts(signed=codec.signed))
    extra = data.draw(st.integers(0, 3))
    for T in (None, codec.min_steps(counts) + extra):
        train = codec.encode(counts, T)
        assert train.dtype == torch.int8
        assert train.shape == (T or codec.min_steps(counts),) + counts.shape
        assert torch.equal(codec.decode(train), counts)


BITWISE = [n for n in CODEC_NAMES if get_codec(n).bitwise]


@pytest.mark.parametrize("name", BITWISE)
@given(seed=st.integers(0, 2**31 - 1), bits=st.integers(1, 61), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_bitwise_round_trip_up_to_the_int64_limit(name, seed, bits, shape):
    """Bitwise codecs carry counts of any magnitude their 62 int64 steps allow, not just small ones."""
    codec = get_codec(name)
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(-(2**bits) if codec.signed else 0, 2**bits, tuple(shape), generator=g, dtype=torch.int64)
    counts.view(-1)[0] = 2**bits - 1  # the largest magnitude of this width is always present
    train = codec.encode(counts)
    assert train.shape[0] == codec.min_steps(counts) <= 62
    assert torch.equal(codec.decode(train), counts)


@pytest.mark.parametrize(
    "name, count",
    [("bitwise", 2**62), ("bitwise_bidirectional", -(2**62)), ("bitwise_twos_complement", 2**61),
     ("bitwise_twos_complement", -(2**61) - 1), ("ternary", -(2**63))],
)
def test_counts_past_the_int64_step_limit_raise_instead_of_wrapping(name, count):
    codec = get_codec(name)
    with pytest.raises(ValueError, match=r"\bT must be <= 62|\bcounts must be > -2\^63"):
        codec.encode(torch.tensor([count]))


@pytest.mark.parametrize("name", BITWISE)
def test_bitwise_T_beyond_62_is_refused_by_encode_as_by_decode(name):
    codec = get_codec(name)
    for call in (lambda: codec.encode(torch.tensor([5]), T=63), lambda: codec.spikes_per_element(torch.tensor([5]), T=63)):
        with pytest.raises(ValueError, match=r"\bT must be <= 62"):
            call()
    assert torch.equal(codec.decode(codec.encode(torch.tensor([5]), T=62)), torch.tensor([5]))


def test_float_counts_beyond_int64_raise():
    with pytest.raises(ValueError, match=r"\bcounts must lie within int64"):
        get_codec("ternary").min_steps(torch.tensor([1e30]))


@given(int_counts(signed=True))
def test_bidirectional_and_twos_complement_agree(counts):
    a, b = get_codec("bitwise_bidirectional"), get_codec("bitwise_twos_complement")
    assert torch.equal(a.decode(a.encode(counts)), b.decode(b.encode(counts)))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ternary", [[-1], [-1], [-1], [-1], [-1]]),
        ("bitwise_bidirectional", [[-1], [0], [-1]]),
        ("bitwise_twos_complement", [[1], [0], [1], [1]]),  # -8 + 2 + 1
    ],
)
def test_minus_five(name, expected):
    train = get_codec(name).encode(torch.tensor([-5]))
    assert train.tolist() == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("binary", [[1]] * 5),
        ("ternary", [[1]] * 5),
        ("bitwise", [[1], [0], [1]]),
        ("bitwise_bidirectional", [[1], [0], [1]]),
        ("bitwise_twos_complement", [[0], [1], [0], [1]]),  # a clear sign bit first
    ],
)
def test_plus_five(name, expected):
    assert get_codec(name).encode(torch.tensor([5])).tolist() == expected


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(data=st.data())
def test_spikes_per_element_counts_the_nonzero_steps(name, data):
    codec = get_codec(name)
    counts = data.draw(int_counts(signed=codec.signed, max_abs=50))
    T = codec.min_steps(counts) + data.draw(st.integers(0, 3))
    train = codec.encode(counts, T)
    assert torch.equal(codec.spikes_per_element(counts, T), (train != 0).sum(0))
    assert set(train.unique().tolist()) <= set(codec.spike_values)


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(data=st.data())
def test_min_steps_is_minimal(name, data):
    codec = get_codec(name)
    counts = data.draw(int_counts(signed=codec.signed))
    T = codec.min_steps(counts)
    floor = 2 if name == "bitwise_twos_complement" else 1
    if T > floor:
        with pytest.raises(ValueError, match="T"):
            codec.encode(counts, T - 1)


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(data=st.data())
def test_event_driven_matmul_is_exact_in_integers(name, data):
    codec = get_codec(name)
    counts = data.draw(int_counts(signed=codec.signed, max_abs=60))
    n_out = data.draw(st.integers(1, 5))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    weight = torch.randint(-128, 128, (n_out, counts.shape[-1]), generator=g).to(torch.float64)
    train = codec.encode(counts)
    assert torch.equal(spike_train_matmul(train, weight, name), counts.to(torch.float64) @ weight.T)


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0), st.sampled_from(CODEC_NAMES))
def test_event_driven_projection_equals_single_step(x, k, name):
    if not get_codec(name).signed:
        x = x.abs()  # unsigned codecs carry non-negative activations (e.g. after ReLU)
    counts, v_th = spike_count(x, k)
    weight = torch.randn(3, x.shape[-1], dtype=torch.float64)
    spiking = v_th * spike_train_matmul(get_codec(name).encode(counts), weight, name)
    single_step = (counts * v_th) @ weight.T
    torch.testing.assert_close(spiking, single_step, rtol=1e-12, atol=1e-9)


def test_zero_counts_take_one_step():
    for name in CODEC_NAMES:
        codec = get_codec(name)
        zeros = torch.zeros(3, dtype=torch.int64)
        assert codec.min_steps(zeros) == (2 if name == "bitwise_twos_complement" else 1)
        assert not codec.encode(zeros).any()


def test_float_counts_from_spike_count_are_accepted():
    counts, _ = spike_count(torch.randn(4, 16))
    codec = get_codec("ternary")
    assert torch.equal(codec.decode(codec.encode(counts)), counts.to(torch.int64))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: get_codec("quaternary"), "codec"),
        (lambda: get_codec("binary").encode(torch.tensor([-1, 2])), "counts"),
        (lambda: get_codec("bitwise").encode(torch.tensor([-3])), "counts"),
        (lambda: get_codec("ternary").encode(torch.tensor([1.5])), "counts"),
        (lambda: get_codec("ternary").encode(torch.tensor([float("nan")])), "counts"),
        (lambda: get_codec("ternary").encode(torch.tensor([7]), T=6), "T"),
        (lambda: get_codec("bitwise").encode(torch.tensor([8]), T=3), "T"),
        (lambda: get_codec("ternary").encode(torch.tensor([1]), T=0), "T"),
        (lambda: get_codec("binary").decode(torch.tensor([[-1]])), "train"),
        (lambda: get_codec("ternary").decode(torch.tensor([[2]])), "train"),
        (lambda: spike_train_matmul(torch.ones(2, 3, dtype=torch.int8), torch.ones(4, 5), "ternary"), "train"),
        (lambda: spike_train_matmul(torch.full((2, 3), 2, dtype=torch.int8), torch.ones(4, 3), "ternary"), "train"),
        (lambda: spike_train_matmul(torch.ones(2, 3, dtype=torch.int8), torch.ones(4, 3, dtype=torch.int64), "binary"), "weight"),
        (lambda: get_codec("bitwise").step_weights(63), "T"),
        (lambda: get_codec("bitwise").spikes_per_element(torch.tensor([9]), T=3), "T"),
        (lambda: get_codec("ternary").encode([1, 2]), "counts"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()
