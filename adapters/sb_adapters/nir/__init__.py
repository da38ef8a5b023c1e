"""NIR export and import: our spiking networks to and from the Neuromorphic Intermediate Representation.

``from sb_adapters.nir import export_to_nir, import_from_nir`` (needs the optional extra
``pip install spikingbrain[nir]``: ``nir`` and ``nirtorch``). NIR (https://neuroir.org) is the graph
format through which spiking networks reach Loihi, SpiNNaker2, Xylo, Speck and simulators (Norse, Lava,
snnTorch, SpikingJelly).

Discretization (what "exact" means here). NIR primitives are continuous-time ODEs; a graph is run at a
time step ``dt`` (default ``1e-4`` s, the value snnTorch's and SpikingJelly's NIR paths use) by forward
Euler, one step per input step ``x_t``:

- ``LI``: ``v <- v + (dt / tau) * (v_leak - v + r * I)``; ``I`` (integrator): ``v <- v + dt * r * I``;
- ``LIF`` / ``IF``: the same charge, then fire ``z = 1 if v > v_threshold`` and reset ``v <- v_reset``
  where ``z = 1`` (NIR's only reset: hard);
- ``Threshold``: ``z = 1 if x > threshold``; ``Scale``: ``x * scale``; ``Affine`` / ``Linear`` /
  ``Conv2d`` / ``Flatten``: applied to each step; ``Delay(delay)``: ``delay / dt`` whole steps;
- edges carry a value within the same step, except an edge that closes a cycle (a recurrent edge), which
  carries the previous step's value (zero at the first step); several edges into a node are summed.

Under this discretization every export below is exact: the NIR graph computes the same spikes as our
module, in real arithmetic and, where the simulator evaluates the same expressions (our importer does),
bit for bit. Each neuron's shape in the graph is one sample of one time step (batch and time removed).

Mapping (``theta`` the firing threshold, ``rho`` the hard-reset potential, ``prev(theta)`` see "ties"):

=========================================================  ===========================================
ours                                                       NIR
=========================================================  ===========================================
``nn.Linear`` (bias / no bias)                             ``Affine(W, b)`` / ``Linear(W)``
``nn.Conv2d`` (zero padding)                               ``Conv2d`` (bias zeros when absent)
``nn.Flatten(start, end)``                                 ``Flatten(start - 1, end - 1)`` (batch removed)
``SBLIFNode`` / ``neuron.IFNode`` (``tau=None``), hard     ``IF(r = 1/dt, v_threshold = prev(theta), v_reset = 0)`` (``v_reset = 0.0`` only)
``SBLIFNode`` / ``neuron.LIFNode`` (``tau``), hard         ``LIF(tau = tau*dt, r = 1 if decay_input else tau, v_leak = 0, v_threshold = prev(theta), v_reset = 0)``
``SBLeaky`` / ``snn.Leaky`` ``reset_mechanism="zero"``     ``LIF(tau = dt/(1-beta), r = 1/(1-beta), v_leak = 0, v_threshold, v_reset = 0)`` (``IF(r = 1/dt)`` for ``beta = 1``)
``AdaptiveIFNode`` (fixed threshold), ``reset="hard"``     ``IF(r = 1/dt, prev(theta), v_reset = rho)``
``AdaptiveLIFNode`` (fixed threshold), hard, ``v_reset=0``  ``LIF(tau = dt/(1-decay), r = 1/(1-decay), 0, prev(theta), 0)``
soft (subtractive) reset, any of the neurons above         sub-graph ``input -> membrane -> spike -> output`` with the
                                                           recurrent edge ``spike -> reset -> membrane``:
                                                           membrane ``I(r = 1/dt)`` (IF) or ``LI(tau, r, v_leak = 0)``
                                                           (tau, r as in the hard rows), ``spike = Threshold(prev(theta))``,
                                                           ``reset = Scale(w)`` with ``w = -theta`` (IF, snnTorch, sb_neurons),
                                                           ``-(tau - 1) * theta`` (SpikingJelly LIF, ``decay_input``) or
                                                           ``-(1 - 1/tau) * theta`` (SpikingJelly LIF, no ``decay_input``)
``SBLeaky`` ``reset_mechanism="none"``                     the same sub-graph without the reset edge
``graded_spikes_factor = g != 1`` (SBLeaky)                a ``Scale(g)`` after the spikes (sub-graph)
``rounding=True`` (SBLIFNode, sb_neurons)                  the spike threshold is ``theta / 2`` (the reset still ``theta``)
``DeltaEncoder(threshold, off_spike, padding=False)``      sub-graph ``d = x + Scale(-1)(Delay(dt)(x))``,
                                                           ``on = Threshold(prev(threshold))(d)``, ``off = Threshold(prev(threshold))(-d)``,
                                                           output ``on - off`` (``on`` alone without ``off_spike``)
=========================================================  ===========================================

Why the soft reset is exact as a sub-graph: the potential before firing obeys
``h_t = decay * h_{t-1} + gain * x_t + w * s_{t-1}`` (SpikingJelly's LIF leaks after the reset, so its
``w`` carries the leak; snnTorch's ``Leaky`` and :mod:`sb_neurons` subtract ``theta`` after the leak), a
leaky integrator fed by the input and by the previous step's spikes.

Ties. Our neurons (SpikingJelly's and ours) fire at ``v >= theta``; NIR (and snnTorch's ``Leaky``) at
``v > theta``. With ``ties="exact"`` (default) the graph stores ``prev(theta)``, the largest float of the
sample data's dtype below ``theta``, so that ``v > prev(theta)`` is ``v >= theta`` for every ``v`` of
that dtype (a plain ``snn.Leaky`` already fires at ``>`` and keeps its threshold). ``ties="unchanged"``
writes ``theta`` itself (round numbers for hardware whose thresholds are integers); the graph then
differs from our module exactly where the potential equals the threshold. The importer reads NIR's
``v > theta`` back exactly: our neuron gets the smallest float above ``theta``, so a ``prev(theta)``
comes back as ``theta``, bit for bit.

Refused (``NIRExportError``, a ``ValueError`` naming the module path, why, and what makes it exportable):
the adaptive threshold ``V_th = mean|x| / k`` (``v_threshold="first_step"`` / ``"total"``,
``threshold="first_step"``): a threshold computed from the data has no NIR primitive, use a fixed float;
``signed`` (ternary) spikes; homeostasis; a non-zero ``v_init``; a SpikingJelly neuron with
``v_reset != 0`` (SpikingJelly starts its membrane at ``v_reset``, NIR neurons at 0); ``AdaptiveLIFNode`` with a hard reset to
``v_reset != 0`` (it does not leak its reset value, NIR's LIF does); ``SBLeaky`` with ``learn_beta``
is exported at its current value (fine), but a per-neuron ``beta`` / ``threshold`` tensor is written per
neuron; ``SpikingLinear`` and ``SBSpikeCountNode`` (a per-row adaptive threshold and multi-spike integer
counts: there is no exact composition); ``SigmaDeltaEncoder`` (multi-spike counts ``round(x/threshold)``);
``DeltaEncoder(padding=True)`` (NIR delays start from zero); any other module type, and any traced
function but addition.

Import. :func:`import_from_nir` builds a :class:`NIRNetwork`: our modules (``nn.Linear``, ``nn.Conv2d``,
``nn.Flatten``, :class:`SBLIFNode` or :class:`SBLeaky` neurons, :class:`DeltaEncoder`) wired by the
graph's edges and run step by step over a time-major input ``[T, B, *]``. Our sub-graphs are recognized
by structure and become one neuron again (``fuse=True``); ``fuse=False``, and any other sub-graph, runs
the primitives themselves by the discretization above (``LI``, ``I``, ``Threshold``, ``Scale``,
``Delay``), an independent reference for the tests.

Modules, one job each: :mod:`~sb_adapters.nir.exporter` (our modules to a NIR graph),
:mod:`~sb_adapters.nir.runtime` (:class:`NIRNetwork` and the NIR primitives it runs step by step),
:mod:`~sb_adapters.nir.importer` (a NIR graph built into our modules) and :mod:`~sb_adapters.nir.common`
(the ``nir`` import, the errors, the option types and the tie rule they share). This package re-exports
their public names.
"""

from .common import DEFAULT_DT, NeuronFlavor, NIRExportError, NIRImportError, Ties  # noqa: F401 (the option types)
from .exporter import export_to_nir
from .importer import import_from_nir
from .runtime import NIRNetwork

__all__ = ["DEFAULT_DT", "NIRExportError", "NIRImportError", "NIRNetwork", "export_to_nir", "import_from_nir"]
