"""Runtime: :class:`NIRNetwork`, a NIR graph run step by step over a time-major input as a torch module,
and the NIR primitives it runs itself by forward Euler (``Scale``, ``Threshold``, ``LI`` / ``I`` / ``LIF``
/ ``IF``, ``Delay``) where no module of ours stands for a node (the discretization of :mod:`sb_adapters.nir`).
"""

from __future__ import annotations

import nir
import numpy as np
import torch
from torch import nn

from .common import NIRImportError

__all__ = ["NIRNetwork"]


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
    """A NIR graph as a torch module of our parts, run step by step (see :mod:`sb_adapters.nir`).

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
