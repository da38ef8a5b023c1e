"""Multi-step integrate-and-fire neurons with SpikingBrain's adaptive threshold.

Dynamics (facts section 1, Eq. 9 and 20). The state ``u`` is the potential carried into the next step
(``u = v_init`` after reset). At every step t, in this order:

    1. charge   v_t = u_{t-1} + x_t
    2. fire     s_t = +1 if v_t >= theta;   (signed only) -1 if v_t <= -theta (plain) / v_t < -theta (rounding);
                else 0
    3. reset    soft: u_t = decay * v_t - v_th * s_t
                hard: u_t = decay * (1 - |s_t|) * v_t + v_reset * |s_t|
    4. (modules only, optional homeostasis) v_th <- max(v_th + alpha * (rate_t - beta), 1e-5)

``decay`` is 1 for the IF neuron (Eq. 20: ``v_{t+1} = v_t - V_th s_t + x_{t+1}``) and ``lambda`` in (0, 1)
for the LIF neuron (Eq. 9, soft ``v <- lambda v - V_th s + x``, hard ``v <- lambda (1-s) v + v_reset s + x``).
Plain firing uses ``theta = v_th``; both sides are closed, so a signed plain neuron is odd-symmetric
(the spikes of ``-x`` are minus those of ``x``). *Rounding* firing uses ``theta = v_th / 2``: a
soft-reset IF neuron then keeps its potential in ``[-v_th / 2, v_th / 2)`` and its count rounds instead
of truncating. The negative side is open there on purpose: closing both sides at ``+-v_th / 2`` makes a
neuron sitting exactly on a tie fire +1, land on ``-v_th / 2``, fire -1, and oscillate forever.

Adaptive threshold (modules). ``threshold="total"`` takes ``v_th = mean(|sum_t x_t|) / k`` over ``dim``:
the threshold of the collapsed input ``x = sum_t x_t`` (report Eq. 19). It needs the whole sequence, so
it exists in multi-step mode only, and one call is one sequence (a second call without :meth:`reset`
raises). ``threshold="first_step"`` takes ``v_th = mean(|x_t|) / k`` from each row's first step after a
reset that carries input (:func:`sb_neurons.first_input_threshold`) and keeps it, identically in both
step modes and when a sequence is fed in pieces. A row whose steps so far were all zero holds the pending
threshold ``torch.finfo(dtype).max`` and cannot fire (an empty first step would otherwise set the 1e-5
floor, under which the neuron fires at every later step); while some row is pending, each call reads one
flag back to the host. Within one call, the steps before a row's first input run with the threshold that
input sets: with ``v_init = 0`` (the default) they carry no potential and stay silent. A float gives a
fixed threshold (learnable with ``learn_threshold=True``). Adaptive thresholds are clamped to
``[1e-5, 1e4]`` as in :func:`sb_neurons.adaptive_threshold` and held constant in the backward pass.

Collapse of Eq. 20 into Eq. 21 (tested in ``tests/neurons/test_neurons.py``). Let ``x = sum_t x_t`` and
``n = floor(x / v_th + 1/2)``. A soft-reset IF neuron (decay 1) with ``signed=True``, ``rounding=True``,
``v_init = 0`` and a threshold ``v_th`` held for the whole sequence emits net spikes
``sum_t s_t = n`` and ends with ``u_T = x - v_th * n`` in ``[-v_th / 2, v_th / 2)`` when the input is
delivered so that one spike per step can keep up:

    (a) all of ``x`` at step 0 and zeros after, with ``T >= max(|n|, 1)``; or
    (b) spread evenly, ``x_t = x / T``, with ``-v_th <= x / T < v_th`` (i.e. ``T > |x| / v_th``).

``n`` equals ``round(x / v_th)`` (round half to even, Eq. 21) everywhere except at exact ties
``x / v_th = m + 1/2`` with ``m`` even, where the neuron rounds up (half up): a neuron's threshold
comparison cannot see the parity of its count, so round-half-to-even is a property of the collapsed
form only. Without ``signed`` no negative count is emitted; without ``rounding`` the plain neuron
truncates toward zero; an unsigned plain neuron started at ``v_init = v_th / 2`` also gives ``n`` for
``x >= 0`` (the classic ANN-to-SNN conversion offset). The module form holds the same with
``threshold="total"``, whose ``v_th`` is the one :func:`sb_neurons.spike_count` computes from ``x``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .validation import check_dim_spec, check_float_tensor, check_positive, check_real, normalize_dims
from .spike import V_TH_MAX, V_TH_MIN, first_input_threshold, pending_threshold
from .surrogate import get_surrogate

ResetMode = Literal["soft", "hard"]
ThresholdMode = Literal["total", "first_step"]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """Step function with zero gradient: 1 where ``x >= 0``, in ``x``'s (floating) dtype.

    Elementwise and unchecked for finiteness (it runs at every time step; the neurons check their
    inputs): NaN gives 0, ``+inf`` 1, ``-inf`` 0.
    """
    check_float_tensor(x, "x", finite=False)
    return (x >= 0).to(x.dtype)


def _check_reset_mode(reset_mode: object) -> str:
    if reset_mode not in ("soft", "hard"):
        raise ValueError(f"reset_mode must be 'soft' or 'hard', got {reset_mode!r}")
    return reset_mode  # type: ignore[return-value]


def _as_state(value: torch.Tensor | float, name: str, like: torch.Tensor) -> torch.Tensor:
    """A float or tensor broadcastable to one step ``like``, finite, in ``like``'s dtype and device."""
    if isinstance(value, torch.Tensor):
        check_float_tensor(value, name)
    else:
        check_real(value, f"{name} (a number or a float tensor)")
    tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        torch.broadcast_shapes(tensor.shape, like.shape)
    except RuntimeError:
        raise ValueError(f"{name} of shape {tuple(tensor.shape)} does not broadcast to a step {tuple(like.shape)}") from None
    return tensor


def _integrate_and_fire(
    x_seq: torch.Tensor,
    v_th: torch.Tensor,
    u: torch.Tensor,
    decay: torch.Tensor | float,
    reset_mode: str,
    signed: bool,
    v_reset: float,
    rounding: bool,
    surrogate: Callable[[torch.Tensor], torch.Tensor],
    detach_reset: bool,
    homeostasis: tuple[float, float] | None,
    homeostasis_dims: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The update of the module docstring (steps 1-4); inputs already validated."""
    scale = 0.5 if rounding else 1.0
    th = v_th
    spikes, states = [], []
    for x in x_seq:
        v = u + x
        s = surrogate(v - scale * th)
        if signed:
            if rounding:
                # -1 where v < -th/2: 1 - H(v + th/2); the open side keeps a tie from oscillating.
                s = s - (1.0 - surrogate(v + scale * th))
            else:
                # -1 where v <= -th: H(-th - v), the mirror image of the +1 side.
                s = s - surrogate(-v - scale * th)
        s_reset = s.detach() if detach_reset else s
        if reset_mode == "soft":
            u = decay * v - th * s_reset
        else:
            fired = s_reset.abs()
            u = decay * (1.0 - fired) * v + v_reset * fired
        if homeostasis is not None:
            alpha, beta = homeostasis
            rate = s.detach().abs().mean(dim=homeostasis_dims, keepdim=True)
            th = (th + alpha * (rate - beta)).clamp(min=V_TH_MIN)
        spikes.append(s)
        states.append(u)
    return torch.stack(spikes), torch.stack(states), th


def multistep_neuron_forward(
    x_seq: torch.Tensor,
    v_th: torch.Tensor | float,
    v_init: torch.Tensor | float = 0.0,
    decay: torch.Tensor | float = 1.0,
    reset_mode: ResetMode = "soft",
    signed: bool = False,
    v_reset: float = 0.0,
    *,
    rounding: bool = False,
    surrogate: Callable[[torch.Tensor], torch.Tensor] = heaviside,
    detach_reset: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float reference of the multi-step neuron: steps 1-3 of the module docstring, t = 0 .. T-1.

    Per step: charge ``v = u + x_t``; fire ``s = +1`` if ``v >= theta``, ``-1`` (signed only) if
    ``v <= -theta`` (``v < -theta`` with ``rounding``), with ``theta = v_th`` (``v_th / 2`` with
    ``rounding``); reset ``u = decay * v - v_th * s`` (soft) or
    ``u = decay * (1 - |s|) * v + v_reset * |s|`` (hard). The threshold is constant over the call.
    This is the function a fused kernel reproduces; the modules add adaptive thresholds and homeostasis.

    Args:
        x_seq: input ``[T, ...]``, floating, finite, ``T >= 1``.
        v_th: threshold ``> 0``, a float or a tensor broadcastable to ``x_seq[0]`` (e.g. ``[B, 1]``).
        v_init: potential carried in (``u_{-1}``), float or tensor broadcastable to ``x_seq[0]``.
        decay: 1 for IF, in (0, 1] for LIF; a float or a 0-d tensor (may require grad).
        reset_mode: ``"soft"`` (subtract the threshold) or ``"hard"`` (to ``v_reset``).
        signed: also fire -1 spikes (ternary neuron).
        v_reset: potential after a hard reset.
        rounding: fire at half the threshold, so that counts round instead of truncating.
        surrogate: spike function of ``v - theta`` (Heaviside forward; a surrogate gives gradients).
        detach_reset: cut the gradient through the spikes of the reset term.

    Returns:
        ``(spikes, v_seq)``, both ``[T, ...]`` in ``x_seq.dtype`` (broadcast shape of the inputs):
        spikes in {0, 1} ({-1, 0, 1} when signed) and the potential ``u_t`` carried out of every step
        (``v_seq[-1]`` is the state to pass as ``v_init`` to continue the sequence).
    """
    check_float_tensor(x_seq, "x_seq")
    if x_seq.ndim < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"x_seq must have shape [T, ...] with T >= 1, got {tuple(x_seq.shape)}")
    th = _as_state(v_th, "v_th", x_seq[0])
    if th.numel() and not bool((th > 0).all()):
        raise ValueError("v_th must be > 0 everywhere")
    u = _as_state(v_init, "v_init", x_seq[0])
    decay_value = _as_state(decay, "decay", x_seq[0])
    if decay_value.ndim or not 0.0 < float(decay_value.detach()) <= 1.0:
        raise ValueError(f"decay must be a number (or 0-d tensor) in (0, 1], got {decay!r}")
    check_real(v_reset, "v_reset")
    reset_mode = _check_reset_mode(reset_mode)
    if not callable(surrogate):
        raise TypeError(f"surrogate must be callable, got {type(surrogate).__name__}")
    u = u.expand(torch.broadcast_shapes(u.shape, x_seq[0].shape, th.shape))
    spikes, v_seq, _ = _integrate_and_fire(
        x_seq, th, u, decay, reset_mode, bool(signed), float(v_reset), bool(rounding), surrogate,
        bool(detach_reset), None, (),
    )
    return spikes, v_seq


class AdaptiveIFNode(nn.Module):
    """Integrate-and-fire neuron with SpikingBrain's adaptive threshold (decay 1).

    Args:
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k``.
        threshold: ``"total"`` (multi-step only), ``"first_step"``, or a fixed float ``> 0``.
        dim: dimension(s) of a step's input sharing one threshold (default the last: one per row).
        reset: ``"soft"`` (default, Eq. 20) or ``"hard"``.
        v_reset: potential after a hard reset.
        v_init: potential after :meth:`reset` (0 by default).
        signed: fire -1 spikes too (ternary neuron, for signed activations).
        rounding: fire at half the threshold so that counts round (see the module docstring).
        surrogate: ``"atan"`` (default), ``"sigmoid"`` or a callable spike function.
        surrogate_alpha: slope of a named surrogate.
        detach_reset: detach the spikes in the reset term.
        homeostasis: ``(alpha, beta)``, ``alpha > 0``, ``beta`` in [0, 1]: after each step
            ``v_th <- max(v_th + alpha * (rate - beta), 1e-5)`` with ``rate`` the mean ``|s|`` over ``dim``
            (the threshold then evolves with the sequence; not combinable with ``learn_threshold``).
        step_mode: ``"s"`` (input ``[B, ...]`` per call) or ``"m"`` (input ``[T, B, ...]``).
        store_v_seq: keep the carried potential of every step in ``v_seq`` (multi-step mode).
        learn_threshold: make a fixed float threshold a learnable parameter.

    Shapes: single step ``[B, ...] -> [B, ...]``; multi-step ``[T, B, ...] -> [T, B, ...]``.
    Spikes have the input's dtype. State: ``v`` (carried potential) and ``v_th`` (current threshold),
    cleared by :meth:`reset`; a sequence fed in pieces gives the same spikes as fed at once
    (``threshold="total"`` excepted, as it needs the whole sequence).
    """

    def __init__(
        self,
        k: float = 3.0,
        threshold: ThresholdMode | float = "first_step",
        dim: int | tuple[int, ...] = -1,
        reset: ResetMode = "soft",
        v_reset: float = 0.0,
        v_init: float = 0.0,
        signed: bool = False,
        rounding: bool = False,
        surrogate: str | Callable = "atan",
        surrogate_alpha: float | None = None,
        detach_reset: bool = False,
        homeostasis: tuple[float, float] | None = None,
        step_mode: Literal["s", "m"] = "s",
        store_v_seq: bool = False,
        learn_threshold: bool = False,
    ) -> None:
        super().__init__()
        self.k = check_positive(k, "k")
        if isinstance(threshold, str):
            if threshold not in ("total", "first_step"):
                raise ValueError(f"threshold must be 'total', 'first_step' or a float > 0, got {threshold!r}")
            if learn_threshold:
                raise ValueError("learn_threshold needs a fixed float threshold, not an adaptive one")
            self.threshold_mode: str = threshold
            self.fixed_threshold = None
        else:
            value = check_positive(threshold, "threshold")
            self.threshold_mode = "fixed"
            tensor = torch.tensor(value)
            self.fixed_threshold = nn.Parameter(tensor) if learn_threshold else None
            if not learn_threshold:
                self.register_buffer("_fixed_threshold_value", tensor, persistent=False)
        if reset not in ("soft", "hard"):
            raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}")
        if homeostasis is not None:
            if not isinstance(homeostasis, (tuple, list)) or len(homeostasis) != 2:
                raise TypeError(f"homeostasis must be None or an (alpha, beta) pair, got {homeostasis!r}")
            alpha, beta = homeostasis
            check_positive(alpha, "homeostasis alpha")
            check_real(beta, "homeostasis beta (target rate)", minimum=0, maximum=1)
            homeostasis = (float(alpha), float(beta))
            if learn_threshold:
                raise ValueError("learn_threshold and homeostasis both set the threshold: choose one")
        for name, value in (("v_reset", v_reset), ("v_init", v_init)):
            check_real(value, name)
        self.dim = check_dim_spec(dim)
        self.reset_mode = reset
        self.v_reset = float(v_reset)
        self.v_init = float(v_init)
        self.signed = bool(signed)
        self.rounding = bool(rounding)
        self.surrogate = get_surrogate(surrogate, surrogate_alpha)
        self.detach_reset = bool(detach_reset)
        self.homeostasis = homeostasis
        self.step_mode = step_mode
        self.store_v_seq = bool(store_v_seq)
        self.v: torch.Tensor | None = None
        self.v_th: torch.Tensor | None = None
        self.v_seq: torch.Tensor | None = None

    # -- parameters --------------------------------------------------------------------------
    @property
    def decay(self) -> torch.Tensor | float:
        return 1.0

    @property
    def step_mode(self) -> str:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, mode: str) -> None:
        if mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' or 'm', got {mode!r}")
        self._step_mode = mode

    def reset(self) -> None:
        """Forget the carried potential and the threshold (start of a new sequence)."""
        self.v = None
        self.v_th = None
        self.v_seq = None
        self._pending = False

    # -- threshold -------------------------------------------------------------------------------
    def _mean_abs_threshold(self, drive: torch.Tensor) -> torch.Tensor:
        dims = normalize_dims(self.dim, drive.ndim)
        if 0 in dims and drive.ndim > 1:
            raise ValueError("dim must not include the batch dimension 0 of a step's input")
        mean_abs = drive.detach().abs().mean(dim=dims, keepdim=True)
        return (mean_abs / self.k).clamp(V_TH_MIN, V_TH_MAX)

    def _threshold_for(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.threshold_mode == "first_step" and (self.v_th is None or self._pending):
            dims = normalize_dims(self.dim, x_seq.ndim - 1)
            if 0 in dims and x_seq.ndim > 2:
                raise ValueError("dim must not include the batch dimension 0 of a step's input")
            v_th = first_input_threshold(x_seq, self.k, dims, self.v_th).to(x_seq.dtype)
            self._pending = bool((v_th == pending_threshold(x_seq.dtype)).any())
            return v_th
        if self.v_th is not None:
            return self.v_th
        if self.threshold_mode == "fixed":
            value = self.fixed_threshold if self.fixed_threshold is not None else self._fixed_threshold_value
            return value.to(x_seq.dtype)
        return self._mean_abs_threshold(x_seq.sum(dim=0))  # "total"

    # -- forward ---------------------------------------------------------------------------------
    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x_seq, "x_seq")
        if x_seq.ndim < 2 or x_seq.shape[0] < 1:
            raise ValueError(f"x_seq must be [T, B, ...] with T >= 1 in multi-step mode, got shape {tuple(x_seq.shape)}")
        if self.threshold_mode == "total" and self.v is not None:
            raise ValueError(
                "threshold='total' sets the threshold from a whole sequence: call reset() before the next "
                "sequence, or use threshold='first_step' to feed a sequence in pieces"
            )
        v_th = self._threshold_for(x_seq)
        v_init = self.v if self.v is not None else self.v_init
        dims = normalize_dims(self.dim, x_seq.ndim - 1)
        spikes, u_seq, v_th_out = _integrate_and_fire(
            x_seq,
            v_th,
            torch.as_tensor(v_init, dtype=x_seq.dtype, device=x_seq.device).expand_as(x_seq[0]),
            self.decay,
            self.reset_mode,
            self.signed,
            self.v_reset,
            self.rounding,
            self.surrogate,
            self.detach_reset,
            self.homeostasis,
            dims,
        )
        self.v = u_seq[-1]
        # Adaptive thresholds hold for the rest of the sequence and homeostasis evolves them; a fixed
        # (possibly learnable) threshold is read afresh at every call.
        if self.threshold_mode != "fixed" or self.homeostasis is not None:
            self.v_th = v_th_out
        if self.store_v_seq:
            self.v_seq = u_seq
        return spikes

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.threshold_mode == "total":
            raise ValueError(
                "threshold='total' needs the whole sequence: use step_mode='m', or threshold='first_step'"
            )
        check_float_tensor(x, "x")
        return self.multi_step_forward(x.unsqueeze(0))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "m":
            return self.multi_step_forward(x)
        return self.single_step_forward(x)

    def extra_repr(self) -> str:
        threshold = self.threshold_mode if self.threshold_mode != "fixed" else "fixed"
        return (
            f"k={self.k}, threshold={threshold}, reset={self.reset_mode}, signed={self.signed}, "
            f"rounding={self.rounding}, step_mode={self.step_mode}"
        )


def _nearest_logit(decay: float) -> torch.Tensor:
    """The float32 logit whose float32 sigmoid is nearest ``decay`` (the rounded logit and its few
    neighbours: rounding the logit alone can move the sigmoid by an ulp, 0.75 -> 0.75000006)."""
    logit = torch.tensor(math.log(decay / (1.0 - decay)), dtype=torch.float32)
    candidates = [logit]
    for direction in (math.inf, -math.inf):
        step = logit
        for _ in range(4):
            step = torch.nextafter(step, torch.tensor(direction, dtype=torch.float32))
            candidates.append(step)
    return min(candidates, key=lambda c: (abs(float(torch.sigmoid(c)) - decay), abs(float(c - logit))))


class AdaptiveLIFNode(AdaptiveIFNode):
    """Leaky integrate-and-fire neuron (Eq. 9) with the adaptive threshold.

    ``decay`` is lambda in (0, 1), held as given (a buffer: ``AdaptiveLIFNode(0.75).decay == 0.75``
    exactly, in any dtype the module is moved to). With ``learn_decay=True`` it is learned through a
    logit parameter, ``decay = sigmoid(decay_logit)``, so that no optimizer step can leave (0, 1) (float
    rounding can only saturate it at 1.0, the IF neuron, for logits beyond about 17); the float32 logit
    is the one whose sigmoid comes nearest the given decay. Other arguments as :class:`AdaptiveIFNode`.
    """

    def __init__(self, decay: float = 0.5, *args, learn_decay: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_real(decay, "decay", minimum=0, maximum=1, open_minimum=True, open_maximum=True)
        if learn_decay:
            self.decay_logit = nn.Parameter(_nearest_logit(float(decay)))
        else:
            # Not sigmoid(float32 logit): that is 0.75000006 for 0.75, a neuron other than the one asked for.
            self.register_buffer("fixed_decay", torch.tensor(float(decay)), persistent=False)

    @property
    def decay(self) -> torch.Tensor:
        if "decay_logit" in self._parameters:
            return torch.sigmoid(self.decay_logit)
        return self.fixed_decay

    def extra_repr(self) -> str:
        return f"decay={float(self.decay.detach()):.4g}, " + super().extra_repr()
