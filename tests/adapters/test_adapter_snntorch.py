"""snnTorch adapter: SBLeaky keeps snnTorch's Leaky conventions and adds the adaptive threshold."""

from __future__ import annotations

import pytest
import snntorch
import torch
from hypothesis import given
from hypothesis import strategies as st
from snntorch import spikegen, surrogate, utils
from snntorch import functional as SF

from sb_adapters.snntorch import SBLeaky
from sb_neurons import adaptive_threshold


def run(neuron: torch.nn.Module, x_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mem = neuron.init_leaky()
    spikes, mems = [], []
    for x in x_seq:
        spk, mem = neuron(x, mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def test_exposed_as_snntorch_attribute_and_is_a_leaky():
    assert snntorch.SBLeaky is SBLeaky
    assert isinstance(SBLeaky(beta=0.9), snntorch.Leaky)


@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.1, 1.0), threshold=st.floats(0.2, 2.0), graded=st.sampled_from([1.0, 0.5, 2.0]))
def test_fixed_threshold_reproduces_snntorch_leaky(reset_mechanism, seed, beta, threshold, graded):
    x_seq = torch.randn(6, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    options = dict(
        beta=beta, threshold=threshold, reset_mechanism=reset_mechanism, spike_grad=surrogate.fast_sigmoid(), graded_spikes_factor=graded
    )
    spk_ref, mem_ref = run(snntorch.Leaky(**options), x_seq)
    spk, mem = run(SBLeaky(**options), x_seq)
    assert torch.equal(spk, spk_ref.to(spk.dtype))
    assert torch.equal(mem, mem_ref)  # Leaky's operations in Leaky's order


@pytest.mark.parametrize("reset_mechanism", ["subtract", "zero", "none"])
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.1, 1.0), threshold=st.floats(0.2, 2.0))
def test_input_gradients_equal_leakys(reset_mechanism, seed, beta, threshold):
    """Where the forward is Leaky's, so is the backward: the input gradients are equal to the bit."""
    x_seq = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(seed))
    grads = []
    for neuron in (snntorch.Leaky(beta=beta, threshold=threshold, reset_mechanism=reset_mechanism),
                   SBLeaky(beta=beta, threshold=threshold, reset_mechanism=reset_mechanism)):
        x = x_seq.clone().requires_grad_(True)
        spk, mem = run(neuron, x)
        (spk * torch.linspace(0.5, 2.0, 5)).sum().add(mem.pow(2).sum()).backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_defaults_are_those_of_leaky():
    ours, host = SBLeaky(beta=0.9), snntorch.Leaky(beta=0.9)
    assert float(ours.threshold) == float(host.threshold) == 1.0
    for name in ("reset_mechanism", "init_hidden", "output", "surrogate_disable", "reset_delay"):
        assert getattr(ours, name) == getattr(host, name), name
    assert not ours.adaptive


def run_hidden(neuron: torch.nn.Module, x_seq: torch.Tensor) -> torch.Tensor:
    utils.reset(neuron)
    return torch.stack([neuron(x) for x in x_seq])


@pytest.mark.parametrize("options", [dict(), dict(reset_mechanism="zero"), dict(reset_mechanism="none"), dict(threshold=0.5)], ids=str)
@given(seed=st.integers(0, 2**31 - 1), beta=st.floats(0.05, 1.0), scale=st.sampled_from([0.5, 1.0, 3.0]), steps=st.integers(1, 8))
def test_leaky_arguments_give_leaky_explicit_mem_and_init_hidden(options, seed, beta, scale, steps):
    """Swapping snn.Leaky for SBLeaky with the same arguments changes no spike: explicit mem and init_hidden."""
    x_seq = scale * torch.randn(steps, 3, 5, generator=torch.Generator().manual_seed(seed))
    spk_ref, mem_ref = run(snntorch.Leaky(beta=beta, **options), x_seq)
    spk, mem = run(SBLeaky(beta=beta, **options), x_seq)
    assert torch.equal(spk, spk_ref)
    assert torch.allclose(mem, mem_ref, rtol=0, atol=1e-5)
    hidden_ref = run_hidden(snntorch.Leaky(beta=beta, init_hidden=True, **options), x_seq)
    hidden = run_hidden(SBLeaky(beta=beta, init_hidden=True, **options), x_seq)
    assert torch.equal(hidden, hidden_ref) and torch.equal(hidden, spk)
    ref = snntorch.Leaky(beta=beta, init_hidden=True, output=True, **options)
    ours = SBLeaky(beta=beta, init_hidden=True, output=True, **options)
    for x in x_seq:
        (s_ref, m_ref), (s, m) = ref(x), ours(x)
        assert torch.equal(s, s_ref) and torch.allclose(m, m_ref, rtol=0, atol=1e-5)


def test_removed_adaptive_spelling_is_an_error():
    with pytest.raises(ValueError, match="'first_step'"):
        SBLeaky(beta=0.9, threshold="adaptive")


@given(seed=st.integers(0, 2**31 - 1), silent=st.lists(st.integers(0, 6), min_size=4, max_size=4))
def test_a_silent_start_sets_each_rows_threshold_at_its_first_input(seed, silent):
    """Rate-coded input whose first steps are all zero for some samples: each row's threshold comes from
    its first step with input (never the 1e-5 floor of an empty step), the row is silent until then,
    and from then on the neuron is the fixed-threshold Leaky of that threshold, fed the same steps."""
    gen = torch.Generator().manual_seed(seed)
    x_seq = spikegen.rate(torch.rand(4, 6, generator=gen) * 0.5, num_steps=8)
    for row, zeros in enumerate(silent):
        x_seq[:zeros, row] = 0.0
    lif = SBLeaky(beta=0.9, k=2.0, threshold="first_step")
    spk, _ = run(lif, x_seq)
    for row, zeros in enumerate(silent):
        rows = x_seq[:, row]
        steps_with_input = (rows.abs().sum(-1) > 0).nonzero()
        if not steps_with_input.numel():  # no input at all: still pending, never fired
            assert float(lif.v_th[row]) == torch.finfo(torch.float32).max and not spk[:, row].any()
            continue
        first = int(steps_with_input[0])
        assert torch.equal(lif.v_th[row], adaptive_threshold(rows[first], 2.0))
        assert not spk[:first, row].any()
        fixed = SBLeaky(beta=0.9, threshold=float(lif.v_th[row]))
        assert torch.equal(run(fixed, rows[:, None])[0][:, 0], spk[:, row])


def test_adaptive_threshold_is_taken_from_the_first_step_and_kept():
    x_seq = torch.randn(5, 4, 6, dtype=torch.float64)
    lif = SBLeaky(beta=0.9, k=2.0, threshold="first_step")
    run(lif, x_seq)
    assert torch.equal(lif.v_th, adaptive_threshold(x_seq[0], 2.0))
    # With that threshold fixed, the adaptive neuron is the plain Leaky neuron of that threshold, row by row.
    row = 1
    fixed = SBLeaky(beta=0.9, threshold=float(lif.v_th[row]))
    spk_adaptive, _ = run(lif, x_seq)
    spk_fixed, _ = run(fixed, x_seq[:, row : row + 1])
    assert torch.equal(spk_adaptive[:, row : row + 1], spk_fixed)


def test_init_hidden_output_and_reset_through_snntorch_utils():
    x_seq = torch.randn(4, 2, 3)
    net = torch.nn.Sequential(torch.nn.Identity(), SBLeaky(beta=0.8, threshold="first_step", init_hidden=True))
    first = torch.stack([net(x) for x in x_seq])
    assert first.shape == x_seq.shape
    assert net[1].v_th is not None
    utils.reset(net)
    assert net[1].v_th is None and not net[1].mem.any()
    assert torch.equal(first, torch.stack([net(x) for x in x_seq]))
    spk, mem = SBLeaky(beta=0.8, init_hidden=True, output=True)(x_seq[0])
    assert spk.shape == mem.shape == x_seq[0].shape
    with pytest.raises(TypeError, match="mem"):
        SBLeaky(beta=0.8, init_hidden=True)(x_seq[0], torch.zeros(2, 3))


def test_learnable_beta_and_threshold_receive_gradients():
    lif = SBLeaky(beta=0.7, threshold=0.5, learn_beta=True, learn_threshold=True)
    spk, mem = run(lif, torch.randn(5, 3, 4))
    (spk.sum() + mem.sum()).backward()
    assert lif.beta.grad is not None and lif.threshold.grad is not None
    graded = SBLeaky(beta=0.7, threshold="first_step", learn_graded_spikes_factor=True, graded_spikes_factor=0.5)
    spk, _ = run(graded, torch.randn(5, 3, 4) * 3)
    assert set(spk.unique().tolist()) <= {0.0, 0.5}
    spk.sum().backward()
    assert graded.graded_spikes_factor.grad is not None


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="threshold"):
        SBLeaky(beta=0.9, threshold="sometimes")
    with pytest.raises(ValueError, match="learn_threshold"):
        SBLeaky(beta=0.9, threshold="first_step", learn_threshold=True)
    with pytest.raises(ValueError, match="threshold"):
        SBLeaky(beta=0.9, threshold=0.0)
    with pytest.raises(ValueError, match="beta"):
        SBLeaky(beta=1.5)
    for k in (0, -2.0):
        with pytest.raises(ValueError, match="k"):
            SBLeaky(beta=0.9, k=k)
    with pytest.raises(ValueError, match="reset_mechanism"):
        SBLeaky(beta=0.9, reset_mechanism="sometimes")
    for option, match in ((dict(inhibition=True), "inhibition"), (dict(state_quant=lambda m: m), "state_quant"), (dict(reset_delay=False), "reset_delay")):
        with pytest.raises(ValueError, match=match):
            SBLeaky(beta=0.9, **option)
    with pytest.raises(AttributeError):
        SBLeaky(beta=0.9, threshold="first_step").threshold  # noqa: B018 - an adaptive neuron has no scalar threshold


@pytest.mark.parametrize("threshold", [1.0, "first_step"])
def test_bad_inputs_raise_naming_the_argument(threshold):
    lif = SBLeaky(beta=0.9, threshold=threshold)
    x = torch.randn(2, 4)
    for bad in (x > 0, (x * 4).to(torch.int32)):
        with pytest.raises(TypeError, match="input_"):
            lif(bad, lif.reset_mem())
    for value in (float("nan"), float("inf")):
        bad = x.clone()
        bad[0, 1] = value
        if threshold == "first_step":  # checked once, where the row's threshold is set
            with pytest.raises(ValueError, match="input_ contains NaN or Inf"):
                lif(bad, lif.reset_mem())
        else:  # not checked at every step (a host read per step): it propagates as in Leaky
            spk, mem = lif(bad, lif.reset_mem())
            spk_ref, mem_ref = snntorch.Leaky(beta=0.9)(bad, torch.zeros_like(bad))
            assert torch.equal(spk, spk_ref) and torch.equal(mem.isnan(), mem_ref.isnan())
    _, mem = lif(x, lif.init_leaky())
    with pytest.raises(ValueError, match="mem has shape"):
        lif(torch.randn(5, 4), mem)  # a membrane of batch size 2 for a batch of 5
    with pytest.raises(TypeError, match="mem"):
        lif(x, mem.to(torch.int64))
    spk, mem = lif(torch.randn(5, 4), lif.reset_mem())  # reset: a new sequence of any batch size
    assert spk.shape == mem.shape == (5, 4)


def test_stored_state_of_another_batch_size_starts_a_new_sequence():
    """init_hidden: as in snnTorch, a stored membrane of another shape is replaced by zeros (and, with
    'first_step', a new threshold is taken from the new batch)."""
    lif = SBLeaky(beta=0.9, threshold="first_step", init_hidden=True)
    small, large = torch.randn(2, 4), torch.randn(5, 4)
    lif(small)
    spk = lif(large)
    assert lif.v_th.shape == (5, 1) and torch.equal(lif.v_th, adaptive_threshold(large, 3.0))
    fresh = SBLeaky(beta=0.9, threshold="first_step", init_hidden=True)
    assert torch.equal(spk, fresh(large))
    host, ours = snntorch.Leaky(beta=0.9, init_hidden=True), SBLeaky(beta=0.9, init_hidden=True)
    for x in (small, large, large):
        assert torch.equal(host(x), ours(x))


def test_snntorch_style_network_trains():
    torch.manual_seed(0)
    steps, classes = 10, 3
    net = torch.nn.Sequential(
        torch.nn.Linear(12, 24),
        SBLeaky(beta=0.9, threshold="first_step", init_hidden=True, spike_grad=surrogate.fast_sigmoid(slope=25)),
        torch.nn.Linear(24, classes),
        SBLeaky(beta=0.9, threshold=1.0, init_hidden=True, output=True, spike_grad=surrogate.fast_sigmoid(slope=25)),
    )
    labels = torch.arange(16) % classes
    prototypes = torch.rand(classes, 12)
    images = (prototypes[labels] + 0.1 * torch.rand(16, 12)).clamp(0, 1)
    loss_fn = SF.ce_rate_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    losses = []
    for _ in range(25):
        data = spikegen.rate(images, num_steps=steps)
        utils.reset(net)
        spk_rec = torch.stack([net(data[t])[0] for t in range(steps)])
        loss = loss_fn(spk_rec, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.85 * sum(losses[:5]) / 5
