"""NIR export / import (sb_adapters.nir): exact against NIR's primitives, snnTorch's and SpikingJelly's NIR paths.

Inputs and weights are dyadic (multiples of 1/4, small): every sum and product is exact in float32, so the
membrane trajectories do not depend on the order in which a simulator evaluates them, and ties (a potential
exactly at the threshold) are frequent: the tie rule is tested, not avoided.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

import snntorch  # noqa: E402
from snntorch import utils as snn_utils  # noqa: E402
from spikingjelly.activation_based import functional, neuron  # noqa: E402

from sb_adapters.nir import NIRExportError, NIRImportError, NIRNetwork, export_to_nir, import_from_nir  # noqa: E402
from sb_adapters.snntorch import SBLeaky  # noqa: E402
from sb_adapters.spikingjelly import SBLIFNode, SBSpikeCountNode  # noqa: E402
from sb_neurons import AdaptiveIFNode, AdaptiveLIFNode, DeltaEncoder, SigmaDeltaEncoder  # noqa: E402

T, B, N_IN, N_HID, N_OUT = 10, 3, 4, 6, 3
BETAS = (0.25, 0.5, 0.75, 0.875)
THRESHOLDS = (0.5, 1.0, 1.5)


def dyadic(shape, gen, scale=4.0, span=8):
    return torch.randint(-span, span + 1, shape, generator=gen).to(torch.float32) / scale


def dyadic_params(net: nn.Module, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim >= 1 and p.numel() > 1:
                p.copy_(dyadic(p.shape, gen))
    return net


def run_sj(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    functional.reset_net(net)
    out = torch.stack([net(xt) for xt in x])
    functional.reset_net(net)
    return out


def run_snn(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    snn_utils.reset(net)
    out = torch.stack([net(xt) for xt in x])
    snn_utils.reset(net)
    return out.detach()


def run_graph_module(gm, x: torch.Tensor) -> torch.Tensor:
    """Run a nirtorch GraphModule (snnTorch's / SpikingJelly's importers) step by step, threading its state."""
    state, out = None, []
    for xt in x:
        y, state = gm(xt, state)
        out.append(y)
    return torch.stack(out).detach()


sj_neurons = st.one_of(
    st.builds(lambda thr, reset: SBLIFNode(tau=None, v_threshold=thr, v_reset=reset),
              st.sampled_from(THRESHOLDS), st.sampled_from([None, 0.0])),
    st.builds(lambda tau, di, thr, reset: SBLIFNode(tau=tau, decay_input=di, v_threshold=thr, v_reset=reset),
              st.sampled_from([2.0, 4.0]), st.booleans(), st.sampled_from(THRESHOLDS), st.sampled_from([None, 0.0])),
    st.builds(lambda thr: SBLIFNode(tau=None, v_reset=None, v_threshold=thr, rounding=True), st.sampled_from(THRESHOLDS)),
    st.builds(lambda tau, di: neuron.LIFNode(tau=tau, decay_input=di), st.sampled_from([2.0, 4.0]), st.booleans()),
)
snn_neurons = st.builds(
    lambda beta, thr, mech, disable: SBLeaky(beta=beta, threshold=thr, reset_mechanism=mech, init_hidden=True,
                                             surrogate_disable=disable),
    st.sampled_from(BETAS + (1.0,)), st.sampled_from(THRESHOLDS), st.sampled_from(["zero", "subtract", "none"]), st.booleans(),
)
sb_neuron_layers = st.one_of(
    st.builds(lambda thr, reset, rnd: AdaptiveIFNode(threshold=thr, reset=reset, rounding=rnd, v_reset=0.0),
              st.sampled_from(THRESHOLDS), st.sampled_from(["soft", "hard"]), st.booleans()),
    st.builds(lambda decay, thr, reset: AdaptiveLIFNode(decay, threshold=thr, reset=reset),
              st.sampled_from(BETAS), st.sampled_from(THRESHOLDS), st.sampled_from(["soft", "hard"])),
)


def two_layer(make, seed: int) -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(N_IN, N_HID), make(0), nn.Linear(N_HID, N_OUT, bias=False), make(1))
    dyadic_params(net, gen)
    return net, dyadic((T, B, N_IN), gen, span=12)


# -- ours == NIR primitives (forward Euler) and bit-exact round trip -------------------------------------
@settings(max_examples=40)
@given(seed=st.integers(0, 2**31 - 1), layers=st.lists(st.one_of(sj_neurons, snn_neurons, sb_neuron_layers), min_size=2, max_size=2))
@example(seed=514, layers=[SBLIFNode(tau=2.0, decay_input=False, v_threshold=0.5, v_reset=None),
                           AdaptiveLIFNode(0.75, threshold=1.5, reset="hard")])  # decay was sigmoid(logit) = 0.75000006
def test_export_equals_nir_primitives_and_round_trip(seed, layers):
    net, x = two_layer(lambda i: layers[i], seed)
    runner = run_snn if any(isinstance(m, SBLeaky) for m in layers) else run_sj
    reference = runner(net, x) if not any(isinstance(m, (AdaptiveIFNode,)) for m in layers) else _run_mixed(net, x)
    graph = export_to_nir(net, x[0])
    primitives = import_from_nir(graph, fuse=False)
    assert not any(isinstance(m, (SBLIFNode, SBLeaky, AdaptiveIFNode)) for m in primitives.modules())
    assert torch.equal(primitives(x), reference)  # the NIR graph itself, primitive by primitive
    ours = import_from_nir(graph)
    assert torch.equal(ours(x), reference)  # our neurons rebuilt, spike for spike
    for built, original in zip([m for m in ours.modules() if _is_neuron(m)], layers):
        assert type(built) is type(original) or isinstance(original, neuron.LIFNode)


def _is_neuron(m: nn.Module) -> bool:
    return isinstance(m, (SBLIFNode, SBLeaky, AdaptiveIFNode))


def _run_mixed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for m in net.modules():
        if isinstance(m, AdaptiveIFNode):
            m.reset()
    functional.reset_net(net)
    snn_utils.reset(net)
    out = torch.stack([net(xt) for xt in x]).detach()
    for m in net.modules():
        if isinstance(m, AdaptiveIFNode):
            m.reset()
    return out


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), layer=st.one_of(sj_neurons, snn_neurons, sb_neuron_layers))
def test_round_trip_is_bit_exact_on_random_floats(seed, layer):
    """Ours -> NIR -> ours: the same classes and parameters, hence the same spikes on any float input."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(N_IN, N_HID), layer)
    x = torch.randn((T, B, N_IN), generator=gen) * 2
    reference = _run_mixed(net, x)
    ours = import_from_nir(export_to_nir(net, x[0]))
    assert torch.equal(ours(x), reference)
    (built,) = [m for m in ours.modules() if _is_neuron(m)]
    if isinstance(layer, SBLIFNode):
        assert (built.tau, built.decay_input, built.v_threshold, built.v_reset, built.rounding) == (
            layer.tau, layer.decay_input, layer.v_threshold, layer.v_reset, layer.rounding)
    elif isinstance(layer, SBLeaky):
        assert float(built.beta) == float(layer.beta) and float(built.threshold) == float(layer.threshold)
        assert built.reset_mechanism == layer.reset_mechanism
    elif isinstance(layer, AdaptiveIFNode):
        assert built._fixed_threshold_value.item() == layer._fixed_threshold_value.item()
        assert float(built.decay) == float(layer.decay)


def test_write_read_keeps_the_graph(tmp_path):
    net, x = two_layer(lambda i: SBLIFNode(tau=2.0, v_reset=None), 0)
    path = tmp_path / "net.nir"
    export_to_nir(net, x[0], path=str(path))
    assert torch.equal(import_from_nir(str(path))(x), run_sj(net, x))


# -- against snnTorch's and SpikingJelly's own NIR paths ----------------------------------------------------
@settings(max_examples=25)
@given(seed=st.integers(0, 2**31 - 1), beta=st.sampled_from(BETAS), thr=st.sampled_from(THRESHOLDS),
       ours_flavor=st.sampled_from(["sbleaky", "sblif"]))
def test_snntorch_importer_runs_our_export_spike_for_spike(seed, beta, thr, ours_flavor):
    """snnTorch's import_from_nir (LIF, zero reset, dt = 1e-4) runs our hard-reset exports exactly, ties included."""
    from snntorch.import_nir import import_from_nir as snn_import

    if ours_flavor == "sbleaky":
        make = lambda i: SBLeaky(beta=beta, threshold=thr, reset_mechanism="zero", init_hidden=True)  # noqa: E731
        runner = run_snn
    else:  # SpikingJelly LIF without decay_input and reset to 0 is snnTorch's form: tau = 1 / (1 - beta)
        make = lambda i: SBLIFNode(tau=1.0 / (1.0 - beta), decay_input=False, v_threshold=thr, v_reset=0.0)  # noqa: E731
        runner = run_sj
    net, x = two_layer(make, seed)
    graph = export_to_nir(net, x[0])
    assert torch.equal(run_graph_module(snn_import(graph), x), runner(net, x))


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31 - 1), beta=st.sampled_from(BETAS), thr=st.sampled_from(THRESHOLDS))
def test_snntorch_export_of_leaky_imports_as_our_neurons(seed, beta, thr):
    """A graph snnTorch exports from snn.Leaky (reset "zero") becomes SBLeaky neurons with the same spikes."""
    from snntorch.export_nir import export_to_nir as snn_export

    # snnTorch's exporter needs per-neuron beta / threshold tensors to write typed NIR nodes (with scalars its
    # graph fails nir's type check) and an unbatched sample
    make = lambda i: snntorch.Leaky(beta=torch.full(((N_HID, N_OUT)[i],), beta),  # noqa: E731
                                    threshold=torch.full(((N_HID, N_OUT)[i],), thr), init_hidden=True, reset_mechanism="zero")
    net, x = two_layer(make, seed)
    graph = snn_export(net, x[0, 0])
    ours = import_from_nir(graph)
    assert [type(m) for m in ours.modules() if _is_neuron(m)] == [SBLeaky, SBLeaky]
    assert torch.equal(ours(x), run_snn(net, x))


def test_snntorch_subtract_export_is_its_hard_reset():
    """snnTorch writes a subtract-reset Leaky as NIR's (hard-reset) LIF; we import what the graph says, as
    snnTorch's own importer does, and say so: the graph, not the original network, is the reference."""
    from snntorch.export_nir import export_to_nir as snn_export
    from snntorch.import_nir import import_from_nir as snn_import

    make = lambda i: snntorch.Leaky(beta=torch.full(((N_HID, N_OUT)[i],), 0.5),  # noqa: E731
                                    threshold=torch.full(((N_HID, N_OUT)[i],), 1.0), init_hidden=True)
    net, x = two_layer(make, 3)
    graph = snn_export(net, x[0, 0])
    ours = import_from_nir(graph)
    assert all(m.reset_mechanism == "zero" for m in ours.modules() if isinstance(m, SBLeaky))
    assert torch.equal(ours(x), run_graph_module(snn_import(graph), x))


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), tau=st.sampled_from([2.0, 4.0]), decay_input=st.booleans())
def test_spikingjelly_paths_agree_off_ties(seed, tau, decay_input):
    """SpikingJelly's exporter / importer and ours agree on random floats (no ties): SpikingJelly reads NIR's
    ``v > theta`` as its own ``v >= theta``, so the two differ only where a potential equals a threshold."""
    from spikingjelly.activation_based.nir_exchange import export_to_nir as sj_export
    from spikingjelly.activation_based.nir_exchange import import_from_nir as sj_import

    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(N_IN, N_HID), neuron.LIFNode(tau=tau, decay_input=decay_input),
                        nn.Linear(N_HID, N_OUT), neuron.LIFNode(tau=tau, decay_input=decay_input))
    x = torch.randn((T, B, N_IN), generator=gen) * 3
    reference = run_sj(net, x)
    assert torch.equal(import_from_nir(sj_export(net, x[0]))(x), reference)
    assert torch.equal(run_graph_module(sj_import(export_to_nir(net, x[0])), x), reference)


# -- the delta encoder, convolutions ------------------------------------------------------------------------
@settings(max_examples=30)
@given(seed=st.integers(0, 2**31 - 1), thr=st.sampled_from([0.25, 0.5, 1.0]), off=st.booleans())
def test_delta_encoder_composition_is_exact(seed, thr, off):
    gen = torch.Generator().manual_seed(seed)
    enc = DeltaEncoder(threshold=thr, off_spike=off)
    net = nn.Sequential(enc, nn.Linear(N_IN, N_HID), SBLIFNode(tau=None, v_reset=None, step_mode="m"))
    x = dyadic((T, B, N_IN), gen)
    dyadic_params(net, gen)
    enc.reset()
    reference = net(x)
    functional.reset_net(net)
    enc.reset()
    graph = export_to_nir(net, x)
    for fuse in (True, False):
        assert torch.equal(import_from_nir(graph, fuse=fuse)(x), reference)
    assert any(isinstance(m, DeltaEncoder) for m in import_from_nir(graph).modules())


def test_conv_flatten_network():
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), SBLIFNode(tau=2.0), nn.Flatten(), nn.Linear(3 * 5 * 5, 4),
                        SBLIFNode(tau=None, v_reset=None))
    dyadic_params(net, gen)
    x = dyadic((T, B, 2, 5, 5), gen)
    graph = export_to_nir(net, x[0])
    assert isinstance(graph.nodes["0"], nir.Conv2d) and tuple(graph.nodes["1"].tau.shape) == (3, 5, 5)
    for fuse in (True, False):
        assert torch.equal(import_from_nir(graph, fuse=fuse)(x), run_sj(net, x))


def test_parameter_conventions():
    """The documented formulas (module docstring table), read off the written graph."""
    dt = 1e-3
    g = export_to_nir(nn.Sequential(nn.Linear(2, 2), SBLIFNode(tau=4.0, decay_input=False, v_threshold=1.0, v_reset=0.0)),
                      torch.zeros(1, 2), dt=dt, ties="unchanged")
    lif = g.nodes["1"]
    assert isinstance(lif, nir.LIF)
    assert np.allclose(lif.tau, 4.0 * dt) and np.allclose(lif.r, 4.0) and np.all(lif.v_leak == 0.0)
    assert np.all(lif.v_reset == 0.0) and np.all(lif.v_threshold == 1.0)
    g = export_to_nir(nn.Sequential(nn.Linear(2, 2), SBLeaky(beta=0.75, init_hidden=True, reset_mechanism="zero")),
                      torch.zeros(1, 2))
    lif = g.nodes["1"]
    assert np.allclose(lif.tau, 1e-4 / 0.25) and np.allclose(lif.r, 4.0) and np.all(lif.v_reset == 0)
    assert np.all(lif.v_threshold == 1.0)  # snnTorch's surrogate fires at v > theta, NIR's rule: unchanged
    g = export_to_nir(nn.Sequential(nn.Linear(2, 2), SBLIFNode(tau=None, v_reset=None)), torch.zeros(1, 2))
    sub = g.nodes["1"]
    assert isinstance(sub, nir.NIRGraph) and isinstance(sub.nodes["membrane"], nir.I)
    assert np.all(sub.nodes["reset"].scale == -1.0)
    assert np.all(sub.nodes["spike"].threshold == np.nextafter(np.float32(1), np.float32(0)))  # ties="exact"


# -- refusals and bad graphs -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layer, words",
    [
        (SBLIFNode(tau=None, v_reset=None, v_threshold="first_step"), ["'1'", "first_step", "fixed float v_threshold"]),
        (SBLeaky(beta=0.5, threshold="first_step", init_hidden=True), ["'1'", "first_step", "fixed float threshold"]),
        (AdaptiveIFNode(), ["'1'", "first_step", "fixed float threshold"]),
        (SBLIFNode(tau=None, v_threshold=1.0, signed=True), ["signed=False"]),
        (AdaptiveLIFNode(0.5, threshold=1.0, reset="hard", v_reset=0.5), ["v_reset=0.0"]),
        (SBLIFNode(tau=2.0, v_reset=-0.5), ["starts the membrane at v_reset", "v_reset=0.0"]),
        (AdaptiveIFNode(threshold=1.0, homeostasis=(0.01, 0.2)), ["homeostasis=None"]),
        (SBSpikeCountNode(), ["multi-spike", "SBLIFNode"]),
        (SBLeaky(beta=0.5), ["init_hidden=True"]),
        (nn.ReLU(), ["ReLU", "'1'", "no mapping"]),
    ],
)
def test_unsupported_options_raise_the_documented_error(layer, words):
    net = nn.Sequential(nn.Linear(4, 4), layer)
    with pytest.raises(NIRExportError) as info:
        export_to_nir(net, torch.zeros(2, 4))
    for word in words:
        assert word in str(info.value)


def test_spiking_linear_and_sigma_delta_are_refused():
    from sb_layers import SpikingLinear

    with pytest.raises(NIRExportError, match="adaptive threshold.*no option makes it exportable"):
        export_to_nir(nn.Sequential(SpikingLinear(4, 4), SBLIFNode()), torch.zeros(2, 4))
    with pytest.raises(NIRExportError, match="multi-spike integer counts.*DeltaEncoder"):
        export_to_nir(nn.Sequential(SigmaDeltaEncoder(0.5)), torch.zeros(3, 2, 4))
    with pytest.raises(NIRExportError, match="padding=False"):
        export_to_nir(nn.Sequential(DeltaEncoder(padding=True)), torch.zeros(3, 2, 4))


def test_export_argument_checks():
    net = nn.Sequential(nn.Linear(4, 4), SBLIFNode())
    with pytest.raises(ValueError, match="dt"):
        export_to_nir(net, torch.zeros(2, 4), dt=0.0)
    with pytest.raises(ValueError, match="ties"):
        export_to_nir(net, torch.zeros(2, 4), ties="round")
    with pytest.raises(TypeError, match="sample_data"):
        export_to_nir(net, torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="module"):
        export_to_nir("net", torch.zeros(2, 4))


class _Doubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) * 2


def test_untraceable_operation_is_named():
    with pytest.raises(NIRExportError, match="mul"):
        export_to_nir(_Doubler(), torch.zeros(2, 4))


def _small_graph():
    return nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2])), "lin": nir.Linear(weight=np.eye(2, dtype=np.float32)),
               "output": nir.Output(np.array([2]))},
        edges=[("input", "lin"), ("lin", "output")], type_check=False)


def test_bad_graphs_give_clear_errors():
    g = _small_graph()
    g.nodes["cuba"] = nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))
    g.edges = [("input", "lin"), ("lin", "cuba"), ("cuba", "output")]
    with pytest.raises(NIRImportError, match="'cuba' has type CubaLI"):
        import_from_nir(g)
    g = _small_graph()
    g.edges = [("input", "lin"), ("lin", "nowhere")]
    with pytest.raises(NIRImportError, match="'nowhere'"):
        import_from_nir(g)
    g = _small_graph()
    g.nodes["lin"] = nir.Linear(weight=np.ones((3, 2), dtype=np.float32))
    with pytest.raises(NIRImportError, match=r"edge \('lin', 'output'\).*\(3,\).*\(2,\)"):
        import_from_nir(g)
    g = _small_graph()
    del g.nodes["output"]
    g.edges = [("input", "lin")]
    with pytest.raises(NIRImportError, match="one Input and one Output"):
        import_from_nir(g)
    g = _small_graph()
    g.nodes["lif"] = nir.LIF(tau=np.array([1e-3, 2e-3]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    g.edges = [("input", "lin"), ("lin", "lif"), ("lif", "output")]
    with pytest.raises(NIRImportError, match="'lif': tau differs between neurons.*fuse=False"):
        import_from_nir(g)
    assert isinstance(import_from_nir(g, fuse=False), NIRNetwork)  # the primitive runs per neuron
    with pytest.raises(TypeError, match="graph"):
        import_from_nir(42)
    with pytest.raises(ValueError, match="shape"):
        import_from_nir(_small_graph())(torch.zeros(3, 1, 5))
