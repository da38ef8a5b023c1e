"""Multi-step adaptive neurons: reference dynamics, collapse to Eq. 21, step modes, streaming, surrogates."""

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sb_neurons import (
    ATan,
    AdaptiveIFNode,
    AdaptiveLIFNode,
    Sigmoid,
    adaptive_threshold,
    first_input_threshold,
    get_surrogate,
    multistep_neuron_forward,
    pending_threshold,
    spike_count,
)
from strategies import float_tensors, names


def half_up(x, v_th):
    """floor(x / v_th + 1/2): the count the rounding neuron emits (round half up)."""
    return torch.floor(x / v_th + 0.5)


def near_a_tie(x, v_th, steps):
    """Where ``x / v_th`` lies within rounding of a tie ``n + 1/2``: there the neuron (subtracting ``v_th``
    step by step, ``steps`` roundings) and the rounded quotient may each land on either neighbour."""
    quotient = x / v_th
    eps = torch.finfo(x.dtype).eps
    return ((quotient - torch.floor(quotient)) - 0.5).abs() <= (steps + 2) * eps * (quotient.abs() + 1)


def scalar_reference(xs, v_th, v_init, decay, reset_mode, signed, v_reset, rounding):
    """The documented update order, one scalar neuron, plain Python floats."""
    theta = v_th / 2 if rounding else v_th
    u, spikes, states = v_init, [], []
    for x in xs:
        v = u + x
        if v >= theta:
            s = 1.0
        elif signed and (v < -theta if rounding else v <= -theta):
            s = -1.0
        else:
            s = 0.0
        u = decay * v - v_th * s if reset_mode == "soft" else decay * (1 - abs(s)) * v + v_reset * abs(s)
        spikes.append(s)
        states.append(u)
    return spikes, states


@given(
    seed=st.integers(0, 10_000),
    T=st.integers(1, 10),
    decay=st.sampled_from([1.0, 0.9, 0.5]),
    reset_mode=st.sampled_from(["soft", "hard"]),
    signed=st.booleans(),
    rounding=st.booleans(),
    v_init=st.floats(-1.0, 1.0),
)
def test_functional_core_follows_the_documented_update_order(seed, T, decay, reset_mode, signed, rounding, v_init):
    g = torch.Generator().manual_seed(seed)
    x_seq = torch.randn(T, 2, 5, generator=g, dtype=torch.float64)
    v_th = torch.rand(2, 1, generator=g, dtype=torch.float64) + 0.2
    spikes, v_seq = multistep_neuron_forward(x_seq, v_th, v_init, decay, reset_mode, signed, -0.1, rounding=rounding)
    assert spikes.shape == v_seq.shape == x_seq.shape and spikes.dtype == torch.float64
    for b in range(2):
        for d in range(5):
            ref_s, ref_u = scalar_reference(
                x_seq[:, b, d].tolist(), float(v_th[b, 0]), v_init, decay, reset_mode, signed, -0.1, rounding
            )
            assert spikes[:, b, d].tolist() == ref_s
            torch.testing.assert_close(v_seq[:, b, d], torch.tensor(ref_u, dtype=torch.float64), rtol=0, atol=1e-12)


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0), st.integers(0, 3))
@example(x=torch.tensor([[1.0018]], dtype=torch.float64), k=1.5, extra_steps=0)  # x / v_th rounds onto the tie 1.5
@example(x=torch.tensor([[-27.8902]], dtype=torch.float64), k=2.5, extra_steps=0)  # x / v_th = -2.5: the neuron takes -3
def test_collapse_input_at_first_step(x, k, extra_steps):
    """Condition (a): all of x at step 0, then zeros, T >= |n|: net spikes n = floor(x/v_th + 1/2).

    Exact in real arithmetic. The neuron subtracts v_th step by step and the quotient x / v_th is rounded,
    so where x / v_th lies within their rounding of a tie n + 1/2, either neighbour is the exact answer of
    one of the two computations (x = 1.0018, k = 1.5: the quotient rounds to 1.5, the remainder x - v_th
    is exact and just below v_th / 2); everywhere else the count is exactly floor(x / v_th + 1/2). T
    leaves room for either neighbour: at x / v_th = -2.5 the neuron's remainders put the tie below
    -v_th / 2 and it fires a third spike, which T = |n| = 2 steps would cut off.
    """
    counts, v_th = spike_count(x, k)
    expected = half_up(x, v_th)
    T = max(int(expected.abs().max()) + 1, 1) + extra_steps
    x_seq = torch.zeros((T,) + x.shape, dtype=x.dtype)
    x_seq[0] = x
    spikes, v_seq = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    net = spikes.sum(0)
    quotient = x / v_th
    near_tie = near_a_tie(x, v_th, T)
    assert torch.equal(net[~near_tie], expected[~near_tie])
    step = (net - torch.floor(quotient))[near_tie]
    assert bool(((step == 0) | (step == 1)).all())  # one of the two neighbours of the tie
    assert bool((v_seq[-1] >= -v_th / 2).all() and (v_seq[-1] < v_th / 2).all())
    assert torch.equal(net[~near_tie], counts[~near_tie])


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0), st.integers(0, 4))
def test_collapse_input_spread_evenly(x, k, extra_steps):
    """Condition (b): x_t = x / T with -v_th <= x / T < v_th."""
    counts, v_th = spike_count(x, k)
    T = int(torch.floor((x.abs() / v_th).max())) + 1 + extra_steps
    x_seq = (x / T).expand((T,) + x.shape).clone()
    spikes, v_seq = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    net = spikes.sum(0)
    slack = 1e-9 * float(x.abs().max() + 1)  # the T float additions of x / T
    assert bool((v_seq[-1] >= -v_th / 2 - slack).all() and (v_seq[-1] < v_th / 2 + slack).all())
    torch.testing.assert_close(v_seq[-1], x - v_th * net, rtol=0, atol=slack)
    far_from_tie = ((x / v_th - torch.floor(x / v_th)) - 0.5).abs() > 1e-6
    assert torch.equal(net[far_from_tie], counts[far_from_tie])


def test_ties_round_half_up_not_to_even():
    v_th = torch.tensor([[1.0]], dtype=torch.float64)
    x = torch.tensor([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5]], dtype=torch.float64)
    x_seq = torch.zeros(4, 1, 6, dtype=torch.float64)
    x_seq[0] = x
    spikes, _ = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    assert spikes.sum(0).tolist() == [[1.0, 2.0, 3.0, 0.0, -1.0, -2.0]]  # half up
    assert torch.round(x).tolist() == [[0.0, 2.0, 2.0, -0.0, -2.0, -2.0]]  # half to even (Eq. 21)


def test_collapse_fails_when_conditions_are_broken():
    v_th = torch.tensor([[1.0]], dtype=torch.float64)
    x = torch.tensor([[4.2, -4.2, 2.7]], dtype=torch.float64)
    x_seq = torch.zeros(2, 1, 3, dtype=torch.float64)  # T = 2 < |n| = 4: one spike per step cannot keep up
    x_seq[0] = x
    spikes, _ = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True, rounding=True)
    assert spikes.sum(0).tolist() == [[2.0, -2.0, 2.0]]
    x_seq = torch.zeros(6, 1, 3, dtype=torch.float64)
    x_seq[0] = x
    unsigned, _ = multistep_neuron_forward(x_seq, v_th, 0.0, rounding=True)
    assert unsigned.sum(0).tolist() == [[4.0, 0.0, 3.0]]  # no -1 spikes without signed
    plain, _ = multistep_neuron_forward(x_seq, v_th, 0.0, signed=True)
    assert plain.sum(0).tolist() == [[4.0, -4.0, 2.0]]  # plain threshold truncates toward zero


@given(float_tensors(min_dims=2, scale=(1e-2, 10.0)))
def test_plain_neuron_started_at_half_threshold_rounds_non_negative_inputs(x):
    x = x.abs()
    v_th = torch.ones(x.shape[:-1] + (1,), dtype=x.dtype)
    expected = half_up(x, v_th)
    T = max(int(expected.max()), 1)
    x_seq = torch.zeros((T,) + x.shape, dtype=x.dtype)
    x_seq[0] = x
    spikes, _ = multistep_neuron_forward(x_seq, v_th, v_th / 2)
    assert torch.equal(spikes.sum(0), expected)


@given(seed=st.integers(0, 10_000), reset_mode=st.sampled_from(["soft", "hard"]), decay=st.sampled_from([1.0, 0.8]))
def test_signed_plain_neuron_is_odd_symmetric(seed, reset_mode, decay):
    x_seq = torch.randn(8, 3, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_seq[0, 0, 0] = -1.0  # exactly on the negative threshold: fires -1, as 1.0 fires +1
    up, _ = multistep_neuron_forward(x_seq, 1.0, 0.0, decay, reset_mode, True)
    down, _ = multistep_neuron_forward(-x_seq, 1.0, 0.0, decay, reset_mode, True)
    assert torch.equal(up, -down)
    assert up[0, 0, 0] == -1.0


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0))
@example(x=torch.tensor([[3.0443]], dtype=torch.float64), k=7.5)  # x / v_th within an ulp of 7.5: the neuron gives 7
def test_module_with_total_threshold_collapses_to_spike_count(x, k):
    counts, _ = spike_count(x, k)
    T = max(int(half_up(x, spike_count(x, k).v_th).abs().max()) + 1, 1)  # room for either neighbour of a tie
    x_seq = torch.zeros((T,) + x.shape, dtype=x.dtype)
    x_seq[0] = x
    node = AdaptiveIFNode(k=k, threshold="total", signed=True, rounding=True, step_mode="m")
    spikes = node(x_seq)
    assert torch.equal(node.v_th, spike_count(x, k).v_th)
    net, near_tie = spikes.sum(0), near_a_tie(x, node.v_th, T)
    assert torch.equal(net[~near_tie], counts[~near_tie])
    step = (net - torch.floor(x / node.v_th))[near_tie]
    assert bool(((step == 0) | (step == 1)).all())  # one of the two neighbours of the tie


@given(float_tensors(min_dims=2), st.floats(0.5, 8.0), st.integers(0, 3))
def test_module_fed_x_over_T_per_step_emits_round_x_over_v_th(x, k, extra_steps):
    """Issue 2's statement of the collapse, for the module: an AdaptiveIFNode (threshold="total", signed,
    rounding, v_init = 0) fed x / T at each of T > max|x| / v_th steps emits round(x / v_th) net spikes."""
    counts, v_th = spike_count(x, k)
    T = int(torch.floor((x.abs() / v_th).max())) + 1 + extra_steps
    node = AdaptiveIFNode(k=k, threshold="total", signed=True, rounding=True, step_mode="m")
    spikes = node((x / T).expand((T,) + x.shape).clone())
    # the node sees sum_t x / T, equal to x up to T float roundings, hence v_th up to the same
    torch.testing.assert_close(node.v_th, v_th, rtol=1e-12, atol=0)
    far_from_tie = ((x / v_th - torch.floor(x / v_th)) - 0.5).abs() > 1e-6
    assert torch.equal(spikes.sum(0)[far_from_tie], counts[far_from_tie])
    assert bool((spikes.abs().sum(0) == spikes.sum(0).abs()).all()), "a neuron fed one sign never fires the other"


@given(seed=st.integers(0, 10_000), T=st.integers(2, 12), cut=st.integers(1, 11))
def test_functional_core_streams_with_carried_state(seed, T, cut):
    x_seq = torch.randn(T, 3, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cut = min(cut, T - 1)
    args = dict(v_th=0.6, decay=0.7, reset_mode="hard", signed=True, v_reset=0.1)
    whole, v_whole = multistep_neuron_forward(x_seq, v_init=0.0, **args)
    first, v_first = multistep_neuron_forward(x_seq[:cut], v_init=0.0, **args)
    second, v_second = multistep_neuron_forward(x_seq[cut:], v_init=v_first[-1], **args)
    assert torch.equal(torch.cat([first, second]), whole)
    assert torch.equal(torch.cat([v_first, v_second]), v_whole)


NODE_CONFIGS = [
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold="first_step")),
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold="first_step", signed=True, surrogate="sigmoid")),
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold=0.7, reset="hard", v_reset=-0.1, detach_reset=True)),
    dict(cls=AdaptiveIFNode, kwargs=dict(threshold="first_step", homeostasis=(0.05, 0.2), dim=(-2, -1))),
    dict(cls=AdaptiveLIFNode, kwargs=dict(decay=0.7, threshold="first_step", signed=True, rounding=True)),
    dict(cls=AdaptiveLIFNode, kwargs=dict(decay=0.4, threshold=0.5, homeostasis=(0.05, 0.2))),
    dict(cls=AdaptiveLIFNode, kwargs=dict(decay=0.9, threshold=0.3, reset="hard", learn_decay=True, learn_threshold=True)),
]


@pytest.mark.parametrize("config", NODE_CONFIGS, ids=lambda c: c["cls"].__name__ + str(sorted(c["kwargs"])))
@given(seed=st.integers(0, 10_000), T=st.integers(1, 12), cut=st.integers(0, 12))
def test_single_step_loop_equals_multi_step_and_pieces(config, seed, T, cut):
    x = torch.randn(T, 3, 2, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    node = config["cls"](step_mode="m", **config["kwargs"])
    whole = node(x)
    v_whole = node.v.clone()
    node.reset()
    node.step_mode = "s"
    loop = torch.stack([node(x_t) for x_t in x])
    assert torch.equal(whole, loop)
    assert torch.equal(node.v, v_whole)
    node.reset()
    node.step_mode = "m"
    cut = min(cut, T - 1)
    pieces = torch.cat([node(x[: cut + 1]), node(x[cut + 1 :])]) if cut + 1 < T else node(x)
    assert torch.equal(whole, pieces)


def test_reset_starts_a_new_sequence():
    x = torch.randn(5, 2, 8, dtype=torch.float64)
    node = AdaptiveLIFNode(decay=0.5, step_mode="m")
    first = node(x)
    node.reset()
    assert node.v is None and node.v_th is None
    assert torch.equal(node(x), first)


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


@pytest.mark.parametrize("decay", [0.25, 0.5, 0.75, 0.875, 0.6, 1e-3])
def test_lif_decay_is_the_one_asked_for(decay):
    # A fixed decay is held as given, in every dtype (the float32 sigmoid of a float32 logit gave
    # 0.75000006 for 0.75); a learned one starts at the float32 logit whose sigmoid is nearest.
    assert float(AdaptiveLIFNode(decay).decay) == float(torch.tensor(decay))
    assert float(AdaptiveLIFNode(decay).double().decay) == float(torch.tensor(decay, dtype=torch.float32))
    learned = AdaptiveLIFNode(decay, learn_decay=True)
    logit = learned.decay_logit.detach()
    error = abs(float(learned.decay.detach()) - decay)
    for neighbour in (torch.nextafter(logit, torch.tensor(math.inf)), torch.nextafter(logit, torch.tensor(-math.inf))):
        assert error <= abs(float(torch.sigmoid(neighbour)) - decay)


def test_gradients_reach_input_decay_and_threshold():
    node = AdaptiveLIFNode(decay=0.6, threshold=0.3, learn_decay=True, learn_threshold=True, step_mode="m")
    x = torch.randn(8, 4, 10, requires_grad=True)
    node(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert node.decay_logit.grad is not None and torch.isfinite(node.decay_logit.grad)
    assert node.fixed_threshold.grad is not None and torch.isfinite(node.fixed_threshold.grad)
    with torch.no_grad():
        node.decay_logit.fill_(40.0)  # a huge logit still maps inside (0, 1]: sigmoid saturates, never exceeds 1
    assert 0.0 < float(node.decay.detach()) <= 1.0


def test_surrogate_gradient_matches_its_derivative_through_a_neuron_step():
    surrogate = ATan(2.0)
    x = torch.randn(1, 3, 5, dtype=torch.float64, requires_grad=True)
    spikes, _ = multistep_neuron_forward(x, 0.5, 0.0, surrogate=surrogate)
    spikes.sum().backward()
    torch.testing.assert_close(x.grad[0], surrogate.derivative(x.detach()[0] - 0.5))


@pytest.mark.parametrize("surrogate", [Sigmoid(), ATan(), Sigmoid(alpha=50.0), ATan(alpha=0.1)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@given(values=st.lists(st.floats(-1e30, 1e30, allow_nan=False), min_size=1, max_size=20))
def test_surrogate_forward_is_heaviside_and_gradient_finite(surrogate, dtype, values):
    x = torch.tensor(values, dtype=torch.float32).clamp(torch.finfo(dtype).min, torch.finfo(dtype).max)
    x = x.to(dtype).requires_grad_(True)
    y = surrogate(x)
    assert y.dtype == dtype and torch.equal(y, (x >= 0).to(dtype))
    y.sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and bool((x.grad >= 0).all())
    torch.testing.assert_close(x.grad, surrogate.derivative(x.detach()))


def test_surrogate_peaks():
    assert float(Sigmoid(4.0).derivative(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(ATan(2.0).derivative(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(ATan(2.0).derivative(torch.tensor(1.0))) == pytest.approx(1.0 / (1 + math.pi**2))
    assert isinstance(get_surrogate("sigmoid", alpha=8.0), Sigmoid) and get_surrogate("sigmoid", alpha=8.0).alpha == 8.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: AdaptiveIFNode(k=0), "k"),
        (lambda: AdaptiveIFNode(threshold="mean"), "threshold"),
        (lambda: AdaptiveIFNode(threshold=-1.0), "threshold"),
        (lambda: AdaptiveIFNode(reset="partial"), "reset"),
        (lambda: AdaptiveIFNode(step_mode="x"), "step_mode"),
        (lambda: AdaptiveIFNode(dim=()), "dim"),
        (lambda: AdaptiveLIFNode(dim=1.0), "dim"),
        (lambda: AdaptiveIFNode(v_init=float("nan")), "v_init"),
        (lambda: AdaptiveIFNode(homeostasis=(0.1, 2.0)), "beta"),
        (lambda: AdaptiveIFNode(threshold=0.5, learn_threshold=True, homeostasis=(0.1, 0.2)), "learn_threshold"),
        (lambda: AdaptiveLIFNode(decay=1.5), "decay"),
        (lambda: AdaptiveIFNode(threshold="first_step", learn_threshold=True), "learn_threshold"),
        (lambda: AdaptiveIFNode(step_mode="m")(torch.ones(3, 2, dtype=torch.int64)), "x_seq"),
        (lambda: AdaptiveIFNode(step_mode="m")(torch.tensor([[[float("nan")]]])), "x_seq"),
        (lambda: AdaptiveIFNode()(torch.tensor([[float("inf")]])), "x"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3), 0.0), "v_th"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3), torch.ones(4)), "v_th"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3), 1.0, float("nan")), "v_init"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3), 1.0, 0.0, 1.5), "decay"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3), 1.0, reset_mode="zero"), "reset_mode"),
        (lambda: multistep_neuron_forward(torch.ones(0, 3), 1.0), "x_seq"),
        (lambda: multistep_neuron_forward(torch.ones(2, 3, dtype=torch.int32), 1.0), "x_seq"),
        (lambda: get_surrogate("relu"), "surrogate"),
        (lambda: Sigmoid(alpha=0), "alpha"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()


@given(seed=st.integers(0, 2**31 - 1), silent=st.lists(st.integers(0, 6), min_size=3, max_size=3), cut=st.integers(1, 5),
       k=st.floats(0.5, 8.0))
def test_first_step_threshold_is_set_at_each_rows_first_input(seed, silent, cut, k):
    """Rows whose first steps are all zero (rate-coded input): each row's threshold is the adaptive
    threshold of its first step with input, never the 1e-5 floor of an empty step; rows without input so
    far hold the pending threshold and never fire; one call, two pieces and single steps agree."""
    gen = torch.Generator().manual_seed(seed)
    x_seq = (torch.rand(8, 3, 5, generator=gen) < 0.3).double() * torch.rand(8, 3, 5, generator=gen, dtype=torch.float64)
    for row, zeros in enumerate(silent):
        x_seq[:zeros, row] = 0.0
    node = AdaptiveIFNode(k=k, threshold="first_step", step_mode="m", signed=True, rounding=True)
    spikes = node(x_seq)
    v_th = node.v_th
    node.reset()
    assert torch.equal(torch.cat([node(x_seq[:cut]), node(x_seq[cut:])]), spikes) and torch.equal(node.v_th, v_th)
    node.reset()
    node.step_mode = "s"
    assert torch.equal(torch.stack([node(x) for x in x_seq]), spikes)
    for row in range(3):
        with_input = (x_seq[:, row].abs().sum(-1) > 0).nonzero()
        if not with_input.numel():
            assert float(v_th[row]) == pending_threshold(torch.float64) and not spikes[:, row].any()
            continue
        first = int(with_input[0])
        assert torch.equal(v_th[row], adaptive_threshold(x_seq[first, row], k))
        assert not spikes[:first, row].any()
    assert torch.equal(first_input_threshold(x_seq, k), v_th)
