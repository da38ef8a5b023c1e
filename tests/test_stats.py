"""Spike statistics and the energy model: definitions, train == counts paths, merge, report figures."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons import CODEC_NAMES, energy_estimate, get_codec, spike_stats
from strategies import int_counts


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


def test_energy_reproduces_the_report():
    estimate = energy_estimate(1.13)
    assert estimate.spiking_pj_per_mac == pytest.approx(0.034, abs=5e-4)
    assert estimate.saving_vs_fp16 == pytest.approx(0.977, abs=1e-3)
    assert estimate.saving_vs_int8 == pytest.approx(0.852, abs=2e-3)
    assert estimate.total_pj(1000)["fp16"] == pytest.approx(1500.0)


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
        (lambda: energy_estimate(-1.0), "stats"),
        (lambda: energy_estimate(1.0, add_pj=0), "add_pj"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
