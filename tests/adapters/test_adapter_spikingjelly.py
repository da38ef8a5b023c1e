"""SpikingJelly adapter: SBLIFNode / SBSpikeCountNode behave as native SpikingJelly neurons and keep the
dynamics of sb_neurons."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sb_adapters.spikingjelly  # noqa: F401 - registers the neurons
from sb_neurons import AdaptiveIFNode, adaptive_threshold, spike_quantize
from spikingjelly.activation_based import functional, layer, monitor, neuron, surrogate

NODE_OPTIONS = [
    dict(),
    dict(v_threshold="first_step"),
    dict(tau=None, v_reset=None, v_threshold="first_step"),
    dict(v_threshold="first_step", v_reset=None, decay_input=False),
    dict(tau=None, signed=True, rounding=True, v_threshold="first_step", v_reset=None),
    dict(signed=True, v_threshold=0.4),
    dict(tau=4.0, v_threshold=0.3, learn_threshold=True, detach_reset=True),
]

# Arguments that LIFNode (tau a float) or IFNode (tau=None) also take: SBLIFNode must be that neuron.
HOST_OPTIONS = [
    dict(),
    dict(tau=None),
    dict(v_reset=None),
    dict(tau=None, v_reset=None, v_threshold=0.5),
    dict(tau=4.0, decay_input=False),
    dict(tau=3.0, decay_input=False, v_reset=-0.25, v_threshold=0.7, detach_reset=True),
]


def host_neuron(options: dict, **common) -> neuron.BaseNode:
    options = dict(options)
    tau = options.pop("tau", 2.0)
    if tau is None:
        options.pop("decay_input", None)
        return neuron.IFNode(**options, **common)
    return neuron.LIFNode(tau=tau, **options, **common)


def run_steps(node: neuron.BaseNode, x_seq: torch.Tensor, step_mode: str) -> torch.Tensor:
    return node(x_seq) if step_mode == "m" else torch.stack([node(x) for x in x_seq])


def test_registered_in_spikingjelly_neuron_namespace():
    assert neuron.SBLIFNode is sb_adapters.spikingjelly.SBLIFNode
    assert neuron.SBSpikeCountNode is sb_adapters.spikingjelly.SBSpikeCountNode
    assert isinstance(neuron.SBLIFNode(), neuron.BaseNode)


def test_defaults_are_those_of_lifnode():
    ours, host = neuron.SBLIFNode(), neuron.LIFNode()
    for name in ("tau", "decay_input", "v_threshold", "v_reset", "detach_reset", "step_mode", "store_v_seq"):
        assert getattr(ours, name) == getattr(host, name), name
    assert type(ours.surrogate_function) is type(host.surrogate_function)
    assert ours.v == host.v and ours.v_th is None


@pytest.mark.parametrize("options", HOST_OPTIONS, ids=str)
@pytest.mark.parametrize("step_mode", ["s", "m"])
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 6), scale=st.sampled_from([0.5, 2.0, 5.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_host_arguments_give_the_host_neuron(options, step_mode, seed, steps, scale, dtype):
    """Swapping LIFNode / IFNode for SBLIFNode with the same arguments changes no spike and no state."""
    x_seq = scale * torch.randn(steps, 3, 7, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    ours = neuron.SBLIFNode(step_mode=step_mode, store_v_seq=True, **options)
    host = host_neuron(options, step_mode=step_mode, store_v_seq=True)
    assert torch.equal(run_steps(ours, x_seq, step_mode), run_steps(host, x_seq, step_mode))
    assert torch.equal(ours.v, host.v)
    assert torch.equal(ours.v_seq, host.v_seq)
    # the general path (charge of SpikingJelly, fire / reset of sb_neurons) gives the same neuron
    general = neuron.SBLIFNode(step_mode=step_mode, learn_threshold=True, **options)
    assert torch.equal(run_steps(general, x_seq, step_mode).detach(), run_steps(host_neuron(options, step_mode=step_mode), x_seq, step_mode))


@pytest.mark.parametrize("options", [dict(), dict(tau=None, v_reset=None), dict(decay_input=False, v_reset=None)], ids=str)
@given(seed=st.integers(0, 2**31 - 1))
def test_first_step_threshold_is_the_host_neuron_at_that_threshold(options, seed):
    """v_threshold='first_step' takes mean|x_0| / k per row and then runs the host neuron with it."""
    x_seq = 2 * torch.randn(5, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    node = neuron.SBLIFNode(v_threshold="first_step", k=2.0, step_mode="m", **options)
    spikes = node(x_seq)
    assert torch.equal(node.v_th, adaptive_threshold(x_seq[0], 2.0))
    for row in range(4):
        host = host_neuron({**options, "v_threshold": float(node.v_th[row])}, step_mode="m")
        assert torch.equal(spikes[:, row], host(x_seq[:, row : row + 1])[:, 0])


@pytest.mark.parametrize("options", [dict(), dict(tau=None, v_reset=None)], ids=str)
@given(seed=st.integers(0, 2**31 - 1), silent=st.lists(st.integers(0, 6), min_size=4, max_size=4),
       cut=st.integers(1, 5))
def test_a_silent_start_sets_each_rows_threshold_at_its_first_input(options, seed, silent, cut):
    """Rate-coded (Poisson) input whose first steps are all zero for some samples: each row's threshold
    comes from its first step with input (never the 1e-5 floor of an empty step), the row is silent until
    then and is the host neuron at that threshold; the same in one multi-step call, in two pieces and
    step by step. A row without any input stays pending and never fires."""
    gen = torch.Generator().manual_seed(seed)
    x_seq = (torch.rand(8, 4, 6, generator=gen) < 0.3).double()
    for row, zeros in enumerate(silent):
        x_seq[:zeros, row] = 0.0
    node = neuron.SBLIFNode(v_threshold="first_step", k=2.0, step_mode="m", **options)
    spikes = node(x_seq)
    v_th = node.v_th
    functional.reset_net(node)
    assert not node.v_th_pending
    assert torch.equal(torch.cat([node(x_seq[:cut]), node(x_seq[cut:])]), spikes)
    functional.reset_net(node)
    functional.set_step_mode(node, "s")
    assert torch.equal(torch.stack([node(x) for x in x_seq]), spikes) and torch.equal(node.v_th, v_th)
    for row in range(4):
        with_input = (x_seq[:, row].abs().sum(-1) > 0).nonzero()
        if not with_input.numel():
            assert float(v_th[row]) == torch.finfo(torch.float64).max and not spikes[:, row].any()
            continue
        first = int(with_input[0])
        assert torch.equal(v_th[row], adaptive_threshold(x_seq[first, row], 2.0))
        assert not spikes[:first, row].any()
        host = host_neuron({**options, "v_threshold": float(v_th[row])}, step_mode="m")
        assert torch.equal(spikes[:, row], host(x_seq[:, row : row + 1])[:, 0])


@pytest.mark.parametrize("options", NODE_OPTIONS, ids=str)
@pytest.mark.parametrize("store_v_seq", [False, True])
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 6))
def test_single_step_loop_equals_multi_step_call(options, store_v_seq, seed, steps):
    x_seq = torch.randn(steps, 3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    node = neuron.SBLIFNode(step_mode="m", store_v_seq=store_v_seq, surrogate_function=surrogate.ATan(), **options)
    spikes_m = node(x_seq)
    v_m, v_th_m, v_seq_m = node.v, node.v_th, node.v_seq
    functional.reset_net(node)
    functional.set_step_mode(node, "s")
    spikes_s = torch.stack([node(x) for x in x_seq])
    assert torch.equal(spikes_m, spikes_s)
    assert torch.equal(v_m, node.v)
    assert (v_th_m is None and node.v_th is None) or torch.equal(v_th_m, node.v_th)
    if store_v_seq:
        assert v_seq_m.shape == x_seq.shape and torch.equal(v_seq_m, node.v_seq)
        assert torch.equal(v_seq_m[-1], v_m)


@pytest.mark.parametrize("threshold", ["first_step", "total"])
def test_if_neuron_is_the_spikingbrain_neuron_of_sb_neurons(threshold):
    x_seq = torch.randn(5, 4, 6, dtype=torch.float64)
    reference = AdaptiveIFNode(k=2.0, threshold=threshold, surrogate="sigmoid", step_mode="m")
    node = neuron.SBLIFNode(tau=None, v_reset=None, k=2.0, v_threshold=threshold, step_mode="m")
    assert torch.equal(node(x_seq), reference(x_seq))
    assert torch.allclose(node.v, reference.v, rtol=0, atol=1e-12)


def test_state_is_cleared_by_reset_net_and_sequences_can_be_split():
    x_seq = torch.randn(6, 2, 5, dtype=torch.float64)
    node = neuron.SBLIFNode(v_threshold="first_step", step_mode="m")
    whole = node(x_seq)
    functional.reset_net(node)
    assert node.v_th is None and node.v == 0.0
    pieces = torch.cat([node(x_seq[:2]), node(x_seq[2:])])
    assert torch.equal(whole, pieces)


def test_total_threshold_needs_a_whole_sequence():
    node = neuron.SBLIFNode(v_threshold="total", step_mode="m")
    node(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="reset_net"):
        node(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="step_mode='m'"):
        neuron.SBLIFNode(v_threshold="total")(torch.randn(2, 4))  # single-step default


def test_total_threshold_collapses_to_spike_count():
    # Eq. 20 -> Eq. 21: all input at step 0, T >= |count|; signed rounding IF neuron.
    x = torch.randn(4, 8, dtype=torch.float64) * 3
    steps = 40
    x_seq = torch.zeros(steps, *x.shape, dtype=torch.float64)
    x_seq[0] = x
    node = neuron.SBLIFNode(tau=None, v_reset=None, k=3.0, v_threshold="total", signed=True, rounding=True, step_mode="m")
    counts = node(x_seq).sum(dim=0)
    expected = spike_quantize(x, 3.0) / node.v_th
    assert torch.allclose(counts, expected, atol=1e-9)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="v_threshold"):
        neuron.SBLIFNode(v_threshold="sometimes")
    with pytest.raises(ValueError, match="v_threshold"):
        neuron.SBLIFNode(v_threshold=0.0)
    with pytest.raises(ValueError, match="tau"):
        neuron.SBLIFNode(tau=0.5)
    with pytest.raises(ValueError, match="learn_threshold"):
        neuron.SBLIFNode(v_threshold="first_step", learn_threshold=True)
    with pytest.raises(ValueError, match="backend"):
        neuron.SBLIFNode(backend="cupy")
    with pytest.raises(ValueError, match="batch dimension"):
        neuron.SBLIFNode(v_threshold="first_step", dim=0)(torch.randn(2, 3))
    for k in (0, -1.0):
        with pytest.raises(ValueError, match="k"):
            neuron.SBLIFNode(k=k)
    with pytest.raises(TypeError, match="decay_input"):
        neuron.SBLIFNode(decay_input=1)
    with pytest.raises(ValueError, match="step_mode"):
        neuron.SBLIFNode(step_mode="x")


@pytest.mark.parametrize("threshold", [1.0, "first_step"])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_bad_inputs_raise_naming_the_argument(threshold, step_mode):
    name = "x_seq" if step_mode == "m" else "x"
    node = neuron.SBLIFNode(v_threshold=threshold, step_mode=step_mode)
    good = torch.randn(3, 2, 4) if step_mode == "m" else torch.randn(2, 4)
    for bad in (good > 0, (good * 4).to(torch.int64)):
        with pytest.raises(TypeError, match=name):
            node(bad)
    for value in (float("nan"), float("inf")):
        bad = good.clone()
        bad.view(-1)[1] = value
        with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
            node(bad)
    with pytest.raises(ValueError, match=r"\[T, N" if step_mode == "m" else r"\[N, \*\]"):
        node(torch.randn(3) if step_mode == "m" else torch.tensor(1.0))
    node(good)  # a state for batch size 2, then a batch of 5 without reset_net
    with pytest.raises(ValueError, match="reset_net"):
        node(torch.randn(3, 5, 4) if step_mode == "m" else torch.randn(5, 4))
    functional.reset_net(node)
    assert node(torch.randn(3, 5, 4) if step_mode == "m" else torch.randn(5, 4)).shape[-2] == 5


TRITON_AGREEMENT_SCRIPT = """
import torch
import sb_adapters.spikingjelly  # noqa: F401
from spikingjelly.activation_based import functional, neuron, surrogate

torch.manual_seed(0)
OPTIONS = [dict(), dict(v_reset=0.0), dict(signed=True, rounding=True), dict(v_threshold=0.4, detach_reset=True),
           dict(v_threshold="total"), dict(surrogate_function=surrogate.Sigmoid(alpha=3.0))]
for options in OPTIONS:
    options = {"tau": None, "v_reset": None, "v_threshold": "first_step", "surrogate_function": surrogate.ATan(alpha=1.5), **options}
    x_seq = (torch.randn(6, 3, 16) * 2).requires_grad_()
    nodes = {b: neuron.SBLIFNode(step_mode="m", backend=b, **options) for b in ("torch", "triton")}
    out = {}
    for b, node in nodes.items():
        x = x_seq.detach().clone().requires_grad_()
        spikes = node(x)
        weights = torch.linspace(-1, 1, spikes.numel()).reshape(spikes.shape)
        ((spikes * weights).sum() + node.v.square().sum()).backward()
        out[b] = (spikes.detach(), node.v.detach(), x.grad)
    assert torch.equal(out["torch"][0], out["triton"][0]), options
    assert torch.equal(out["torch"][1], out["triton"][1]), options
    torch.testing.assert_close(out["triton"][2], out["torch"][2], rtol=1e-5, atol=1e-5)
    if options.get("v_threshold") != "total":
        node = nodes["triton"]
        functional.reset_net(node)
        functional.set_step_mode(node, "s")
        node.store_v_seq = True
        single = torch.stack([node(x) for x in x_seq.detach()])
        assert torch.equal(single, out["torch"][0]), options
        assert node.v_seq.shape == x_seq.shape and torch.equal(node.v_seq[-1], out["torch"][1])
node = neuron.SBLIFNode(tau=None, step_mode="m", backend="triton", store_v_seq=True)
try:
    node(torch.randn(3, 2, 4))
except ValueError as err:
    assert "store_v_seq" in str(err)
else:
    raise AssertionError("store_v_seq in multi-step mode must be refused on the triton backend")
print("ok")
"""


def test_triton_backend_equals_torch_backend_in_the_interpreter():
    """backend='triton' runs sb_kernels.multistep_neuron (here in Triton's CPU interpreter) and gives the
    torch backend's spikes and potential exactly on float32, gradients within float32 rounding; a
    single-step loop on the kernel equals the multi-step call. A fresh interpreter: Triton reads
    TRITON_INTERPRET when the kernels are built."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", TRITON_AGREEMENT_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_triton_backend_never_falls_back_silently(monkeypatch):
    if sb_adapters.spikingjelly._triton_neuron() is None:
        with pytest.raises(RuntimeError, match="triton"):
            neuron.SBLIFNode(tau=None, backend="triton")
        assert neuron.SBLIFNode(tau=None).supported_backends == ("torch",)
        return
    assert neuron.SBLIFNode(tau=None).supported_backends == ("torch", "triton")
    assert neuron.SBLIFNode().supported_backends == ("torch",)  # LIF: SpikingJelly's leak, not the kernel's
    with pytest.raises(ValueError, match="tau=None"):
        neuron.SBLIFNode(backend="triton")
    with pytest.raises(ValueError, match="surrogate.ATan and surrogate.Sigmoid"):
        neuron.SBLIFNode(tau=None, backend="triton", surrogate_function=surrogate.PiecewiseQuadratic())
    with pytest.raises(ValueError, match="learn_threshold"):
        neuron.SBLIFNode(tau=None, backend="triton", v_threshold=0.5, learn_threshold=True)
    node = neuron.SBLIFNode(tau=None, backend="triton", step_mode="m")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        node(torch.randn(3, 2, 4))  # CPU tensors, no interpreter: the kernel cannot run, and says so
    node.surrogate_function = surrogate.Erf()  # swapped after construction: refused at the call
    with pytest.raises(ValueError, match="surrogate"):
        node(torch.randn(3, 2, 4))


@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 4))
def test_spike_count_node_single_equals_multi_and_matches_eq21(seed, steps):
    x_seq = torch.randn(steps, 3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    node = neuron.SBSpikeCountNode(k=3.0, dim=(1, 2), step_mode="m")
    multi = node(x_seq)
    functional.set_step_mode(node, "s")
    assert torch.equal(multi, torch.stack([node(x) for x in x_seq]))
    assert torch.equal(multi[0], spike_quantize(x_seq[0], 3.0, dim=(1, 2)))
    counts = neuron.SBSpikeCountNode(output="count", dim=(1, 2))(x_seq[0])
    assert torch.equal(counts, torch.round(counts))


class TutorialNet(torch.nn.Module):
    """The CSNN of SpikingJelly's tutorials, with SBLIFNode as the neuron."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv = layer.SeqToANNContainer(
            torch.nn.Conv2d(1, channels, 3, padding=1, bias=False), torch.nn.BatchNorm2d(channels)
        )
        self.sn1 = neuron.SBLIFNode(tau=2.0, v_threshold="first_step", k=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)
        self.pool = layer.SeqToANNContainer(torch.nn.AvgPool2d(2), torch.nn.Flatten())
        self.fc = layer.SeqToANNContainer(torch.nn.Linear(channels * 4 * 4, classes))
        self.sn2 = neuron.SBLIFNode(tau=2.0, v_threshold=1.0, surrogate_function=surrogate.ATan())

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.sn2(self.fc(self.pool(self.sn1(self.conv(x_seq))))).mean(dim=0)


def test_tutorial_style_network_trains_and_is_monitored():
    torch.manual_seed(0)
    net = TutorialNet()
    functional.set_step_mode(net, "m")
    images = torch.rand(16, 1, 8, 8)
    labels = torch.randint(0, 3, (16,))
    images[labels == 1, :, :4] += 1.0  # make the classes separable
    images[labels == 2, :, 4:] += 1.0
    x_seq = images.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    target = torch.nn.functional.one_hot(labels, 3).float()
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.mse_loss(net(x_seq), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        functional.reset_net(net)
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0]
    with monitor.OutputMonitor(net, neuron.SBLIFNode) as spikes:
        net(x_seq)
    assert len(spikes.records) == 2
    assert all(set(torch.unique(r).tolist()) <= {0.0, 1.0} for r in spikes.records)
