"""Spike statistics and the energy model: definitions, train == counts paths, merge, report figures."""

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons import CODEC_NAMES, SpikeStats, energy_estimate, get_codec, spike_stats
from strategies import int_counts, names


def test_hand_checked_ternary_stats():
    counts = torch.tensor([[0, 2, -1, 0], [3, 0, 0, -1]])
    stats = spike_stats(counts=counts, codec="ternary")
    assert stats.time_steps == 3
    assert stats.total_spikes == 7
    assert stats.firing_rate == pytest.approx(7 / (8 * 3))
    assert stats.sparsity == pytest.approx(1 - 7 / 24)
    assert stats.mean_spikes_per_channel == pytest.approx(7 / 8)
    assert stats.silent_channel_fraction == pytest.approx(4 / 8)
    assert stats.count_histogram.tolist() == [4, 2, 1, 1]
    assert stats.fraction_of_counts_at_most(1) == pytest.approx(6 / 8)


@pytest.mark.parametrize("name", CODEC_NAMES)
@given(data=st.data())
def test_stats_from_counts_equal_stats_of_the_train(name, data):
    codec = get_codec(name)
    counts = data.draw(int_counts(signed=codec.signed, max_abs=40))
    from_train = spike_stats(codec.encode(counts), codec=name)
    from_counts = spike_stats(counts=counts, codec=name)
    assert from_train.as_dict() == from_counts.as_dict()
    assert from_train.firing_rate == pytest.approx(float(codec.encode(counts).abs().sum()) / (counts.numel() * from_train.time_steps))


@given(int_counts(max_abs=20), int_counts(max_abs=20))
def test_merge_equals_stats_of_the_union(a, b):
    merged = spike_stats(counts=a).merge(spike_stats(counts=b))
    assert merged.total_spikes == int(a.abs().sum() + b.abs().sum())
    assert merged.num_channels == a.numel() + b.numel()
    union_hist = torch.bincount(torch.cat([a.flatten(), b.flatten()]).abs())
    assert merged.count_histogram.tolist() == union_hist.tolist()


@given(st.lists(int_counts(max_abs=20), min_size=0, max_size=4))
def test_accumulate_over_batches_equals_one_call_on_the_concatenation(batches):
    flat = [b.flatten() for b in batches]
    merged = SpikeStats.accumulate(spike_stats(counts=b, T=25) for b in flat)
    if not batches:
        assert merged.as_dict() == SpikeStats.empty().as_dict()
        return
    whole = spike_stats(counts=torch.cat(flat), T=25)
    assert merged.as_dict() == whole.as_dict()


@given(int_counts(max_abs=30), st.integers(0, 4))
def test_twos_complement_stats_at_any_T_match_the_train(counts, extra):
    codec = get_codec("bitwise_twos_complement")
    T = codec.min_steps(counts) + extra
    from_counts = spike_stats(counts=counts, T=T, codec=codec)
    assert from_counts.as_dict() == spike_stats(codec.encode(counts, T), T, codec).as_dict()


def test_train_without_codec_reads_unit_steps_and_as_dict_is_json():
    train = torch.tensor([[[1, 0, -1]], [[1, 0, 0]]], dtype=torch.int8)
    stats = spike_stats(train)
    assert (stats.time_steps, stats.num_elements, stats.total_spikes, stats.silent_channels) == (2, 3, 3, 1)
    assert stats.count_histogram.tolist() == [1, 1, 1]
    assert stats.sparsity == pytest.approx(0.5)
    assert json.loads(json.dumps(stats.as_dict()))["count_histogram"] == [1, 1, 1]


def test_energy_reproduces_the_report():
    estimate = energy_estimate(1.13)  # SpikingBrain-7B: 1.13 spikes per channel
    assert estimate.spiking_pj_per_mac == pytest.approx(1.13 * 0.03)
    assert round(estimate.spiking_pj_per_mac, 3) == 0.034
    # The report's percentages are these fractions cut to 0.1% (97.74% -> 97.7%, 85.26% -> 85.2%);
    # equivalently, its 85.2% is 1 - 0.034 / 0.23 from the rounded per-MAC energy.
    assert math.floor(estimate.saving_vs_fp16 * 1000) / 10 == 97.7
    assert math.floor(estimate.saving_vs_int8 * 1000) / 10 == 85.2
    assert round(1 - round(estimate.spiking_pj_per_mac, 3) / estimate.int8_pj_per_mac, 3) == 0.852
    assert estimate.total_pj(1000)["fp16"] == pytest.approx(1500.0)
    assert estimate.as_dict()["saving_vs_fp16"] == estimate.saving_vs_fp16


def test_energy_from_stats_uses_spikes_per_channel():
    stats = spike_stats(counts=torch.tensor([1, 0, -2, 1]), codec="ternary")
    assert energy_estimate(stats).spiking_pj_per_mac == pytest.approx(1.0 * 0.03)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spike_stats(), "exactly one"),
        (lambda: spike_stats(torch.zeros(2, 2), counts=torch.zeros(2)), "exactly one"),
        (lambda: spike_stats(counts=torch.tensor([5]), T=2), "T"),
        (lambda: spike_stats(counts=torch.tensor([0.5])), "counts"),
        (lambda: spike_stats(counts=torch.tensor([-1]), codec="binary"), "counts"),
        (lambda: spike_stats(torch.ones(3, 2), T=2), "T"),
        (lambda: spike_stats(torch.full((3, 2), 2)), "x"),
        (lambda: spike_stats(torch.ones(3, 2), codec="octal"), "codec"),
        (lambda: SpikeStats.empty().merge({}), "other"),
        (lambda: energy_estimate("1.13"), "stats"),
        (lambda: energy_estimate(float("nan")), "stats"),
        (lambda: energy_estimate(-1.0), "stats"),
        (lambda: energy_estimate(1.0, add_pj=0), "add_pj"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()


@given(counts=st.lists(st.integers(-300, 300), min_size=1, max_size=50), burst=st.sampled_from([0, 2**21, -(2**21 + 5)]),
       codec=st.sampled_from(["ternary", "bitwise_bidirectional", "bitwise_twos_complement"]))
def test_statistics_of_counts_equal_those_of_their_train(counts, burst, codec):
    """The counts path tallies values (a bincount, or a sort when a burst spans more than HISTOGRAM_SPAN
    values) and equals the statistics of the expanded train; check=False gives the same figures."""
    c = torch.tensor(counts + ([burst] if burst else []), dtype=torch.int64)
    from_counts = spike_stats(counts=c, codec=codec)
    assert spike_stats(counts=c.double(), codec=codec, check=False).as_dict() == from_counts.as_dict()
    if codec != "ternary" or not burst:  # a ternary train of a 2**21 burst has 2**21 steps
        assert spike_stats(get_codec(codec).encode(c), codec=codec).as_dict() == from_counts.as_dict()
    assert from_counts.num_channels == c.numel()
    assert int(from_counts.count_histogram.sum()) == c.numel()


@given(calls=st.lists(st.lists(st.integers(-300, 300), min_size=0, max_size=30), min_size=1, max_size=4),
       burst=st.sampled_from([0, 2**21]), codec=st.sampled_from(["ternary", "bitwise_bidirectional", "bitwise_twos_complement"]))
def test_count_tally_equals_the_merge_of_each_calls_statistics(calls, burst, codec):
    """A recording layer's tally, summarized when read, equals spike_stats of each call merged (each call
    with its own T), through the bincount path, the sort path of a far burst and two's complement."""
    from sb_neurons.stats import CountTally

    tally, want = CountTally(codec), SpikeStats.empty()
    for i, call in enumerate(calls):
        c = torch.tensor(call + ([burst] if burst and i == 0 else []), dtype=torch.float32)
        tally.add(c)
        if c.numel():
            want = want.merge(spike_stats(counts=c, codec=codec))
    assert tally.stats().as_dict() == want.as_dict()
