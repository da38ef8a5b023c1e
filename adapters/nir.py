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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

try:
    import nir
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sb_adapters.nir needs the 'nir' package: pip install 'spikingbrain[nir]' (nir>=1.0.8, nirtorch>=2.6)"
    ) from error

DEFAULT_DT = 1e-4
Ties = Literal["exact", "unchanged"]
NeuronFlavor = Literal["auto", "spikingjelly", "snntorch"]
_META = "sb_adapters"

__all__ = ["DEFAULT_DT", "NIRExportError", "NIRImportError", "NIRNetwork", "export_to_nir", "import_from_nir"]


class NIRExportError(ValueError):
    """A module (or option) that has no exact NIR form; the message names the module path and the fix."""


class NIRImportError(ValueError):
    """A NIR graph that cannot be built into our modules; the message names the node or edge."""


# -- ties -------------------------------------------------------------------------------------------
def _np_dtype(dtype: torch.dtype) -> type:
    if dtype == torch.float64:
        return np.float64
    if dtype == torch.float32:
        return np.float32
    raise NIRExportError(f"sample_data must be float32 or float64 (the dtype of the thresholds written), got {dtype}")


def _below(theta: np.ndarray, dtype: type) -> np.ndarray:
    """Largest value of ``dtype`` below ``theta``: ``v > _below(theta)`` iff ``v >= theta`` in ``dtype``."""
    theta = np.asarray(theta, dtype=dtype)
    return np.nextafter(theta, np.asarray(-np.inf, dtype=dtype))


def _above(theta: np.ndarray, dtype: type) -> np.ndarray:
    """Smallest value of ``dtype`` above the exact ``theta``: ``v >= _above(theta)`` iff ``v > theta``."""
    exact = np.asarray(theta, dtype=np.float64)
    rounded = exact.astype(dtype)
    bumped = np.nextafter(rounded, np.asarray(np.inf, dtype=dtype))
    return np.where(rounded.astype(np.float64) > exact, rounded, bumped).astype(dtype)


# -- export -----------------------------------------------------------------------------------------
def _full(shape: tuple[int, ...], value: Any, dtype: type) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=dtype), shape).copy()


def _scalar(value: Any, name: str, path: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise NIRExportError(f"{path}: {name} must be one value for the layer, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach())
    return float(value)


def _refuse(path: str, module: nn.Module, what: str, fix: str) -> NIRExportError:
    return NIRExportError(f"cannot export {type(module).__name__} at '{path}' to NIR: {what}; {fix}")


class _Neuron:
    """Plain description of one neuron layer in our terms, from which its NIR form is written."""

    def __init__(self, *, membrane: str, decay_form: str | None, tau: float | None, r: float | None,
                 theta: float, fire: float, reset: str, rho: float = 0.0, w: float | None = None,
                 fires_at_ge: bool = True, graded: float = 1.0, flavor: str, params: dict) -> None:
        self.membrane, self.decay_form, self.tau, self.r = membrane, decay_form, tau, r
        self.theta, self.fire, self.reset, self.rho, self.w = theta, fire, reset, rho, w
        self.fires_at_ge, self.graded, self.flavor, self.params = fires_at_ge, graded, flavor, params


def _describe_sj(module: nn.Module, path: str, dt: float) -> _Neuron:
    from spikingjelly.activation_based import neuron as sj_neuron

    v_th = module.v_threshold
    if isinstance(v_th, str):
        raise _refuse(path, module, f"v_threshold={v_th!r} is SpikingBrain's adaptive threshold V_th = mean|x| / k, "
                      "computed from the data; NIR has no primitive for a data-dependent threshold",
                      "give it a fixed float v_threshold (e.g. a calibrated mean of V_th) to export it")
    for flag, fix in (("signed", "signed=False"), ("rounding", None)):
        if flag == "signed" and getattr(module, "signed", False):
            raise _refuse(path, module, "signed=True fires ternary spikes (-1, 0, 1); NIR neurons fire 0 / 1", "use signed=False")
    rounding = bool(getattr(module, "rounding", False))
    if getattr(module, "learn_threshold", False) and hasattr(module, "threshold_parameter"):
        v_th = module.threshold_parameter
    theta = _scalar(v_th, "v_threshold", path)
    tau = getattr(module, "tau", None)
    if isinstance(module, sj_neuron.IFNode):
        tau = None
    decay_input = bool(getattr(module, "decay_input", True))
    v_reset = module.v_reset
    if v_reset is not None and float(v_reset) != 0.0:
        raise _refuse(path, module, f"v_reset={v_reset}: SpikingJelly starts the membrane at v_reset, a NIR neuron at 0, "
                      "so the first steps would differ", "use v_reset=0.0 (hard reset) or v_reset=None (soft reset)")
    fire = theta / 2 if rounding else theta
    params = {"tau": tau, "decay_input": decay_input, "v_threshold": theta, "v_reset": v_reset, "rounding": rounding}
    flavor = "spikingjelly"
    if not _fires_at_ge(module.surrogate_function, path):  # pragma: no cover - every SpikingJelly surrogate fires at 0
        raise NIRExportError(f"'{path}': its surrogate_function does not fire at v == threshold as SpikingJelly's do")
    if tau is None:
        if v_reset is None:
            return _Neuron(membrane="I", decay_form=None, tau=None, r=1.0 / dt, theta=theta, fire=fire, reset="soft",
                           w=-theta, flavor=flavor, params=params)
        return _Neuron(membrane="IF", decay_form=None, tau=None, r=1.0 / dt, theta=theta, fire=fire, reset="hard",
                       rho=float(v_reset), flavor=flavor, params=params)
    tau = float(tau)
    r = 1.0 if decay_input else tau
    if v_reset is None:
        w = -(tau - 1.0) * theta if decay_input else -(1.0 - 1.0 / tau) * theta
        return _Neuron(membrane="LI", decay_form="sj", tau=tau * dt, r=r, theta=theta, fire=fire, reset="soft", w=w,
                       flavor=flavor, params=params)
    return _Neuron(membrane="LIF", decay_form="sj", tau=tau * dt, r=r, theta=theta, fire=fire, reset="hard",
                   rho=float(v_reset), flavor=flavor, params=params)


def _fires_at_ge(spike_fn: Callable[[torch.Tensor], torch.Tensor] | None, path: str) -> bool:
    """Whether a neuron's spike function of ``v - theta`` fires at 0 (``v >= theta``) or not (``v > theta``).

    Probed, not assumed: SpikingJelly's surrogates and :func:`sb_neurons.heaviside` fire at 0; snnTorch's
    surrogates (``atan`` ...) do not, so ``SBLeaky`` / ``Leaky`` with a surrogate fire at ``v > theta``.
    """
    if spike_fn is None:
        from sb_neurons import heaviside

        spike_fn = heaviside
    with torch.no_grad():
        at_zero = spike_fn(torch.zeros(1))
        below = spike_fn(torch.full((1,), -1e-3))
        above = spike_fn(torch.full((1,), 1e-3))
    if not (float(below) == 0.0 and float(above) == 1.0 and float(at_zero) in (0.0, 1.0)):
        raise NIRExportError(f"'{path}': its spike function is not a 0 / 1 step of v - threshold, which NIR neurons are")
    return float(at_zero) == 1.0


def _beta_tau(beta: float, dt: float) -> tuple[float, float]:
    """NIR (tau, r) of the discrete decay ``beta`` in (0, 1): ``dt / tau = 1 - beta``, ``r * dt / tau = 1``."""
    return dt / (1.0 - beta), 1.0 / (1.0 - beta)


def _describe_leaky(module: nn.Module, path: str, dt: float) -> _Neuron:
    from sb_adapters.snntorch import SBLeaky

    ours = isinstance(module, SBLeaky)
    if ours and module.adaptive:
        raise _refuse(path, module, "threshold='first_step' is SpikingBrain's adaptive threshold V_th = mean|x_0| / k, "
                      "computed from the data; NIR has no primitive for a data-dependent threshold",
                      "give it a fixed float threshold to export it")
    if not ours and (getattr(module, "inhibition", False) or getattr(module, "state_quant", False)):
        raise _refuse(path, module, "inhibition / state_quant have no NIR primitive", "switch them off")
    if not ours and not getattr(module, "reset_delay", True):
        raise _refuse(path, module, "reset_delay=False resets within the step", "use reset_delay=True (the default)")
    beta = _scalar(module.beta.clamp(0, 1), "beta", path)
    theta = _scalar(module.threshold, "threshold", path)
    graded = _scalar(module.graded_spikes_factor, "graded_spikes_factor", path)
    mech = module.reset_mechanism
    params = {"beta": beta, "threshold": theta, "reset_mechanism": mech, "graded_spikes_factor": graded}
    if beta <= 0.0:
        raise _refuse(path, module, f"beta={beta} (no memory) has no finite NIR time constant", "use beta in (0, 1]")
    integrate = beta >= 1.0
    tau, r = (None, 1.0 / dt) if integrate else _beta_tau(beta, dt)
    spike_fn = None if module.surrogate_disable else module.spike_grad
    if ours and module.surrogate_disable:
        from sb_neurons import heaviside

        spike_fn = heaviside
    params["surrogate_disable"] = bool(module.surrogate_disable)
    common = dict(theta=theta, fire=theta, fires_at_ge=_fires_at_ge(spike_fn, path), graded=graded, flavor="snntorch",
                  params=params,
                  decay_form=None if integrate else "beta", tau=tau, r=r)
    if mech == "zero":
        return _Neuron(membrane="IF" if integrate else "LIF", reset="hard", rho=0.0, **common)
    return _Neuron(membrane="I" if integrate else "LI", reset="soft" if mech == "subtract" else "none",
                   w=-theta if mech == "subtract" else None, **common)


def _describe_adaptive(module: nn.Module, path: str, dt: float) -> _Neuron:
    from sb_neurons import AdaptiveLIFNode

    if module.threshold_mode != "fixed":
        raise _refuse(path, module, f"threshold={module.threshold_mode!r} is SpikingBrain's adaptive threshold "
                      "V_th = mean|x| / k, computed from the data; NIR has no primitive for a data-dependent threshold",
                      "give it a fixed float threshold to export it")
    if module.signed:
        raise _refuse(path, module, "signed=True fires ternary spikes (-1, 0, 1); NIR neurons fire 0 / 1", "use signed=False")
    if module.homeostasis is not None:
        raise _refuse(path, module, "homeostasis changes the threshold with the spike count", "use homeostasis=None")
    if module.v_init != 0.0:
        raise _refuse(path, module, f"v_init={module.v_init}: NIR neurons start at 0", "use v_init=0.0")
    value = module.fixed_threshold if module.fixed_threshold is not None else module._fixed_threshold_value
    theta = _scalar(value, "threshold", path)
    fire = theta / 2 if module.rounding else theta
    leaky = isinstance(module, AdaptiveLIFNode)
    decay = _scalar(module.decay, "decay", path) if leaky else 1.0
    params = {"decay": decay, "threshold": theta, "reset": module.reset_mode, "v_reset": module.v_reset,
              "rounding": module.rounding, "leaky": leaky}
    tau, r = _beta_tau(decay, dt) if leaky else (None, 1.0 / dt)
    if not _fires_at_ge(module.surrogate, path):  # pragma: no cover - sb_neurons surrogates fire at 0
        raise NIRExportError(f"'{path}': its surrogate does not fire at v == threshold")
    common = dict(theta=theta, fire=fire, flavor="sb_neurons", params=params, tau=tau, r=r,
                  decay_form="beta" if leaky else None)
    if module.reset_mode == "hard":
        if leaky and module.v_reset != 0.0:
            raise _refuse(path, module, f"a hard reset to v_reset={module.v_reset} is not leaked by this neuron "
                          "(v = decay * (1 - s) * v + v_reset * s + x) but is by NIR's LIF", "use v_reset=0.0 or reset='soft'")
        return _Neuron(membrane="LIF" if leaky else "IF", reset="hard", rho=module.v_reset, **common)
    return _Neuron(membrane="LI" if leaky else "I", reset="soft", w=-theta, **common)


def _neuron_nodes(desc: _Neuron, shape: tuple[int, ...], dtype: type, ties: Ties, path: str) -> nir.NIRNode:
    fire = desc.fire
    if desc.fires_at_ge and ties == "exact":
        fire_arr = _below(_full(shape, fire, dtype), dtype)
    else:
        fire_arr = _full(shape, fire, dtype)
    meta = {"module": path, "flavor": desc.flavor, "params": repr(desc.params), "fires_at": ">=" if desc.fires_at_ge else ">",
            "ties": ties}
    f = lambda v: _full(shape, v, np.float64)  # noqa: E731 - time constants in float64
    if desc.membrane == "IF":
        cell = nir.IF(r=f(desc.r), v_threshold=fire_arr, v_reset=_full(shape, desc.rho, dtype))
    elif desc.membrane == "LIF":
        cell = nir.LIF(tau=f(desc.tau), r=f(desc.r), v_leak=_full(shape, desc.rho, dtype), v_threshold=fire_arr,
                       v_reset=_full(shape, desc.rho, dtype))
    elif desc.membrane == "I":
        cell = nir.I(r=f(desc.r))
    else:
        cell = nir.LI(tau=f(desc.tau), r=f(desc.r), v_leak=_full(shape, 0.0, dtype))
    if desc.membrane in ("IF", "LIF") and desc.graded == 1.0:
        cell.metadata = {_META: meta}
        return cell
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type=np.array(shape)), "membrane": cell}
    edges = [("input", "membrane")]
    last = "membrane"
    if desc.membrane in ("I", "LI"):
        nodes["spike"] = nir.Threshold(threshold=fire_arr)
        edges.append(("membrane", "spike"))
        last = "spike"
        if desc.reset == "soft":
            nodes["reset"] = nir.Scale(scale=_full(shape, desc.w, dtype))
            edges += [("spike", "reset"), ("reset", "membrane")]
    if desc.graded != 1.0:
        nodes["graded"] = nir.Scale(scale=_full(shape, desc.graded, dtype))
        edges.append((last, "graded"))
        last = "graded"
    nodes["output"] = nir.Output(output_type=np.array(shape))
    edges.append((last, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={_META: meta}, type_check=True)


def _delta_nodes(module: nn.Module, shape: tuple[int, ...], dtype: type, ties: Ties, dt: float, path: str) -> nir.NIRGraph:
    if module.padding:
        raise _refuse(path, module, "padding=True compares the first step with itself, but a NIR Delay starts from zero",
                      "use padding=False")
    theta = _full(shape, module.threshold, dtype)
    fire = _below(theta, dtype) if ties == "exact" else theta
    nodes = {
        "input": nir.Input(input_type=np.array(shape)),
        "now": nir.Scale(scale=_full(shape, 1.0, dtype)),
        "delay": nir.Delay(delay=_full(shape, dt, np.float64)),
        "minus_previous": nir.Scale(scale=_full(shape, -1.0, dtype)),
        "change": nir.Scale(scale=_full(shape, 1.0, dtype)),
        "on": nir.Threshold(threshold=fire.copy()),
        "output": nir.Output(output_type=np.array(shape)),
    }
    edges = [("input", "now"), ("input", "delay"), ("delay", "minus_previous"), ("now", "change"),
             ("minus_previous", "change"), ("change", "on"), ("on", "output")]
    if module.off_spike:
        nodes["negate"] = nir.Scale(scale=_full(shape, -1.0, dtype))
        nodes["off"] = nir.Threshold(threshold=fire.copy())
        nodes["off_sign"] = nir.Scale(scale=_full(shape, -1.0, dtype))
        edges += [("change", "negate"), ("negate", "off"), ("off", "off_sign"), ("off_sign", "output")]
    meta = {"module": path, "flavor": "delta", "params": repr({"threshold": module.threshold, "off_spike": module.off_spike}),
            "fires_at": ">=", "ties": ties}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={_META: meta}, type_check=True)


def _leaf_types() -> tuple[type, ...]:
    types: list[type] = []
    for loader in (_sj_types, _snn_types, _sb_types):
        types += loader()
    return tuple(types)


def _sj_types() -> list[type]:
    try:
        from spikingjelly.activation_based import neuron as sj_neuron

        from sb_adapters.spikingjelly import SBLIFNode, SBSpikeCountNode
    except ImportError:  # pragma: no cover
        return []
    return [SBLIFNode, SBSpikeCountNode, sj_neuron.IFNode, sj_neuron.LIFNode, sj_neuron.BaseNode]


def _snn_types() -> list[type]:
    try:
        import snntorch
    except ImportError:  # pragma: no cover
        return []
    return [snntorch.SpikingNeuron]


def _sb_types() -> list[type]:
    from sb_neurons import AdaptiveIFNode, DeltaEncoder, SigmaDeltaEncoder

    types = [AdaptiveIFNode, DeltaEncoder, SigmaDeltaEncoder]
    try:
        from sb_layers import SpikingLinear

        types.append(SpikingLinear)
    except ImportError:  # pragma: no cover
        pass
    return types


def _step_shape(module: nn.Module, in_shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """One sample of one step: drop ``[B]`` (single-step) or ``[T, B]`` (multi-step modules)."""
    from sb_neurons import AdaptiveIFNode, DeltaEncoder

    multi = getattr(module, "step_mode", "s") == "m" or isinstance(module, DeltaEncoder)
    if isinstance(module, AdaptiveIFNode):
        multi = module.step_mode == "m"
    drop = 2 if multi else 1
    if len(in_shape) <= drop:
        raise NIRExportError(
            f"'{path}' received input of shape {in_shape} from sample_data; it needs "
            f"{'[T, B, *]' if multi else '[B, *]'} (batch{' and time' if multi else ''} first)"
        )
    return tuple(int(s) for s in in_shape[drop:])


def _map_module(module: nn.Module, path: str, in_shape: tuple[int, ...], dtype: type, ties: Ties, dt: float) -> nir.NIRNode:
    from sb_neurons import AdaptiveIFNode, DeltaEncoder, SigmaDeltaEncoder

    if isinstance(module, nn.Linear) and type(module).__module__.startswith("torch."):
        w = module.weight.detach().cpu().numpy()
        if module.bias is None:
            return nir.Linear(weight=w)
        return nir.Affine(weight=w, bias=module.bias.detach().cpu().numpy())
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise _refuse(path, module, f"padding={module.padding!r}, padding_mode={module.padding_mode!r}",
                          "use numeric zero padding")
        w = module.weight.detach().cpu().numpy()
        bias = module.bias.detach().cpu().numpy() if module.bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
        return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[-2:]), weight=w, stride=module.stride,
                          padding=module.padding, dilation=module.dilation, groups=module.groups, bias=bias)
    if type(module) is nn.Flatten:
        start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
        end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
        if module.start_dim == 0:
            raise _refuse(path, module, "start_dim=0 flattens the batch dimension", "use start_dim >= 1")
        return nir.Flatten(input_type={"input": np.array(in_shape[1:])}, start_dim=start, end_dim=end)
    try:
        from sb_layers import SpikingLinear
    except ImportError:  # pragma: no cover
        SpikingLinear = ()  # type: ignore[assignment]
    if SpikingLinear and isinstance(module, SpikingLinear):
        raise _refuse(path, module, "its input is spike-coded with the adaptive threshold V_th = mean|x| / k of each "
                      "token row (computed from the data) into multi-spike integer counts (codec "
                      f"{module.coding.codec!r}); NIR has no primitive for either and no exact composition exists",
                      "no option makes it exportable: export the synapse alone as nn.Linear with "
                      "weight=layer.effective_weight() and put an exportable neuron before it")
    if isinstance(module, SigmaDeltaEncoder):
        raise _refuse(path, module, "it emits multi-spike integer counts round(x / threshold) - round(x_prev / threshold); "
                      "NIR neurons fire 0 / 1 and have no rounding primitive", "use DeltaEncoder(padding=False)")
    if isinstance(module, DeltaEncoder):
        return _delta_nodes(module, _step_shape(module, in_shape, path), dtype, ties, dt, path)
    if isinstance(module, AdaptiveIFNode):
        return _neuron_nodes(_describe_adaptive(module, path, dt), _step_shape(module, in_shape, path), dtype, ties, path)
    sj = _sj_types()
    if sj:
        SBLIFNode, SBSpikeCountNode, IFNode, LIFNode, BaseNode = sj
        if isinstance(module, SBSpikeCountNode):
            raise _refuse(path, module, "it outputs v_th * round(x / v_th) with the adaptive threshold v_th = mean|x| / k "
                          "(multi-spike counts from a data-dependent threshold); NIR has no primitive for it",
                          "no option makes it exportable; use SBLIFNode with a fixed float v_threshold")
        if type(module) in (SBLIFNode, IFNode, LIFNode):
            return _neuron_nodes(_describe_sj(module, path, dt), _step_shape(module, in_shape, path), dtype, ties, path)
    snn = _snn_types()
    if snn:
        import snntorch

        if type(module) is snntorch.Leaky or (type(module).__name__ == "SBLeaky"):
            if not module.init_hidden:
                raise _refuse(path, module, "init_hidden=False returns (spk, mem) and takes mem as an argument",
                              "build it with init_hidden=True (as snnTorch's own export_to_nir requires)")
            if getattr(module, "output", False):
                raise _refuse(path, module, "output=True returns (spk, mem)", "use output=False")
            return _neuron_nodes(_describe_leaky(module, path, dt), _step_shape(module, in_shape, path), dtype, ties, path)
    raise NIRExportError(
        f"cannot export {type(module).__name__} at '{path}' to NIR: no mapping for this module type (supported: "
        "nn.Linear, nn.Conv2d, nn.Flatten, SBLIFNode / neuron.IFNode / neuron.LIFNode, SBLeaky / snn.Leaky, "
        "sb_neurons.AdaptiveIFNode / AdaptiveLIFNode, sb_neurons.DeltaEncoder)"
    )


def export_to_nir(
    module: nn.Module,
    sample_data: torch.Tensor,
    *,
    dt: float = DEFAULT_DT,
    ties: Ties = "exact",
    path: str | None = None,
) -> nir.NIRGraph:
    """Export a network of our spiking parts to a NIR graph, exactly (see the module docstring).

    Args:
        module: an ``nn.Module`` whose forward is a graph (sequential or with additions) of the supported
            modules, traced with ``torch.fx``; its state is left untouched (a copy runs ``sample_data``).
        sample_data: one input of the network: ``[B, *]`` for single-step networks (SpikingJelly
            ``step_mode='s'``, snnTorch ``init_hidden=True``), ``[T, B, *]`` for multi-step ones; float32 or
            float64 (the dtype in which thresholds are written).
        dt: the NIR time step in seconds (``> 0``); time constants are ``tau_nir = tau_steps * dt``.
        ties: ``"exact"`` (thresholds written so that NIR's ``v > v_threshold`` is our ``v >= theta``) or
            ``"unchanged"`` (theta written as is; differs where the potential equals the threshold).
        path: also write the graph to this HDF5 file (``nir.write``).

    Returns:
        A type-checked ``nir.NIRGraph``: one node per module, named by its module path (dots become
        underscores), an ``Input`` and an ``Output`` node; neuron parameter arrays have the shape of one
        sample of one step. Each neuron node (or sub-graph) carries ``metadata["sb_adapters"]`` with the
        module path, the source library and its parameters, which :func:`import_from_nir` uses to rebuild
        the same class (the NIR parameters alone define the dynamics).

    Raises:
        NIRExportError: for a module or option without an exact NIR form (the message names the module path
            and what makes it exportable), or a traced operation other than addition.
        TypeError / ValueError: ``module`` not a module, ``sample_data`` not a float tensor, bad ``dt`` / ``ties``.
    """
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(sample_data, torch.Tensor) or not sample_data.is_floating_point():
        raise TypeError(f"sample_data must be a floating torch.Tensor, got {type(sample_data).__name__}"
                        + (f" of dtype {sample_data.dtype}" if isinstance(sample_data, torch.Tensor) else ""))
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite float > 0 (seconds per step), got {dt!r}")
    if ties not in ("exact", "unchanged"):
        raise ValueError(f"ties must be 'exact' or 'unchanged', got {ties!r}")
    dtype = _np_dtype(sample_data.dtype)
    dt = float(dt)
    net = module
    leaves = _leaf_types()

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    if isinstance(net, leaves) or not any(True for _ in net.children()):
        net = nn.Sequential(net)
        prefix_strip = True
    else:
        prefix_strip = False
    tracer = _Tracer()
    try:
        graph = tracer.trace(net)
    except Exception as error:  # torch.fx raises many types; say what failed
        raise NIRExportError(f"cannot trace {type(module).__name__} with torch.fx: {error}") from error
    gm = torch.fx.GraphModule(tracer.root, graph)
    saved = [(m, dict(m.__dict__), dict(m._buffers), dict(getattr(m, "_memories", {}))) for m in module.modules()]
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(sample_data)
    finally:  # the module's state (membranes, thresholds, encoder memory) as it was
        for m, attributes, buffers, memories in saved:
            m.__dict__.update(attributes)
            m._buffers.clear()
            m._buffers.update(buffers)
            if memories:
                m._memories.clear()
                m._memories.update(memories)

    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    alias: dict[torch.fx.Node, list[str]] = {}  # fx node -> the NIR nodes whose sum it is

    def sources(arg: Any) -> list[str]:
        if isinstance(arg, torch.fx.Node):
            if arg not in alias:
                raise NIRExportError(f"the traced value '{arg.name}' ({arg.op} {arg.target}) is not a signal of the network")
            return alias[arg]
        if isinstance(arg, (int, float)) and arg == 0:
            return []
        raise NIRExportError(f"only additions of signals can be exported, got the constant {arg!r}")

    def clean(name: str) -> str:
        if prefix_strip:
            name = name[2:] if name.startswith("0.") else type(module).__name__
        return name.replace(".", "_")

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if "input" in nodes:
                raise NIRExportError("the network takes more than one input; NIR export needs a single input tensor")
            shape = tuple(int(s) for s in node.meta["tensor_meta"].shape)
            nodes["input"] = nir.Input(input_type=np.array(shape[1:]))
            alias[node] = ["input"]
        elif node.op == "call_module":
            target = str(node.target)
            mod_path = target if not prefix_strip else (target[2:] if target.startswith("0.") else type(module).__name__)
            sub = gm.get_submodule(target)
            if len(node.args) != 1 or node.kwargs:
                raise NIRExportError(f"'{mod_path}' is called with {len(node.args)} arguments; NIR nodes take one input")
            in_node = node.args[0]
            in_shape = tuple(int(s) for s in in_node.meta["tensor_meta"].shape)
            name = clean(target)
            nodes[name] = _map_module(sub, mod_path, in_shape, dtype, ties, dt)
            edges += [(src, name) for src in sources(in_node)]
            alias[node] = [name]
        elif node.op == "call_function" or node.op == "call_method":
            import operator

            if node.target in (operator.add, torch.add, "add") and len(node.args) == 2 and not node.kwargs:
                alias[node] = sources(node.args[0]) + sources(node.args[1])
            elif node.target is operator.getitem and node.args[1] == 0:
                alias[node] = sources(node.args[0])
            else:
                raise NIRExportError(
                    f"the traced operation {node.op} {getattr(node.target, '__name__', node.target)!r} has no NIR node; "
                    "only modules and additions of their outputs can be exported (wrap other operations in modules)"
                )
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node):
                raise NIRExportError("the network must return a single tensor to be exported")
            shape = tuple(int(s) for s in result.meta["tensor_meta"].shape)
            out_shape = shape[2:] if len(shape) >= 2 and _is_multi_step(gm, result) else shape[1:]
            nodes["output"] = nir.Output(output_type=np.array(out_shape))
            edges += [(src, "output") for src in sources(result)]
        elif node.op == "get_attr":
            raise NIRExportError(f"the network reads the attribute '{node.target}' in forward; NIR graphs carry signals only")
    _fix_multistep_input(nodes, gm)
    graph_out = nir.NIRGraph(nodes=nodes, edges=edges, metadata={_META: {"dt": dt, "ties": ties}}, type_check=True)
    if path is not None:
        nir.write(path, graph_out)
    return graph_out


def _is_multi_step(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """Whether the value of ``node`` is time-major ``[T, B, *]`` (a multi-step module upstream)."""
    from sb_neurons import AdaptiveIFNode, DeltaEncoder

    seen = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op == "call_module":
            sub = gm.get_submodule(str(current.target))
            if isinstance(sub, DeltaEncoder) or getattr(sub, "step_mode", "s") == "m":
                return True
            if isinstance(sub, AdaptiveIFNode):
                return sub.step_mode == "m"
        stack += list(current.all_input_nodes)
    return False


def _fix_multistep_input(nodes: dict[str, nir.NIRNode], gm: torch.fx.GraphModule) -> None:
    """For a multi-step network the Input node's shape drops ``[T, B]``, not only ``[B]``."""
    for node in gm.graph.nodes:
        if node.op == "output" and isinstance(node.args[0], torch.fx.Node) and _is_multi_step(gm, node.args[0]):
            placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
            shape = tuple(int(s) for s in placeholder.meta["tensor_meta"].shape)
            nodes["input"] = nir.Input(input_type=np.array(shape[2:]))


# -- import -----------------------------------------------------------------------------------------
class _Scale(nn.Module):
    def __init__(self, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


class _Threshold(nn.Module):
    """NIR ``Threshold``: ``z = 1 where x > threshold``."""

    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(np.asarray(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class _Integrator(nn.Module):
    """NIR ``LI`` / ``I`` / ``LIF`` / ``IF`` by forward Euler at ``dt`` (the primitive itself, any shape).

    ``LI`` / ``LIF``: ``v <- v + (dt / tau) * (v_leak - v + r * x)``; ``I`` / ``IF``: ``v <- v + dt * r * x``;
    ``LIF`` / ``IF`` then fire ``z = v > v_threshold`` and set ``v <- v_reset`` where ``z``. Returns ``z`` for
    the spiking ones, ``v`` for ``LI`` / ``I``. Coefficients are computed in float64 and applied in the
    input's dtype.
    """

    def __init__(self, node: nir.NIRNode, dt: float) -> None:
        super().__init__()
        self.kind = type(node).__name__
        r = np.asarray(node.r, dtype=np.float64)
        self.leaky = self.kind in ("LI", "LIF")
        if self.leaky:
            self.register_buffer("leak", torch.as_tensor(dt / np.asarray(node.tau, dtype=np.float64)))
            self.register_buffer("v_leak", torch.as_tensor(np.asarray(node.v_leak, dtype=np.float64)))
            self.register_buffer("r", torch.as_tensor(r))
        else:
            self.register_buffer("gain", torch.as_tensor(dt * r))
        self.spiking = self.kind in ("LIF", "IF")
        if self.spiking:
            self.register_buffer("threshold", torch.as_tensor(np.asarray(node.v_threshold)))
            self.register_buffer("v_reset", torch.as_tensor(np.asarray(node.v_reset, dtype=np.float64)))
        self.v: torch.Tensor | None = None

    def reset(self) -> None:
        self.v = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x) if self.v is None else self.v
        if self.leaky:
            v = v + self.leak.to(x.dtype) * (self.v_leak.to(x.dtype) - v + self.r.to(x.dtype) * x)
        else:
            v = v + self.gain.to(x.dtype) * x
        if self.spiking:
            z = (v > self.threshold.to(x.dtype)).to(x.dtype)
            self.v = torch.where(z > 0, self.v_reset.to(x.dtype), v)
            return z
        self.v = v
        return v


class _Delay(nn.Module):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.buffer: list[torch.Tensor] = []

    def reset(self) -> None:
        self.buffer = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.buffer.append(x)
        if len(self.buffer) > self.steps:
            return self.buffer.pop(0)
        return torch.zeros_like(x)


class _StepDelta(nn.Module):
    """A :class:`sb_neurons.DeltaEncoder` fed one step ``[B, *]`` at a time."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def reset(self) -> None:
        self.encoder.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.unsqueeze(0))[0]


class NIRNetwork(nn.Module):
    """A NIR graph as a torch module of our parts, run step by step (see the module docstring).

    ``forward(x_seq [T, B, *input_shape]) -> [T, B, *output_shape]``: starts a new sequence (every state
    reset), then runs the graph once per step, nodes in dependency order; several edges into a node are
    summed; a recurrent edge carries the previous step's value (zero at the first step). ``modules`` holds
    the built module of each node (``nn.Linear``, ``SBLIFNode``, ``SBLeaky``, ...), named as in the graph
    (dots and keywords sanitized), nested networks for sub-graphs that are not one of our neurons.
    """

    def __init__(self, graph: nir.NIRGraph, modules: dict[str, nn.Module], dt: float) -> None:
        super().__init__()
        self.dt = dt
        self.graph = graph
        self.names = {name: _safe(name) for name in graph.nodes}
        self.nodes = nn.ModuleDict({self.names[n]: m for n, m in modules.items()})
        inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
        outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRImportError(f"a graph needs exactly one Input and one Output node, got inputs {inputs} and outputs {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.order, self.back_edges = _schedule(graph, self.input_name)
        self.output_shape = tuple(int(s) for s in graph.nodes[self.output_name].output_type["output"])
        self.input_shape = tuple(int(s) for s in graph.nodes[self.input_name].input_type["input"])
        self.preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for src, dst in graph.edges:
            self.preds[dst].append(src)

    def reset(self) -> None:
        """Start a new sequence: every neuron, delay and nested network forgets its state."""
        for module in self.nodes.values():
            _reset_module(module)

    def step(self, x: torch.Tensor, previous: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values: dict[str, torch.Tensor] = {}
        for name in self.order:
            node = self.graph.nodes[name]
            if name == self.input_name:
                values[name] = x
                continue
            total = None
            for src in self.preds[name]:
                if (src, name) in self.back_edges:
                    value = previous.get(src)
                    if value is None:
                        shape = _out_shape(self.graph.nodes[src])
                        value = x.new_zeros((x.shape[0], *shape))
                else:
                    value = values[src]
                total = value if total is None else total + value
            if total is None:
                raise NIRImportError(f"node '{name}' has no input edge")
            if isinstance(node, nir.Output):
                values[name] = total
            else:
                values[name] = self.nodes[self.names[name]](total)
        return values[self.output_name], values

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not isinstance(x_seq, torch.Tensor) or not x_seq.is_floating_point():
            raise TypeError(f"x_seq must be a floating tensor [T, B, *], got {type(x_seq).__name__}")
        if tuple(x_seq.shape[2:]) != self.input_shape:
            raise ValueError(
                f"x_seq must have shape [T, B, {', '.join(map(str, self.input_shape))}] (the graph's Input), "
                f"got {tuple(x_seq.shape)}"
            )
        self.reset()
        previous: dict[str, torch.Tensor] = {}
        out = []
        for x in x_seq:
            y, previous = self.step(x, previous)
            out.append(y)
        return torch.stack(out)


class _NestedStep(nn.Module):
    """A nested :class:`NIRNetwork` (a sub-graph) inside a step of its parent."""

    def __init__(self, net: NIRNetwork) -> None:
        super().__init__()
        self.net = net
        self.previous: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.net.reset()
        self.previous = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, self.previous = self.net.step(x, self.previous)
        return y


def _safe(name: str) -> str:
    import keyword

    name = name.replace(".", "_")
    return f"nir_{name}" if keyword.iskeyword(name) or not name.isidentifier() else name


def _out_shape(node: nir.NIRNode) -> tuple[int, ...]:
    return tuple(int(s) for s in next(iter(node.output_type.values())))


def _reset_module(module: nn.Module) -> None:
    if hasattr(module, "reset") and callable(module.reset) and not isinstance(module, NIRNetwork):
        module.reset()
    elif isinstance(module, NIRNetwork):
        module.reset()
    if hasattr(module, "reset_mem") and getattr(module, "init_hidden", False):
        module.reset_mem()


def _schedule(graph: nir.NIRGraph, start: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Dependency order from ``start`` and the recurrent (cycle-closing) edges found by depth-first search."""
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        succ[src].append(dst)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}

    def visit(name: str) -> None:
        state[name] = 1
        for nxt in succ[name]:
            if state.get(nxt) == 1:
                back.add((name, nxt))
            elif nxt not in state:
                visit(nxt)
        state[name] = 2

    visit(start)
    unreachable = [n for n in graph.nodes if n not in state]
    if unreachable:
        raise NIRImportError(f"nodes {unreachable} cannot be reached from the Input node '{start}'")
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if (src, dst) not in back:
            preds[dst].append(src)
    order: list[str] = []
    done: set[str] = set()
    pending = list(graph.nodes)
    while pending:
        progressed = False
        for name in list(pending):
            if all(p in done for p in preds[name]):
                order.append(name)
                done.add(name)
                pending.remove(name)
                progressed = True
        if not progressed:  # pragma: no cover - back edges break every cycle
            raise NIRImportError(f"cannot order nodes {pending}")
    return order, back


def _uniform(value: Any, what: str) -> float:
    arr = np.asarray(value, dtype=np.float64)
    unique = np.unique(arr)
    if unique.size != 1:
        raise NIRImportError(f"{what} differs between neurons ({unique.size} values); our neurons take one value per "
                             "layer: import with fuse=False to run the primitive per neuron")
    return float(unique[0])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0) or a == b  # float32 parameters (snnTorch writes them)


def _threshold_in(nir_threshold: np.ndarray, what: str, dtype: torch.dtype, ge: bool = True) -> float:
    """Our threshold for NIR's ``v > theta``: for a neuron firing at ``v >= theta'`` the smallest float of
    ``dtype`` above ``theta``; for one firing at ``v > theta'`` the largest float of ``dtype`` not above it."""
    theta = _uniform(nir_threshold, what)
    if ge:
        return float(_above(np.asarray(theta), _np_dtype(dtype)))
    np_dtype = _np_dtype(dtype)
    rounded = np.asarray(theta, dtype=np_dtype)
    if float(rounded) > theta:
        rounded = np.nextafter(rounded, np.asarray(-np.inf, dtype=np_dtype))
    return float(rounded)


def _meta(node: nir.NIRNode) -> dict:
    meta = getattr(node, "metadata", None) or {}
    entry = meta.get(_META, {}) if isinstance(meta, dict) else {}
    return entry if isinstance(entry, dict) else {}


def _meta_param(meta: dict, key: str) -> Any:
    """A parameter our export recorded in ``metadata["sb_adapters"]["params"]`` (``None`` if absent)."""
    import ast

    try:
        params = ast.literal_eval(str(meta.get("params", "{}")))
    except (ValueError, SyntaxError):
        return None
    return params.get(key) if isinstance(params, dict) else None


def _exact_param(meta: dict, key: str, derived: float) -> float:
    """The exact exported value of ``key`` when the metadata agrees with the NIR parameters, else ``derived``."""
    import ast

    try:
        params = ast.literal_eval(str(meta.get("params", "{}")))
        value = params.get(key)
    except (ValueError, SyntaxError):
        return derived
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _close(float(value), derived):
        return float(value)
    return derived


def _build_neuron(name: str, cell: nir.NIRNode, *, reset: str, fire: np.ndarray, w: float | None, graded: float,
                  flavor: str, dt: float, dtype: torch.dtype, meta: dict) -> nn.Module:
    """Our neuron for a NIR membrane ``cell`` (IF / LIF / I / LI) with the given reset and fire threshold.

    ``w`` is the scale of the recurrent reset edge (the amount subtracted, times the leak of a SpikingJelly
    LIF); the firing threshold comes from ``fire`` by the tie rule (:func:`_above`), exactly.
    """
    kind = type(cell).__name__
    r = _uniform(cell.r, f"node '{name}': r")
    theta = _threshold_in(fire, f"node '{name}': threshold", dtype)
    if kind in ("IF", "I"):
        if not _close(r * dt, 1.0):
            raise NIRImportError(f"node '{name}' ({kind}): r * dt = {r * dt:g}; our IF neurons add the input as is "
                                 "(r = 1 / dt); import with fuse=False to run the primitive")
        tau_steps = None
    else:
        tau_steps = _uniform(cell.tau, f"node '{name}': tau") / dt
        if not math.isfinite(tau_steps) or not tau_steps > 1.0:
            raise NIRImportError(f"node '{name}' ({kind}): tau / dt = {tau_steps:g} must be finite and > 1")
    v_leak = _uniform(cell.v_leak, f"node '{name}': v_leak") if kind in ("LI", "LIF") else 0.0
    rho = _uniform(cell.v_reset, f"node '{name}': v_reset") if kind in ("IF", "LIF") else 0.0
    snn_form = (tau_steps is None or _close(r, tau_steps)) and v_leak == 0.0 and rho == 0.0
    if flavor == "auto":
        flavor = meta.get("flavor", "")
        if flavor not in ("spikingjelly", "snntorch", "sb_neurons"):
            flavor = "snntorch" if snn_form and (tau_steps is not None or reset != "hard") else "spikingjelly"
    if reset == "none" or graded != 1.0:
        flavor = "snntorch" if flavor != "sb_neurons" or graded != 1.0 else flavor
    # the amount a soft reset subtracts, in the neuron's own terms
    subtracted = None
    if reset == "soft":
        if w is None:
            raise NIRImportError(f"node '{name}': a soft reset needs the reset scale")
        if flavor == "spikingjelly" and tau_steps is not None:
            subtracted = -w / (tau_steps - 1.0) if _close(r, 1.0) else -w / (1.0 - 1.0 / tau_steps)
        else:
            subtracted = -w
    rounding = False
    if reset == "hard" and _meta_param(meta, "rounding") is True:  # our export of a rounding neuron: theta / 2 fires
        recorded = _meta_param(meta, "threshold" if flavor == "sb_neurons" else "v_threshold")
        if isinstance(recorded, float) and recorded == 2.0 * theta:
            rounding, theta = True, recorded
    if subtracted is not None and flavor != "snntorch" and not _close(subtracted, theta):
        if flavor != "snntorch" and _close(subtracted, 2.0 * theta):
            rounding, theta = True, 2.0 * theta
        else:
            raise NIRImportError(f"node '{name}': the reset subtracts {subtracted:g} but the neuron fires at {theta:g}; "
                                 "no neuron of ours does that: import with fuse=False to run the primitives")
    if flavor == "snntorch":
        from sb_adapters.snntorch import SBLeaky

        # SBLeaky with snnTorch's surrogate fires at v > theta (NIR's rule); with surrogate_disable at >=
        disable = meta.get("fires_at") == ">=" and meta.get("flavor") == "snntorch"
        theta = _threshold_in(fire, f"node '{name}': threshold", dtype, ge=disable)
        if subtracted is not None and not _close(subtracted, theta) and not _close(subtracted, _uniform_fire(fire)):
            raise NIRImportError(f"node '{name}': the reset subtracts {subtracted:g} but the neuron fires at {theta:g}")
        if disable:
            theta = _exact_param(meta, "threshold", theta)
        if not snn_form:
            raise NIRImportError(f"node '{name}' ({kind}): r = {r:g}, v_leak = {v_leak:g}, v_reset = {rho:g}; snnTorch's "
                                 "Leaky needs r = tau / dt and v_leak = v_reset = 0")
        beta = 1.0 if tau_steps is None else float(np.asarray(1.0 - 1.0 / tau_steps, dtype=_np_dtype(dtype)))
        if tau_steps is not None:
            beta = _exact_param(meta, "beta", beta)
        mech = {"hard": "zero", "soft": "subtract", "none": "none"}[reset]
        return SBLeaky(beta=beta, threshold=theta, reset_mechanism=mech, init_hidden=True, graded_spikes_factor=graded,
                       surrogate_disable=disable)
    if flavor == "sb_neurons":
        from sb_neurons import AdaptiveIFNode, AdaptiveLIFNode

        if not snn_form and not (tau_steps is None and reset == "hard"):
            raise NIRImportError(f"node '{name}' ({kind}): r = {r:g}, v_leak = {v_leak:g}, v_reset = {rho:g}; "
                                 "sb_neurons' LIF needs r = tau / dt and v_leak = v_reset = 0")
        common = dict(threshold=theta, reset="hard" if reset == "hard" else "soft", v_reset=rho, rounding=rounding,
                      step_mode="s")
        if tau_steps is None:
            return AdaptiveIFNode(**common)
        derived = 1.0 - 1.0 / tau_steps
        decay = _exact_param(meta, "decay", derived)
        return AdaptiveLIFNode(decay, **common)  # the decay as exported (a learned one: its value then)
    from sb_adapters.spikingjelly import SBLIFNode

    decay_input = True
    if tau_steps is not None:
        if _close(r, 1.0):
            decay_input = True
        elif _close(r, tau_steps):
            decay_input = False
        else:
            raise NIRImportError(f"node '{name}' ({kind}): r = {r:g}; SpikingJelly's LIF needs r = 1 (decay_input) or "
                                 f"r = tau / dt = {tau_steps:g}")
        if kind == "LIF" and v_leak != rho:
            raise NIRImportError(f"node '{name}' (LIF): v_leak = {v_leak:g} must equal v_reset = {rho:g} for SpikingJelly's LIF")
        if kind == "LI" and v_leak != 0.0:
            raise NIRImportError(f"node '{name}' (LI): v_leak = {v_leak:g} must be 0 for a soft-reset neuron")
        tau_steps = _exact_param(meta, "tau", tau_steps)
    return SBLIFNode(tau=tau_steps, decay_input=decay_input, v_threshold=theta,
                     v_reset=None if reset == "soft" else rho, rounding=rounding, step_mode="s")


def _uniform_fire(fire: np.ndarray) -> float:
    return float(np.unique(np.asarray(fire, dtype=np.float64))[0])


def _match_neuron_graph(graph: nir.NIRGraph) -> dict | None:
    """Recognize our neuron sub-graph (membrane -> spike [-> reset -> membrane] [-> graded] -> output)."""
    nodes = graph.nodes
    kinds = {n: type(v).__name__ for n, v in nodes.items()}
    inputs = [n for n, k in kinds.items() if k == "Input"]
    outputs = [n for n, k in kinds.items() if k == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in graph.edges:
        succ[src].append(dst)
    first = succ[inputs[0]]
    if len(first) != 1 or kinds[first[0]] not in ("I", "LI", "IF", "LIF"):
        return None
    membrane = first[0]
    rest = [n for n in nodes if n not in (inputs[0], outputs[0], membrane)]
    spike = graded = reset = None
    for n in rest:
        if kinds[n] == "Threshold" and spike is None:
            spike = n
        elif kinds[n] == "Scale" and (membrane, ) and reset is None and membrane in succ[n]:
            reset = n
        elif kinds[n] == "Scale" and graded is None:
            graded = n
        else:
            return None
    expected = {(inputs[0], membrane)}
    fire_src = membrane
    if kinds[membrane] in ("I", "LI"):
        if spike is None:
            return None
        expected.add((membrane, spike))
        fire_src = spike
        if reset is not None:
            expected |= {(spike, reset), (reset, membrane)}
    elif spike is not None or reset is not None:
        return None
    if graded is not None:
        expected |= {(fire_src, graded), (graded, outputs[0])}
    else:
        expected.add((fire_src, outputs[0]))
    if set(graph.edges) != expected or len(graph.edges) != len(expected):
        return None
    cell = nodes[membrane]
    fire = nodes[spike].threshold if spike is not None else cell.v_threshold
    w = _uniform(nodes[reset].scale, "reset scale") if reset is not None else None
    g = _uniform(nodes[graded].scale, "graded scale") if graded is not None else 1.0
    mode = "hard" if kinds[membrane] in ("IF", "LIF") else ("soft" if reset is not None else "none")
    return {"cell": cell, "fire": fire, "w": w, "graded": g, "reset": mode}


def _match_delta_graph(graph: nir.NIRGraph, dt: float) -> dict | None:
    expected_kinds = {"input": "Input", "now": "Scale", "delay": "Delay", "minus_previous": "Scale", "change": "Scale",
                      "on": "Threshold", "output": "Output"}
    nodes = graph.nodes
    off = "off" in nodes
    if off:
        expected_kinds |= {"negate": "Scale", "off": "Threshold", "off_sign": "Scale"}
    if {n: type(v).__name__ for n, v in nodes.items()} != expected_kinds:
        return None
    edges = {("input", "now"), ("input", "delay"), ("delay", "minus_previous"), ("now", "change"),
             ("minus_previous", "change"), ("change", "on"), ("on", "output")}
    if off:
        edges |= {("change", "negate"), ("negate", "off"), ("off", "off_sign"), ("off_sign", "output")}
    if set(graph.edges) != edges:
        return None
    scales = {"now": 1.0, "minus_previous": -1.0, "change": 1.0} | ({"negate": -1.0, "off_sign": -1.0} if off else {})
    for key, value in scales.items():
        if not np.all(np.asarray(nodes[key].scale) == value):
            return None
    if not _close(_uniform(nodes["delay"].delay, "delay") / dt, 1.0):
        return None
    theta = _uniform(nodes["on"].threshold, "threshold")
    if off and _uniform(nodes["off"].threshold, "threshold") != theta:
        return None
    return {"threshold": nodes["on"].threshold, "off_spike": off}


def _build(name: str, node: nir.NIRNode, *, dt: float, fuse: bool, flavor: NeuronFlavor, dtype: torch.dtype) -> nn.Module:
    kind = type(node).__name__
    meta = _meta(node)
    if isinstance(node, nir.Affine):
        module = nn.Linear(node.weight.shape[-1], node.weight.shape[-2], bias=True, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(np.asarray(node.weight)))
            module.bias.copy_(torch.as_tensor(np.asarray(node.bias)))
        return module
    if isinstance(node, nir.Linear):
        module = nn.Linear(node.weight.shape[-1], node.weight.shape[-2], bias=False, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(np.asarray(node.weight)))
        return module
    if isinstance(node, nir.Conv2d):
        weight = np.asarray(node.weight)
        groups = int(np.asarray(node.groups).item()) if np.ndim(node.groups) == 0 else int(node.groups)
        module = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[-2:]),
                           stride=_pair(node.stride), padding=_pair(node.padding) if not isinstance(node.padding, str) else node.padding,
                           dilation=_pair(node.dilation), groups=groups, bias=True, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(weight))
            module.bias.copy_(torch.as_tensor(np.asarray(node.bias)))
        return module
    if isinstance(node, nir.Flatten):
        start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
        end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
        return nn.Flatten(start, end)
    if isinstance(node, nir.Scale):
        return _Scale(node.scale)
    if isinstance(node, nir.Threshold):
        return _Threshold(node.threshold)
    if isinstance(node, nir.Delay):
        steps = _uniform(node.delay, f"node '{name}': delay") / dt
        if not _close(steps, round(steps)) or round(steps) < 0:
            raise NIRImportError(f"node '{name}' (Delay): delay / dt = {steps:g} must be a whole number of steps")
        return _Delay(int(round(steps)))
    if isinstance(node, (nir.IF, nir.LIF)):
        if fuse:
            return _build_neuron(name, node, reset="hard", fire=node.v_threshold, w=None, graded=1.0, flavor=flavor,
                                 dt=dt, dtype=dtype, meta=meta)
        return _Integrator(node, dt)
    if isinstance(node, (nir.I, nir.LI)):
        return _Integrator(node, dt)
    if isinstance(node, nir.NIRGraph):
        if fuse:
            match = _match_neuron_graph(node)
            if match is not None:
                return _build_neuron(name, match["cell"], reset=match["reset"], fire=match["fire"], w=match["w"],
                                     graded=match["graded"], flavor=flavor, dt=dt, dtype=dtype, meta=meta)
            delta = _match_delta_graph(node, dt)
            if delta is not None:
                from sb_neurons import DeltaEncoder

                theta = _threshold_in(delta["threshold"], f"node '{name}': threshold", dtype)
                theta = _exact_param(meta, "threshold", theta)
                return _StepDelta(DeltaEncoder(threshold=theta, off_spike=delta["off_spike"], padding=False))
        return _NestedStep(_network(node, dt=dt, fuse=fuse, flavor=flavor, dtype=dtype))
    raise NIRImportError(
        f"node '{name}' has type {kind}, which import_from_nir does not map (supported: Input, Output, Affine, Linear, "
        "Conv2d, Flatten, Scale, Threshold, Delay, I, LI, IF, LIF and sub-graphs)"
    )


def _pair(value: Any) -> Any:
    arr = np.asarray(value).reshape(-1)
    return tuple(int(v) for v in arr) if arr.size > 1 else int(arr[0])


def _check_graph(graph: nir.NIRGraph, where: str = "graph") -> None:
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph (or a path to one), got {type(graph).__name__}")
    for edge in graph.edges:
        if not isinstance(edge, (tuple, list)) or len(edge) != 2:
            raise NIRImportError(f"{where}: edge {edge!r} must be a (source, target) pair of node names")
        for end in edge:
            if end not in graph.nodes:
                raise NIRImportError(f"{where}: edge {tuple(edge)!r} names the node {end!r}, which is not in the graph "
                                     f"(nodes: {sorted(graph.nodes)})")
    if len({tuple(e) for e in graph.edges}) != len(graph.edges):
        raise NIRImportError(f"{where}: duplicate edges")
    for src, dst in graph.edges:
        a, b = graph.nodes[src], graph.nodes[dst]
        out_t = getattr(a, "output_type", None)
        in_t = getattr(b, "input_type", None)
        if not out_t or not in_t:
            continue
        out_v = next(iter(out_t.values()))
        in_v = next(iter(in_t.values()))
        if out_v is None or in_v is None:
            continue
        if not np.array_equal(np.asarray(out_v).reshape(-1), np.asarray(in_v).reshape(-1)):
            raise NIRImportError(f"{where}: edge ({src!r}, {dst!r}) connects an output of shape "
                                 f"{tuple(np.asarray(out_v).tolist())} to an input of shape {tuple(np.asarray(in_v).tolist())}")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _check_graph(node, f"{where} / sub-graph '{name}'")


def _network(graph: nir.NIRGraph, *, dt: float, fuse: bool, flavor: NeuronFlavor, dtype: torch.dtype) -> NIRNetwork:
    modules = {}
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        modules[name] = _build(name, node, dt=dt, fuse=fuse, flavor=flavor, dtype=dtype)
    return NIRNetwork(graph, modules, dt)


def import_from_nir(
    graph: nir.NIRGraph | str,
    *,
    dt: float | None = None,
    fuse: bool = True,
    neuron: NeuronFlavor = "auto",
    dtype: torch.dtype = torch.float32,
) -> NIRNetwork:
    """Build a NIR graph into our modules: a :class:`NIRNetwork` running it over ``[T, B, *]``.

    Args:
        graph: a ``nir.NIRGraph`` or the path of a file written by ``nir.write``.
        dt: the time step in seconds; default the one :func:`export_to_nir` recorded in the graph's
            metadata, else ``1e-4`` (snnTorch's and SpikingJelly's convention).
        fuse: rebuild neurons as our modules (``IF`` / ``LIF`` nodes and our neuron sub-graphs become
            :class:`SBLIFNode` or :class:`SBLeaky`, our delta sub-graph a :class:`DeltaEncoder`); ``False``
            runs every primitive itself by forward Euler (the reference discretization).
        neuron: which of our neurons an ``IF`` / ``LIF`` node becomes: ``"auto"`` (the library recorded by
            our export, else ``SBLeaky`` for snnTorch's form ``r = tau / dt``, ``v_leak = v_reset = 0`` and
            ``SBLIFNode`` otherwise), ``"spikingjelly"`` or ``"snntorch"``.
        dtype: dtype of the built parameters and of the float grid in which NIR's ``v > theta`` is made our
            ``v >= theta'`` (float32 or float64).

    Raises:
        NIRImportError (a ``ValueError``): an unknown node type, an edge naming a missing node, an edge
            whose shapes differ, no or several Input / Output nodes, unreachable nodes, or parameters our
            neurons cannot hold (per-neuron values, r / v_leak outside the documented forms), each naming
            the node or edge.
        TypeError: ``graph`` not a NIR graph.
    """
    if isinstance(graph, str):
        graph = nir.read(graph)
    _check_graph(graph)
    if neuron not in ("auto", "spikingjelly", "snntorch"):
        raise ValueError(f"neuron must be 'auto', 'spikingjelly' or 'snntorch', got {neuron!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not isinstance(fuse, bool):
        raise TypeError(f"fuse must be a bool, got {fuse!r}")
    if dt is None:
        recorded = _meta(graph).get("dt") if isinstance(getattr(graph, "metadata", None), dict) else None
        dt = float(np.asarray(recorded).item()) if recorded is not None else DEFAULT_DT
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite float > 0 (seconds per step), got {dt!r}")
    return _network(graph, dt=float(dt), fuse=fuse, flavor=neuron, dtype=dtype)
