"""Export: a network of our spiking parts (traced with ``torch.fx``) to a NIR graph, exactly: one node or
sub-graph per module, by the mapping and the tie rule of :mod:`sb_adapters.nir`; what has no exact NIR
form is refused with :class:`~sb_adapters.nir.common.NIRExportError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from .common import _META, DEFAULT_DT, NIRExportError, Ties, _below, _np_dtype
from sb_neurons.validation import check_positive

__all__ = ["export_to_nir"]


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
    """Export a network of our spiking parts to a NIR graph, exactly (see :mod:`sb_adapters.nir`).

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
    check_positive(dt, "dt (seconds per step)")
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

