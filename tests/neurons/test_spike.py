"""Adaptive-threshold spike counting (Eq. 19-21): bounds, rounding rule, clamp, gradient, errors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons import (
    V_TH_MAX,
    V_TH_MIN,
    AdaptiveThresholdSpike,
    adaptive_threshold,
    clamped_mask,
    resolve_clamp,
    spike_count,
    spike_quantize,
)
from strategies import float_tensors, names

ks = st.floats(0.25, 16.0)


@given(float_tensors(), ks)
def test_threshold_is_mean_abs_over_k_clamped(x, k):
    v_th = adaptive_threshold(x, k)
    expected = (x.abs().mean(-1, keepdim=True) / k).clamp(V_TH_MIN, V_TH_MAX)
    assert v_th.shape == x.shape[:-1] + (1,)
    torch.testing.assert_close(v_th, expected, rtol=0, atol=0)


@given(float_tensors(), ks)
def test_counts_are_integers_within_half_threshold(x, k):
    counts, v_th = spike_count(x, k)
    assert torch.equal(counts, torch.round(counts))
    # |v_th * counts - x| <= v_th / 2 (the float64 product adds at most one rounding of slack)
    error = (counts * v_th - x).abs()
    assert bool((error <= v_th / 2 * (1 + 1e-12)).all())


@given(float_tensors(), ks)
def test_counts_round_half_to_even(x, k):
    counts, v_th = spike_count(x, k)
    assert torch.equal(counts, torch.round(x / v_th))


def test_ties_round_to_even():
    # mean |x| = 12.5 / 8 = 1.5625 = k gives v_th = 1 exactly, so x / v_th are exact ties
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.0]], dtype=torch.float64)
    counts, v_th = spike_count(x, k=1.5625)
    assert v_th.item() == 1.0
    assert counts.tolist() == [[0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 4.0, 0.0]]


@given(float_tensors(), ks, st.integers(2, 6))
def test_clamp_bounds_counts_and_mask_reports_it(x, k, bits):
    low, high = resolve_clamp(bits)
    counts, v_th = spike_count(x, k, clamp=bits)
    assert bool(((counts >= low) & (counts <= high)).all())
    mask = clamped_mask(x, k, clamp=bits)
    free, _ = spike_count(x, k)
    assert torch.equal(mask, (free < low) | (free > high))
    assert torch.equal(counts[~mask], free[~mask])
    # Unclamped elements keep the half-threshold bound; clamped ones sit on a bound, their error at least
    # that (equal at a rounding tie: x / v_th = high + 1/2 rounds to even high + 1, then clamps to high).
    error = (counts * v_th - x).abs()
    v_th_full = v_th.expand_as(x)
    assert bool((error[~mask] <= v_th_full[~mask] / 2 * (1 + 1e-12)).all())
    assert bool(((counts[mask] == low) | (counts[mask] == high)).all())
    assert bool((error[mask] >= v_th_full[mask] / 2 * (1 - 1e-12)).all())
    torch.testing.assert_close(error[mask], (x - torch.where(x > 0, high, low) * v_th_full)[mask].abs())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_threshold_clamps_like_the_release(dtype):
    """v_th is clamped to [1e-5, 1e4]: an all-zero row gives zero counts (no 0/0), a huge row saturates."""
    x = torch.zeros(3, 8, dtype=dtype)
    x[1] = 1e-9 if dtype == torch.float64 else 0.0
    x[2] = 6e4 if dtype == torch.float16 else 3e5
    counts, v_th = spike_count(x, k=3.0)
    assert v_th[0].item() == pytest.approx(V_TH_MIN) and v_th[1].item() == pytest.approx(V_TH_MIN)
    assert v_th[2].item() == pytest.approx(V_TH_MAX)
    assert not counts[:2].any() and bool(torch.isfinite(counts).all())
    assert torch.equal(counts[2], torch.round(x[2].to(counts.dtype) / v_th[2]))


def test_clamp_is_never_applied_unless_asked():
    x = torch.zeros(1, 64, dtype=torch.float64)
    x[0, 0] = 1000.0  # one outlier: its count is about k * 64, far past 127
    counts, _ = spike_count(x, k=3.0)
    assert counts[0, 0] == 192
    assert not clamped_mask(x, 3.0).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@given(x=float_tensors(scale=(1e-2, 1e2)), k=ks)
def test_low_precision_inputs_compute_in_float32(dtype, x, k):
    """Counts and v_th are float32 for float16/bfloat16/float32 input; spike_quantize keeps x's dtype."""
    x = x.to(dtype)
    counts, v_th = spike_count(x, k)
    assert counts.dtype == torch.float32 and v_th.dtype == torch.float32
    torch.testing.assert_close(v_th, adaptive_threshold(x.float(), k), rtol=0, atol=0)
    assert torch.equal(counts, torch.round(x.float() / v_th))
    assert bool(((counts * v_th - x.float()).abs() <= v_th / 2 * (1 + 1e-6)).all())
    quantized = spike_quantize(x, k)
    assert quantized.dtype == dtype
    assert torch.equal(quantized, (counts * v_th).to(dtype))


@given(float_tensors(), ks, st.one_of(st.none(), st.integers(2, 5)))
def test_straight_through_gradient_is_identity_where_unclamped(x, k, bits):
    x = x.clone().requires_grad_(True)
    y = spike_quantize(x, k, clamp=bits)
    weights = torch.randn_like(x)
    (y * weights).sum().backward()
    inside = ~clamped_mask(x.detach(), k, clamp=bits)
    torch.testing.assert_close(x.grad[inside], weights[inside])
    assert bool((x.grad[~inside] == 0).all())


def test_module_matches_function_and_dims():
    x = torch.randn(2, 3, 8)
    layer = AdaptiveThresholdSpike(k=2.0, dim=(-2, -1))
    counts, v_th = layer.encode(x)
    assert v_th.shape == (2, 1, 1)
    torch.testing.assert_close(layer(x), (counts * v_th).to(x.dtype))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spike_count(torch.tensor([[1.0, float("nan")]])), "x"),
        (lambda: spike_count(torch.tensor([[1.0, float("inf")]])), "x"),
        (lambda: spike_count(torch.tensor([[1, 2]])), "x"),
        (lambda: spike_count(torch.ones(2, 2), k=0.0), "k"),
        (lambda: spike_count(torch.ones(2, 2), k=-1.0), "k"),
        (lambda: spike_count(torch.ones(2, 2), dim=3), "dim"),
        (lambda: spike_count(torch.ones(2, 2), clamp=1), "clamp"),
        (lambda: spike_count(torch.ones(2, 2), clamp=(1, 5)), "clamp"),
        (lambda: spike_count([1.0, 2.0]), "x"),
        (lambda: AdaptiveThresholdSpike(dim="last"), "dim"),
        (lambda: AdaptiveThresholdSpike(dim=(1, 1)), "dim"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()
