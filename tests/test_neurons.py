"""Multi-step adaptive neurons: collapse to Eq. 21, step-mode equivalence, streaming, surrogates."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_neurons import (
    ATan,
    AdaptiveIFNode,
    AdaptiveLIFNode,
    Sigmoid,
    get_surrogate,
    multistep_neuron_forward,
    spike_count,
)
from strategies import float_tensors


def neuron_count_rule(x, v_th):
    """floor(x / v_th + 1/2): what the rounding neuron emits (round half up)."""
    return torch.floor(x / v_th + 0.5)


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0))
def test_collapse_input_at_first_step(x, k):
    counts, v_th = spike_count(x, k)
    expected = neuron_count_rule(x, v_th)
    T = int(expected.abs().max()) + 1
    x_seq = torch.zeros((T,) + x.shape, dtype=x.dtype)
    x_seq[0] = x
    spikes, _ = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    assert torch.equal(spikes.sum(0), expected)
    not_tie = (x / v_th - torch.floor(x / v_th)) != 0.5
    assert torch.equal(spikes.sum(0)[not_tie], counts[not_tie])


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0), st.integers(0, 4))
def test_collapse_input_spread_evenly(x, k, extra_steps):
    counts, v_th = spike_count(x, k)
    # every step's input must lie in [-v_th, v_th): T > max |x| / v_th
    T = int(torch.floor((x.abs() / v_th).max())) + 1 + extra_steps
    x_seq = (x / T).expand((T,) + x.shape).clone()
    spikes, u_seq = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    net = spikes.sum(0)
    # the residual potential stays in [-v_th/2, v_th/2) and equals x - v_th * net
    assert bool((u_seq[-1] >= -v_th / 2 - 1e-9).all() and (u_seq[-1] < v_th / 2 + 1e-9).all())
    torch.testing.assert_close(u_seq[-1], x - v_th * net, rtol=0, atol=1e-9 * float(x.abs().max() + 1))
    far_from_tie = ((x / v_th - torch.floor(x / v_th)) - 0.5).abs() > 1e-6
    assert torch.equal(net[far_from_tie], counts[far_from_tie])


def test_without_rounding_the_neuron_floors_and_unsigned_cannot_go_negative():
    x = torch.tensor([[2.9, -2.9, 0.6]], dtype=torch.float64)
    v_th = torch.tensor([[1.0]], dtype=torch.float64)
    x_seq = torch.zeros(5, 1, 3, dtype=torch.float64)
    x_seq[0] = x
    floor_spikes, _ = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True)
    assert floor_spikes.sum(0).tolist() == [[2.0, -2.0, 0.0]]
    unsigned, _ = multistep_neuron_forward(x_seq, v_th, 0.5)
    assert unsigned.sum(0).tolist() == [[3.0, 0.0, 1.0]]  # v_init = v_th/2 rounds non-negative inputs


NODE_CONFIGS = [
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold="first_step")),
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold=0.7, reset="hard", v_reset=-0.1)),
    dict(cls=AdaptiveLIFNode, kwargs=dict(decay=0.7, threshold="first_step", signed=True, rounding=True)),
    dict(cls=AdaptiveLIFNode, kwargs=dict(decay=0.4, threshold=0.5, homeostasis=(0.05, 0.2))),
]


@pytest.mark.parametrize("config", NODE_CONFIGS, ids=lambda c: c["cls"].__name__ + str(sorted(c["kwargs"])))
@given(seed=st.integers(0, 10_000), T=st.integers(1, 12), cut=st.integers(0, 12))
def test_single_step_loop_equals_multi_step_and_pieces(config, seed, T, cut):
    x = torch.randn(T, 3, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    node = config["cls"](step_mode="m", **config["kwargs"])
    whole = node(x)
    node.reset()
    node.step_mode = "s"
    loop = torch.stack([node(x_t) for x_t in x])
    assert torch.equal(whole, loop)
    node.reset()
    node.step_mode = "m"
    cut = min(cut, T - 1)
    pieces = torch.cat([node(x[: cut + 1]), node(x[cut + 1 :])]) if cut + 1 < T else node(x)
    assert torch.equal(whole, pieces)


def test_total_threshold_uses_the_whole_drive_and_refuses_single_step():
    x = torch.randn(6, 2, 16, dtype=torch.float64)
    node = AdaptiveIFNode(k=2.0, threshold="total", step_mode="m")
    node(x)
    torch.testing.assert_close(node.v_th, x.sum(0).abs().mean(-1, keepdim=True) / 2.0)
    with pytest.raises(ValueError, match="reset"):
        node(x)
    node.reset()
    node.step_mode = "s"
    with pytest.raises(ValueError, match="threshold='total'"):
        node(x[0])


def test_homeostasis_moves_threshold_toward_target_rate():
    node = AdaptiveIFNode(threshold=0.05, homeostasis=(0.05, 0.1), step_mode="m")
    x = torch.full((50, 1, 32), 0.2)  # strong drive: fires every step at first
    spikes = node(x)
    assert float(node.v_th.min()) > 0.05
    assert spikes[-10:].abs().mean() < spikes[:10].abs().mean()


def test_gradients_reach_input_decay_and_threshold():
    node = AdaptiveLIFNode(decay=0.6, threshold=0.3, learn_decay=True, learn_threshold=True, step_mode="m")
    x = torch.randn(8, 4, 10, requires_grad=True)
    node(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert node.decay_logit.grad is not None and torch.isfinite(node.decay_logit.grad)
    assert node.fixed_threshold.grad is not None and torch.isfinite(node.fixed_threshold.grad)
    assert 0.0 < float(node.decay.detach()) < 1.0


@pytest.mark.parametrize("surrogate", [Sigmoid(), ATan(), Sigmoid(alpha=50.0), ATan(alpha=0.1)])
@given(values=st.lists(st.floats(-1e30, 1e30, allow_nan=False), min_size=1, max_size=20))
def test_surrogate_forward_is_heaviside_and_gradient_finite(surrogate, values):
    x = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    y = surrogate(x)
    assert torch.equal(y, (x >= 0).float())
    y.sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and bool((x.grad >= 0).all())
    torch.testing.assert_close(x.grad, surrogate.derivative(x.detach()))


def test_surrogate_peaks():
    assert float(Sigmoid(4.0).derivative(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(ATan(2.0).derivative(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(ATan(2.0).derivative(torch.tensor(1.0))) == pytest.approx(1.0 / (1 + math.pi**2))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: AdaptiveIFNode(k=0), "k"),
        (lambda: AdaptiveIFNode(threshold="mean"), "threshold"),
        (lambda: AdaptiveIFNode(threshold=-1.0), "threshold"),
        (lambda: AdaptiveIFNode(reset="partial"), "reset"),
        (lambda: AdaptiveIFNode(step_mode="x"), "step_mode"),
        (lambda: AdaptiveLIFNode(decay=1.5), "decay"),
        (lambda: AdaptiveIFNode(threshold="first_step", learn_threshold=True), "learn_threshold"),
        (lambda: AdaptiveIFNode(step_mode="m")(torch.ones(3, 2, dtype=torch.int64)), "x_seq"),
        (lambda: AdaptiveIFNode(step_mode="m")(torch.tensor([[[float("nan")]]])), "x_seq"),
        (lambda: get_surrogate("relu"), "surrogate"),
        (lambda: Sigmoid(alpha=0), "alpha"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
