"""SpikingJelly adapter: SpikingBrain's adaptive-threshold neurons as native SpikingJelly neurons.

``import sb_adapters.spikingjelly`` registers two classes in ``spikingjelly.activation_based.neuron``:

- :class:`SBLIFNode`: a drop-in for ``neuron.LIFNode`` (``neuron.IFNode`` with ``tau=None``) that adds
  SpikingBrain's adaptive threshold, switched on by one argument: ``v_threshold="first_step"`` (report
  Eq. 20, the threshold ``mean|x_t| / k`` of each sample row's first step with input after a reset) or
  ``"total"`` (Eq. 19, from the whole sequence). Its defaults are ``LIFNode``'s (``tau=2.0``, ``decay_input=True``, ``v_threshold=1.0``,
  ``v_reset=0.0``, ``surrogate.Sigmoid()``), and with them, or with any arguments ``LIFNode`` / ``IFNode``
  accept, it computes exactly what that SpikingJelly neuron computes (tested, both step modes).
  It is a ``neuron.BaseNode`` with SpikingJelly's conventions: ``step_mode`` ``'s'`` / ``'m'``
  (``functional.set_step_mode``), state cleared by ``functional.reset_net``, ``surrogate_function`` from
  ``spikingjelly.activation_based.surrogate``, ``detach_reset``, ``store_v_seq``, ``v_reset=None`` for the
  soft (subtractive) reset and a float for the hard one.
- :class:`SBSpikeCountNode`: the single-step (collapsed) neuron of Eq. 21, ``v_th * round(x / v_th)``
  (or the integer counts), stateless, applied per time step in multi-step mode.

The SpikingBrain neuron of Eq. 20 is ``SBLIFNode(tau=None, v_reset=None, v_threshold="first_step")``.
The threshold rules keep the names of
:mod:`sb_neurons` (``"first_step"``, ``"total"``; snnTorch's :class:`sb_adapters.snntorch.SBLeaky` uses
the same ``"first_step"``).

Dynamics, each step (SpikingJelly's): charge ``h = v + x`` (IF, ``tau=None``), ``h = v + (x - (v - v_r)) / tau``
(``decay_input=True``) or ``h = v - (v - v_r) / tau + x`` (``decay_input=False``), with ``v_r = v_reset``
(0 for the soft reset); fire ``s = H(h - theta)``; reset ``v = h - v_th * s`` (soft) or
``v = s * v_reset + (1 - s) * h`` (hard). A fixed float threshold without the SpikingBrain-only options
(``signed``, ``rounding``, ``learn_threshold``) runs SpikingJelly's own ``functional.lif_multi_step`` /
``if_multi_step``. Otherwise the charge is SpikingJelly's formula and fire / reset are
:func:`sb_neurons.multistep_neuron_forward` with ``decay=1`` (``signed`` ternary spikes, ``rounding`` at
half the threshold); for the IF neuron this is exactly the SpikingBrain neuron of :mod:`sb_neurons.neurons`.
Note that SpikingJelly's LIF leaks after the reset (``v <- decay * (h - v_th s)``), while the LIF of
:mod:`sb_neurons` (report Eq. 9, ``sb_neurons.AdaptiveLIFNode``) subtracts the full threshold after the
leak: the two differ for soft-reset LIF neurons, and this class follows SpikingJelly.

A silent first step (``"first_step"``). Rate-coded input (``encoding.PoissonEncoder``) often starts with an
all-zero step for some samples; ``mean|x_0| / k`` of it would be the 1e-5 floor, under which the neuron
fires at every later step. So a row that has carried no input yet holds a pending threshold
(:func:`sb_neurons.pending_threshold`, ``torch.finfo(dtype).max``: it cannot fire) and takes its threshold
at its first step with input (:func:`sb_neurons.first_input_threshold`), in either step mode. While some
row is pending, each call reads one flag back to the host.

Identity (tested): a single-step loop over ``x_seq[t]`` gives the same spikes and state as one
multi-step call on ``x_seq`` (``v_threshold="total"`` excepted: it needs the whole sequence).

SpikingJelly 2.0 nodes take no ``backend`` argument; ours does: ``"torch"`` (default) or ``"triton"``:
the fused multi-step kernel :func:`sb_kernels.multistep_neuron` (CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``), which computes the same spikes and states on float32 input. It never falls back
silently: a call it cannot run raises, naming the reason. Its limits: the IF neuron (``tau=None``; the
kernel leaks after the reset as :mod:`sb_neurons` does, not as SpikingJelly's LIF), ``surrogate.ATan`` or
``surrogate.Sigmoid`` (the two surrogates the kernel implements, same formulas as SpikingJelly's), no
``learn_threshold`` (the kernel holds the threshold constant), float16/bfloat16/float32 input, at most
``sb_kernels.neuron.MAX_STEPS`` steps per call, and no ``store_v_seq`` in multi-step mode (the kernel keeps
the potential in registers and returns only the last one; in single-step mode ``v_seq`` is built step by
step as usual).

Input checks: a step's input must be a finite floating tensor (``TypeError`` for bool / integer tensors,
``ValueError`` for NaN / Inf) of at least one dimension (``[N, *]``; ``[T, N, *]`` in multi-step mode), and
a state left by a batch of another shape raises ``ValueError`` (call ``functional.reset_net``) rather than
broadcasting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from spikingjelly.activation_based import base, neuron, surrogate
from spikingjelly.activation_based import functional as sj_functional

from sb_neurons import (
    adaptive_threshold,
    first_input_threshold,
    multistep_neuron_forward,
    pending_threshold,
    spike_count,
    spike_quantize,
)
from sb_neurons.validation import check_float_tensor, check_positive, check_real, normalize_dims
from sb_neurons.spike import ClampSpec, resolve_clamp

ThresholdSpec = Literal["first_step", "total"] | float
NodeBackend = Literal["torch", "triton"]


def _triton_neuron() -> Callable[..., Any] | None:
    """``sb_kernels.multistep_neuron`` when it and Triton are importable, else ``None``."""
    try:
        from sb_kernels import multistep_neuron
        from sb_kernels.dispatch import triton_importable
    except ImportError:
        return None
    return multistep_neuron if triton_importable() else None


def _kernel_surrogate(surrogate_function: object) -> object:
    """The ``sb_neurons`` surrogate the kernel runs for a SpikingJelly ``ATan`` / ``Sigmoid`` (same
    derivative formulas and ``alpha``); any other surrogate raises ``ValueError``."""
    from sb_neurons.surrogate import ATan, Sigmoid

    for sj_class, sb_class in ((surrogate.ATan, ATan), (surrogate.Sigmoid, Sigmoid)):
        if type(surrogate_function) is sj_class:
            if not getattr(surrogate_function, "spiking", True):
                raise ValueError("backend='triton' needs a spiking surrogate_function (spiking=True)")
            return sb_class(float(surrogate_function.alpha))
    raise ValueError(
        "backend='triton' implements the surrogate functions surrogate.ATan and surrogate.Sigmoid, got "
        f"{type(surrogate_function).__name__}; use one of those or backend='torch'"
    )


def _check_step_dims(dim: int | tuple[int, ...], step_ndim: int) -> tuple[int, ...]:
    dims = normalize_dims(dim, step_ndim)
    if 0 in dims and step_ndim > 1:
        raise ValueError(f"dim={dim!r} includes the batch dimension 0 of a step's input; thresholds are per sample")
    return dims


class SBLIFNode(neuron.BaseNode):
    """SpikingJelly's ``LIFNode`` (``IFNode`` with ``tau=None``) with SpikingBrain's adaptive threshold.

    With its defaults, or with any arguments ``neuron.LIFNode`` accepts, it is ``LIFNode`` spike for spike
    and state for state; ``v_threshold="first_step"`` switches the SpikingBrain threshold on. The
    SpikingBrain neuron of report Eq. 20 is ``SBLIFNode(tau=None, v_reset=None, v_threshold="first_step")``.

    Its defaults are ``LIFNode``'s, so swapping ``neuron.LIFNode`` for ``neuron.SBLIFNode`` changes nothing
    until a SpikingBrain argument is given.

    Dynamics: see the module docstring (SpikingJelly's charge, fire and reset).

    Args:
        tau: membrane time constant ``> 1`` (LIF, default 2.0 as ``LIFNode``), or ``None`` for the IF
            neuron (``IFNode``; SpikingBrain's Eq. 20).
        decay_input: ``LIFNode``'s ``decay_input`` (default ``True``: the input is divided by ``tau``);
            ignored for ``tau=None``.
        v_threshold: a fixed float ``> 0`` (default 1.0 as ``LIFNode``), ``"first_step"`` (SpikingBrain's
            adaptive threshold ``mean(|x_0|, dim) / k`` from the first input after a reset; both step
            modes), or ``"total"`` (from the sum of the whole input sequence, Eq. 19; multi-step only).
        v_reset: the hard-reset potential (default 0.0 as ``LIFNode``), or ``None`` for the soft
            (subtractive) reset of the SpikingBrain neuron.
        k: ``k > 0`` of the adaptive threshold (used by ``"first_step"`` / ``"total"`` only).
        surrogate_function: a ``spikingjelly.activation_based.surrogate`` function (default ``Sigmoid()``).
        detach_reset: detach the spikes of the reset term.
        step_mode: ``'s'`` (input ``[N, *]``) or ``'m'`` (input ``[T, N, *]``).
        store_v_seq: keep the potential of every step in ``v_seq`` (``[T, N, *]``).
        backend: ``"torch"`` or ``"triton"`` (the fused kernel ``sb_kernels.multistep_neuron``, IF neurons
            only; see the module docstring for its limits, each of which raises rather than falling back).
        dim: dimension(s) of a step's input ``[N, *]`` sharing one adaptive threshold (default the last);
            never 0, the batch dimension.
        signed: also fire ``-1`` below ``-theta`` (ternary spikes for signed activations).
        rounding: fire at half the threshold so that spike counts round (Eq. 21) instead of floor.
        learn_threshold: make a fixed float ``v_threshold`` a learnable parameter.

    State (SpikingJelly memories, cleared by ``reset()`` / ``functional.reset_net``): ``v``, the
    potential carried to the next step (``[N, *]``, ``v_reset`` or 0 after a reset), and ``v_th``, the
    adaptive threshold in use (size-1 along ``dim``), ``None`` until the first step of a sequence and
    always ``None`` for a fixed threshold.
    """

    def __init__(
        self,
        tau: float | None = 2.0,
        decay_input: bool = True,
        v_threshold: ThresholdSpec = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: Callable[[torch.Tensor], torch.Tensor] | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: NodeBackend = "torch",
        k: float = 3.0,
        dim: int | tuple[int, ...] = -1,
        signed: bool = False,
        rounding: bool = False,
        learn_threshold: bool = False,
    ) -> None:
        if isinstance(v_threshold, str):
            if v_threshold not in ("first_step", "total"):
                raise ValueError(f"v_threshold must be 'first_step', 'total' or a float > 0, got {v_threshold!r}")
            if learn_threshold:
                raise ValueError("learn_threshold needs a fixed float v_threshold, not an adaptive one")
            fixed = None
        else:
            fixed = check_positive(v_threshold, "v_threshold")
        if v_reset is not None:
            check_real(v_reset, "v_reset (None: soft reset)")
        for flag, value in (("decay_input", decay_input), ("detach_reset", detach_reset), ("signed", signed),
                            ("rounding", rounding), ("learn_threshold", learn_threshold), ("store_v_seq", store_v_seq)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if tau is not None:
            tau = check_positive(tau, "tau")
            if tau <= 1.0:
                raise ValueError(f"tau must be > 1 (decay = 1 - 1/tau in (0, 1)) or None for IF, got {tau}")
        k = check_positive(k, "k")
        if backend not in ("torch", "triton"):
            raise ValueError(f"backend must be 'torch' or 'triton', got {backend!r}")
        super().__init__(
            v_threshold=1.0 if fixed is None else fixed,
            v_reset=None if v_reset is None else float(v_reset),
            surrogate_function=surrogate.Sigmoid() if surrogate_function is None else surrogate_function,
            detach_reset=detach_reset,
            step_mode=step_mode,
            store_v_seq=store_v_seq,
        )
        self.v_threshold: ThresholdSpec = v_threshold if fixed is None else fixed
        self.tau = tau
        self.decay_input = decay_input
        self.k = k
        self.dim = dim
        self.signed = signed
        self.rounding = rounding
        if backend == "triton":
            if tau is not None:
                raise ValueError(
                    f"backend='triton' runs the IF neuron (tau=None) of sb_kernels.multistep_neuron, got tau={tau}: "
                    "the kernel leaks after the reset (sb_neurons), not as SpikingJelly's LIF; use backend='torch'"
                )
            if _triton_neuron() is None:
                raise RuntimeError(
                    "backend='triton' needs sb_kernels.multistep_neuron and the triton package, which this "
                    "installation lacks; use backend='torch'"
                )
            if learn_threshold:
                raise ValueError("backend='triton' holds the threshold constant: learn_threshold needs backend='torch'")
            _kernel_surrogate(self.surrogate_function)
        self.backend = backend
        self.learn_threshold = learn_threshold
        if fixed is not None and learn_threshold:
            self.threshold_parameter = torch.nn.Parameter(torch.tensor(fixed))
        self.register_memory("v_th", None)
        self.v_th_pending = False  # some row has carried no input yet ("first_step"); cleared by reset()

    def reset(self) -> None:
        """SpikingJelly's reset (every memory to its initial value), and no row pending a threshold."""
        super().reset()
        self.v_th_pending = False

    @property
    def supported_backends(self) -> tuple[str, ...]:
        return ("torch", "triton") if _triton_neuron() is not None and self.tau is None else ("torch",)

    @property
    def decay(self) -> float:
        """``1 - 1 / tau`` (1 for the IF neuron): the factor SpikingJelly's charge keeps of ``v - v_reset``."""
        return 1.0 if self.tau is None else 1.0 - 1.0 / self.tau

    # -- threshold -------------------------------------------------------------------------------
    def _fixed_threshold(self, like: torch.Tensor) -> torch.Tensor:
        if self.learn_threshold:
            return self.threshold_parameter.to(like.dtype)
        return torch.tensor(self.v_threshold, dtype=like.dtype, device=like.device)

    def _initial_threshold(self, x: torch.Tensor, step_mode: str, v_th: torch.Tensor | None = None) -> torch.Tensor | None:
        """Threshold of a new sequence, ``None`` for a fixed one (read afresh at each step: it may be learned);
        for ``"first_step"`` also the update of rows still pending in ``v_th``."""
        if not isinstance(self.v_threshold, str):
            return None
        step = x[0] if step_mode == "m" else x
        dims = _check_step_dims(self.dim, step.ndim)
        if self.v_threshold == "total":
            if step_mode == "s":
                raise ValueError("v_threshold='total' needs the whole sequence: use step_mode='m', or 'first_step'")
            return adaptive_threshold(x.sum(dim=0).detach(), self.k, dims).to(x.dtype)
        steps = x if step_mode == "m" else x.unsqueeze(0)
        v_th = first_input_threshold(steps, self.k, dims, v_th).to(x.dtype)
        self.v_th_pending = bool((v_th == pending_threshold(x.dtype)).any())
        return v_th

    def materialize_states(self, inputs: tuple[torch.Tensor, ...], states: tuple[object, ...], step_mode: str) -> tuple[object, ...]:
        name = "x_seq" if step_mode == "m" else "x"
        x = check_float_tensor(inputs[0], name)
        if step_mode == "m" and x.ndim < 2:
            raise ValueError(f"multi-step input x_seq must be [T, N, *], got shape {tuple(x.shape)}")
        if step_mode == "s" and x.ndim < 1:
            raise ValueError(f"single-step input x must be [N, *], got a 0-dim tensor")
        step_shape = tuple(x.shape[1:] if step_mode == "m" else x.shape)
        v_state, v_th_state = states
        if isinstance(v_state, torch.Tensor) and tuple(v_state.shape) != step_shape:
            raise ValueError(
                f"the neuron's state v has shape {tuple(v_state.shape)}, but a step of {name} has shape {step_shape}: "
                "a state left by another batch; call functional.reset_net(net) before a new batch"
            )
        if isinstance(v_th_state, torch.Tensor) and (v_th_state.ndim != len(step_shape) or v_th_state.shape[0] != step_shape[0]):
            raise ValueError(
                f"the neuron's adaptive threshold v_th has shape {tuple(v_th_state.shape)}, which does not fit a step "
                f"of {name} of shape {step_shape}: call functional.reset_net(net) before a new batch"
            )
        v, v_th = super().materialize_states(inputs, states, step_mode)
        if v_th is None:
            v_th = self._initial_threshold(x, step_mode)
        elif self.v_threshold == "first_step" and self.v_th_pending:
            v_th = self._initial_threshold(x, step_mode, v_th)
        elif self.v_threshold == "total" and step_mode == "m":
            raise ValueError(
                "v_threshold='total' sets the threshold from a whole sequence: call functional.reset_net(net) "
                "before the next sequence, or use v_threshold='first_step' to feed a sequence in pieces"
            )
        return (v, v_th)

    # -- dynamics --------------------------------------------------------------------------------
    def _runs_host_neuron(self, v_th: torch.Tensor | None) -> bool:
        """Whether this call is exactly a SpikingJelly LIFNode / IFNode (fixed float threshold, no SB option)."""
        return v_th is None and not (self.learn_threshold or self.signed or self.rounding) and self.backend == "torch"

    def _fire_reset(self, h_seq: torch.Tensor, threshold: torch.Tensor, v: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """Fire and reset (no leak) of :func:`sb_neurons.multistep_neuron_forward`: ``(spikes, u_seq)``."""
        return multistep_neuron_forward(
            h_seq,
            threshold,
            v,
            decay=1.0,
            reset_mode="soft" if self.v_reset is None else "hard",
            signed=self.signed,
            v_reset=0.0 if self.v_reset is None else self.v_reset,
            rounding=self.rounding,
            surrogate=self.surrogate_function,
            detach_reset=self.detach_reset,
        )

    def _run(self, x_seq: torch.Tensor, v: torch.Tensor, v_th: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(spikes [T, N, *], v_seq [T, N, *])``: spikes and the potential after every step's reset.

        On the triton backend, and on the host path without ``store_v_seq``, ``v_seq`` holds only the last
        step (``[1, N, *]``).
        """
        if self._runs_host_neuron(v_th):
            if self.tau is None:
                spikes, v_last, v_seq = sj_functional.if_multi_step(
                    x_seq, v, self.v_threshold, self.v_reset, self.surrogate_function, self.detach_reset, self.store_v_seq
                )
            else:
                spikes, v_last, v_seq = sj_functional.lif_multi_step(
                    x_seq, v, self.tau, self.decay_input, self.v_threshold, self.v_reset, self.surrogate_function,
                    self.detach_reset, self.store_v_seq,
                )
            return spikes, (v_last.unsqueeze(0) if v_seq is None else v_seq)
        threshold = self._fixed_threshold(x_seq) if v_th is None else v_th
        if self.backend == "triton":
            kernel = _triton_neuron()
            if kernel is None:  # the module was built elsewhere, or moved to an installation without Triton
                raise RuntimeError("backend='triton' needs sb_kernels.multistep_neuron and the triton package")
            spikes, v_last = kernel(
                x_seq, threshold, v, decay=1.0, reset="soft" if self.v_reset is None else "hard",
                v_reset=0.0 if self.v_reset is None else self.v_reset, signed=self.signed,
                rounding=self.rounding, surrogate=_kernel_surrogate(self.surrogate_function),
                detach_reset=self.detach_reset, backend="triton",
            )
            return spikes, v_last.unsqueeze(0)
        if self.tau is None:  # IF: charge v + x is that of sb_neurons, one call for the whole sequence
            return self._fire_reset(x_seq, threshold, v)
        spikes, v_seq = [], []
        for x in x_seq:
            h = sj_functional.lif_charge(x, v, self.tau, self.decay_input, self.v_reset)
            s, u = self._fire_reset(h.unsqueeze(0), threshold, 0.0)
            v = u[0]
            spikes.append(s[0])
            v_seq.append(v)
        return torch.stack(spikes), torch.stack(v_seq)

    def single_step_functional_forward(self, inputs, states, **kwargs):
        v, v_th = states
        spikes, u_seq = self._run(inputs[0].unsqueeze(0), v, v_th)
        return (spikes[0],), (u_seq[-1], v_th)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        v, v_th = states
        spikes, u_seq = self._run(inputs[0], v, v_th)
        return (spikes,), (u_seq[-1], v_th)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        if not self.store_v_seq:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        if self.backend == "triton":
            raise ValueError(
                "store_v_seq in multi-step mode needs backend='torch': the triton kernel keeps the potential in "
                "registers and returns only the last step (single-step mode records v_seq on either backend)"
            )
        v, v_th = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        spikes, u_seq = self._run(x_seq, v, v_th)
        self.v, self.v_th, self.v_seq = u_seq[-1], v_th, u_seq
        return spikes

    def extra_repr(self) -> str:
        return (
            f"tau={self.tau}, decay_input={self.decay_input}, v_threshold={self.v_threshold!r}, k={self.k}, "
            f"v_reset={self.v_reset}, detach_reset={self.detach_reset}, step_mode={self.step_mode}, "
            f"backend={self.backend}, signed={self.signed}, rounding={self.rounding}"
        )


class SBSpikeCountNode(torch.nn.Module, base.StepModule):
    """The collapsed (single-step) SpikingBrain neuron, Eq. 21, as a stateless SpikingJelly module.

    ``output="value"`` returns ``v_th * round(x / v_th)`` in ``x.dtype`` (what a spike-coded layer feeds
    forward); ``output="count"`` returns the integer counts (float32, float64 for float64 input).
    ``v_th = clamp(mean(|x|, dim) / k, 1e-5, 1e4)`` per sample; the gradient is straight-through.

    Shapes: ``'s'``: ``[N, *] -> [N, *]``; ``'m'``: ``[T, N, *] -> [T, N, *]``, each step on its own, so a
    single-step loop equals the multi-step call exactly.

    Args:
        k: ``k > 0``.
        dim: dimension(s) of a step's input sharing one threshold (default the last; never 0).
        clamp: ``None`` (counts unbounded), a signed bit width, or a ``(low, high)`` range.
        output: ``"value"`` or ``"count"``.
        step_mode: ``'s'`` or ``'m'``.
    """

    def __init__(
        self,
        k: float = 3.0,
        dim: int | tuple[int, ...] = -1,
        clamp: ClampSpec = None,
        output: Literal["value", "count"] = "value",
        step_mode: str = "s",
    ) -> None:
        super().__init__()
        self.k = check_positive(k, "k")
        resolve_clamp(clamp)
        if output not in ("value", "count"):
            raise ValueError(f"output must be 'value' or 'count', got {output!r}")
        self.dim = dim
        self.clamp = clamp
        self.output = output
        self.step_mode = step_mode

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x")
        dims = _check_step_dims(self.dim, x.ndim)
        if self.output == "value":
            return spike_quantize(x, self.k, dims, self.clamp)
        return spike_count(x, self.k, dims, self.clamp).counts

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq")
        if x_seq.ndim < 2:
            raise ValueError(f"multi-step input must be [T, N, *], got shape {tuple(x_seq.shape)}")
        out = self.single_step_forward(x_seq.flatten(0, 1))
        return out.reshape(x_seq.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.single_step_forward(x) if self.step_mode == "s" else self.multi_step_forward(x)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}, clamp={self.clamp}, output={self.output}, step_mode={self.step_mode}"


def register() -> None:
    """Make ``neuron.SBLIFNode`` and ``neuron.SBSpikeCountNode`` available (idempotent)."""
    for cls in (SBLIFNode, SBSpikeCountNode):
        setattr(neuron, cls.__name__, cls)
        names = getattr(neuron, "__all__", None)
        if isinstance(names, list) and cls.__name__ not in names:
            names.append(cls.__name__)


register()

__all__ = ["SBLIFNode", "SBSpikeCountNode", "register"]
