"""snnTorch adapter: SBLeaky, snnTorch's ``Leaky`` neuron with SpikingBrain's adaptive threshold.

``from sb_adapters.snntorch import SBLeaky`` (after that import also ``snntorch.SBLeaky``). It is a
subclass of ``snntorch.Leaky`` and keeps its conventions: ``beta``, ``threshold``, ``spike_grad`` (any
``snntorch.surrogate`` function), ``surrogate_disable``, ``init_hidden``, ``reset_mechanism``
(``"subtract"``, ``"zero"``, ``"none"``), ``output``, ``learn_beta`` / ``learn_threshold``;
``forward(input_, mem)`` returns ``(spk, mem)``, or ``spk`` alone with ``init_hidden=True``; its state is
cleared by ``snntorch.utils.reset(net)`` or ``init_leaky()``.

Defaults are ``snntorch.Leaky``'s (``beta`` required, ``threshold=1.0``, ``reset_mechanism="subtract"``,
``spike_grad=None`` (atan), ``init_hidden=False``, ``reset_delay=True``, ...), and with them, or any
float threshold, ``SBLeaky`` is ``Leaky`` spike for spike and gradient for gradient (the same operations
in the same order; tested with explicit ``mem`` and with ``init_hidden``). The adaptive threshold is
switched on by one argument, ``threshold="first_step"``: each sample row takes
``v_th = mean(|x_t|, dim) / k`` (clamped to ``[1e-5, 1e4]``, one per sample row by default) from its first
step after a reset that carries input, and keeps it for the sequence (SpikingBrain's
``threshold="first_step"`` of :mod:`sb_neurons`, :func:`sb_neurons.first_input_threshold`).

A silent first step. Rate-coded input (``snntorch.spikegen.rate``) often starts with an all-zero step for
some samples; ``mean|x_0| / k`` of it would be the 1e-5 floor, under which the neuron fires at every later
step. So a row that has carried no input yet holds a pending threshold (``torch.finfo(dtype).max``: it
cannot fire) and takes its threshold at its first step with input. Finding whether rows are still
pending reads one flag back to the host per step until every row has had input (on a GPU, a
synchronization on those steps only).

State and batch size: an explicit ``mem`` of ``input_``'s shape continues the sequence; an all-zero one of
another shape (what ``init_leaky()`` / ``reset_mem()`` return) starts a new one; a non-zero ``mem`` of
another shape (a membrane of another batch) raises ``ValueError`` (snnTorch would silently zero it). A stored
membrane (``init_hidden=True``) whose shape differs from ``input_``'s starts a new sequence, as in snnTorch:
zero membrane and, for ``"first_step"``, a new threshold. ``input_`` must be a floating tensor (``TypeError`` for
bool / integer tensors); its values are not checked at each step, which would read every step back to the
host: NaN or Inf propagates into ``mem`` as in ``Leaky`` (the adaptive threshold of a row is checked
once, when it is set, and a non-finite one raises ``ValueError``).

Dynamics: snnTorch's ``Leaky`` with the default ``reset_delay=True``, which are those of
:func:`sb_neurons.multistep_neuron_forward` with ``decay = beta`` (tested):
``mem_t = beta * mem_{t-1} - v_th * s_{t-1} + x_t`` (subtract), ``beta * (1 - s_{t-1}) * mem_{t-1} + x_t``
(zero), ``beta * mem_{t-1} + x_t`` (none); ``s_t = H(mem_t - v_th)``; the reset is detached from the graph
as in snnTorch. ``mem`` is the potential before the reset of its own spike, as snnTorch returns it.
Spikes fire where snnTorch's own spike function fires: at ``mem > v_th`` through a surrogate
(``spike_grad``, whose forward is ``x > 0``, as in ``Leaky``), at ``mem >= v_th`` with
``surrogate_disable=True`` (the Heaviside of :mod:`sb_neurons`); the two differ only on equality.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import snntorch
import torch

from sb_neurons import first_input_threshold, heaviside, pending_threshold
from sb_neurons.validation import check_float_tensor, check_positive, normalize_dims


class SBLeaky(snntorch.Leaky):
    """``snntorch.Leaky`` with SpikingBrain's adaptive threshold (``threshold="first_step"``).

    With ``Leaky``'s arguments it is ``Leaky``.

    Args:
        beta: membrane decay in ``(0, 1]`` (a float or tensor; learnable with ``learn_beta``), required as
            in ``Leaky``.
        k: ``k > 0`` of the adaptive threshold ``mean|x_0| / k`` (``"first_step"`` only); larger k, lower
            threshold, more spikes.
        threshold: a fixed float ``> 0`` (default 1.0 as ``Leaky``; learnable with ``learn_threshold``) or
            ``"first_step"`` (SpikingBrain's adaptive threshold, set per row at its first step with input).
        spike_grad: an ``snntorch.surrogate`` function (default ``atan()``, as snnTorch).
        surrogate_disable: Heaviside forward and zero gradient (no surrogate).
        init_hidden: keep the membrane inside the module; ``forward(x)`` then returns ``spk`` only.
        learn_beta: make ``beta`` a parameter.
        learn_threshold: make a fixed ``threshold`` a parameter.
        reset_mechanism: ``"subtract"`` (SpikingBrain's soft reset), ``"zero"`` or ``"none"``.
        output: return ``(spk, mem)`` even with ``init_hidden=True``.
        graded_spikes_factor: output spikes are scaled by this value (snnTorch's graded spikes; the
            dynamics use the unscaled spikes, as in snnTorch).
        learn_graded_spikes_factor: make ``graded_spikes_factor`` a parameter.
        inhibition: snnTorch's winner-take-all option; only ``False`` (the adaptive neuron does not
            implement it: a ``ValueError`` says so).
        state_quant: only ``False``: quantizing the membrane would bypass the sb_neurons dynamics.
        reset_delay: only ``True`` (snnTorch's default; the reset of a spike acts at the next step).
        dim: dimension(s) of the input sharing one adaptive threshold (default the last; never 0).

    Shapes: ``input_`` ``[B, *]`` per time step; ``spk`` and ``mem`` have its shape. State: ``mem`` and
    ``v_th`` (the adaptive threshold in use, ``None`` until the first step of a sequence; a row without
    input so far holds :func:`sb_neurons.pending_threshold`).
    """

    def __init__(
        self,
        beta: float | torch.Tensor,
        k: float = 3.0,
        threshold: float | Literal["first_step"] = 1.0,
        spike_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
        surrogate_disable: bool = False,
        init_hidden: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: str = "subtract",
        output: bool = False,
        graded_spikes_factor: float | torch.Tensor = 1.0,
        learn_graded_spikes_factor: bool = False,
        inhibition: bool = False,
        state_quant: object = False,
        reset_delay: bool = True,
        dim: int | tuple[int, ...] = -1,
    ) -> None:
        adaptive = isinstance(threshold, str)
        if adaptive and threshold != "first_step":
            raise ValueError(f"threshold must be a float > 0 or 'first_step', got {threshold!r}")
        if adaptive and learn_threshold:
            raise ValueError("learn_threshold needs a fixed float threshold, not threshold='first_step'")
        fixed = 1.0 if adaptive else check_positive(threshold, "threshold")
        beta_value = float(beta) if isinstance(beta, (int, float)) and not isinstance(beta, bool) else None
        if beta_value is not None and not 0.0 < beta_value <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}")
        # Validate before snnTorch's constructor: it registers every instance in a class-wide list that
        # snntorch.utils.reset walks, so a half-built neuron would break later resets.
        if reset_mechanism not in ("subtract", "zero", "none"):
            raise ValueError(f"reset_mechanism must be 'subtract', 'zero' or 'none', got {reset_mechanism!r}")
        # snnTorch options outside the adaptive neuron's dynamics: refused by name rather than ignored.
        if inhibition:
            raise ValueError("inhibition=True is not supported by SBLeaky (use snntorch.Leaky for winner-take-all)")
        if state_quant is not False and state_quant is not None:
            raise ValueError("state_quant is not supported by SBLeaky: the membrane follows the sb_neurons dynamics unquantized")
        if reset_delay is not True:
            raise ValueError("reset_delay=False is not supported by SBLeaky: the reset of a spike acts at the next step")
        k = check_positive(k, "k")
        super().__init__(
            beta,
            threshold=fixed,
            spike_grad=spike_grad,
            surrogate_disable=surrogate_disable,
            init_hidden=init_hidden,
            learn_beta=learn_beta,
            learn_threshold=learn_threshold,
            reset_mechanism=reset_mechanism,
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
        )
        self.k = k
        self.dim = dim
        self.adaptive = adaptive
        self.v_th: torch.Tensor | None = None
        self._pending = False  # some row of the sequence has carried no input yet
        if adaptive:
            # A first_step neuron has no scalar threshold: code reading one must fail, not use a placeholder.
            del self.threshold

    # -- state: snntorch.utils.reset assigns ``mem``; a new membrane starts a new sequence -------------
    def _init_mem(self) -> None:
        self.register_buffer("membrane", torch.zeros(0), persistent=False)

    @property
    def mem(self) -> torch.Tensor:
        return self.membrane

    @mem.setter
    def mem(self, value: torch.Tensor) -> None:
        self.membrane = value
        self.v_th = None

    def reset_mem(self) -> torch.Tensor:
        """Zero the membrane and forget the adaptive threshold; returns the membrane."""
        self.mem = torch.zeros_like(self.membrane)
        return self.mem

    # -- dynamics --------------------------------------------------------------------------------
    def _threshold(self, input_: torch.Tensor) -> torch.Tensor:
        if not self.adaptive:
            return self.threshold.to(input_.dtype)
        if self.v_th is None or self._pending:
            if input_.ndim < 1:
                raise ValueError("input_ must be [B, *] for threshold='first_step' (one threshold per sample), got a 0-dim tensor")
            dims = normalize_dims(self.dim, input_.ndim)
            if 0 in dims and input_.ndim > 1:
                raise ValueError(f"dim={self.dim!r} includes the batch dimension 0; thresholds are per sample")
            check_float_tensor(input_, "input_")  # finite: read back only on the steps that set thresholds
            self.v_th = first_input_threshold(input_.unsqueeze(0), self.k, dims, self.v_th).to(input_.dtype)
            self._pending = bool((self.v_th == pending_threshold(input_.dtype)).any())
        return self.v_th

    def _fire(self, mem: torch.Tensor, v_th: torch.Tensor) -> torch.Tensor:
        """snnTorch's ``fire``: the surrogate of ``mem - v_th`` (fires at ``mem > v_th``), or with
        ``surrogate_disable`` the Heaviside of :mod:`sb_neurons` (at ``mem >= v_th``)."""
        return heaviside(mem - v_th) if self.surrogate_disable else self.spike_grad(mem - v_th)

    def _step(self, input_: torch.Tensor, mem: torch.Tensor, v_th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step, ``Leaky``'s operations in ``Leaky``'s order (so its gradients too): the delayed
        reset of the previous potential's spike (detached), leak, input, then fire. Returns ``(spk, mem)``."""
        decay = self.beta.clamp(0, 1)
        if self.reset_mechanism == "subtract":
            new_mem = decay * mem + input_ - self._fire(mem, v_th).detach() * v_th
        elif self.reset_mechanism == "zero":
            new_mem = decay * ((1 - self._fire(mem, v_th).detach()) * mem) + input_
        else:
            new_mem = decay * mem + input_
        return self._fire(new_mem, v_th) * self.graded_spikes_factor, new_mem

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None):
        check_float_tensor(input_, "input_", finite=False)
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if mem is not None:
            check_float_tensor(mem, "mem", finite=False)
            if mem.shape != input_.shape and bool(mem.any()):
                raise ValueError(
                    f"mem has shape {tuple(mem.shape)} but input_ has shape {tuple(input_.shape)}: a membrane from "
                    "another batch; start a new sequence with mem = lif.reset_mem() (or init_leaky())"
                )
            self.membrane = mem
        if self.membrane.shape != input_.shape:  # a new sequence (empty or stored state of another batch)
            self.mem = torch.zeros_like(input_)
        spk, new_mem = self._step(input_, self.membrane, self._threshold(input_))
        self.membrane = new_mem
        if self.output or not self.init_hidden:
            return spk, new_mem
        return spk

    def extra_repr(self) -> str:
        threshold = "first_step" if self.adaptive else f"{float(self.threshold):.4g}"
        return f"k={self.k}, threshold={threshold}, reset_mechanism={self.reset_mechanism}, init_hidden={self.init_hidden}"


snntorch.SBLeaky = SBLeaky

__all__ = ["SBLeaky"]
