"""Import: a NIR graph built into our modules (:func:`import_from_nir`): ``nn.Linear``, ``nn.Conv2d``,
``nn.Flatten``, our neurons (our neuron sub-graphs recognized by structure and fused back into one neuron)
and :class:`sb_neurons.DeltaEncoder`, wired into a :class:`~sb_adapters.nir.runtime.NIRNetwork`; the tie
rule read back exactly; what our modules cannot hold is refused with
:class:`~sb_adapters.nir.common.NIRImportError`.
"""

from __future__ import annotations

import math
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from .common import _META, DEFAULT_DT, NeuronFlavor, NIRImportError, _above, _np_dtype
from .runtime import NIRNetwork, _Delay, _Integrator, _NestedStep, _Scale, _StepDelta, _Threshold
from sb_neurons.validation import check_positive

__all__ = ["import_from_nir"]


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
    check_positive(dt, "dt (seconds per step)")
    return _network(graph, dt=float(dt), fuse=fuse, flavor=neuron, dtype=dtype)
