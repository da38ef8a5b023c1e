"""Multi-step adaptive IF/LIF neuron in one launch: forward, and backward with the surrogate gradient.

Same update as :func:`sb_neurons.multistep_neuron_forward` (the reference), per neuron and step t:

    v_t = u_{t-1} + x_t
    s_t = H(v_t - theta), minus 1 when signed and v_t <= -theta (v_t < -theta when rounding),
          theta = v_th (v_th / 2 when rounding)
    u_t = decay * v_t - v_th * s_t                     (soft reset)
    u_t = decay * (1 - |s_t|) * v_t + v_reset * |s_t|  (hard reset)

The kernel keeps ``u`` in registers across all T steps (T a compile-time constant), reading each
``x_t`` once and writing each ``s_t`` once. The backward kernel stores nothing from the forward but its
inputs: it recomputes ``v_t`` from ``x`` in registers, keeps the per-step derivatives
``ds_t/dv_t`` and ``du_t/dv_t`` in registers, and runs the reverse recurrence

    dL/dv_t = dL/ds_t * ds_t/dv_t + dL/du_t * du_t/dv_t,     dL/dx_t = dL/du_{t-1} = dL/dv_t

so a training step moves ``x`` twice, the spikes once, their gradient once and ``dL/dx`` once, and no
``[T, N]`` state tensor (SpikingJelly's kernels write and re-read ``h_seq``). ``spike_dtype`` can make
the spikes (values in {-1, 0, 1}, exact in every float dtype) and hence their gradient half as wide.

Arithmetic is float32 without fused multiply-add, in the reference's order, so on float32 input the
spikes and states equal the float32 reference exactly; gradients match within float32 rounding of
the surrogate. Thresholds, decay and ``v_reset`` are constants of the backward pass here (the
reference lets a learnable threshold or decay receive gradients: use ``backend="torch"`` for those).
Homeostasis is not part of the kernel.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import torch

from sb_neurons import multistep_neuron_forward
from sb_neurons.validation import check_float_tensor, check_positive, check_real
from sb_neurons.surrogate import ATan, Sigmoid, SurrogateSpike, get_surrogate

from .device import DeviceFunction
from .dispatch import Backend, lazy_jit, resolve_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

MAX_STEPS = 64  # T is unrolled at compile time; beyond this, use the torch backend or feed in pieces
# One neuron per thread (4 warps): the step axis of the register tiles stays in-thread. An H100 sweep of
# neurons and warps per program (T = 16, 4M neurons, kernels alone: 64 to 512 neurons, 1 to 8 warps) was
# flat within its run-to-run noise (forward 0.82-0.89 of the floor, backward 0.87-0.94).
BLOCK_NEURONS = 128
FORWARD_BLOCK, FORWARD_WARPS = BLOCK_NEURONS, 4
CHUNK_STEPS = 16  # steps loaded (and stored) per register tile
SPIKE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SURROGATE_IDS = {"atan": 0, "sigmoid": 1}


class NeuronOutput(NamedTuple):
    """``spikes [T, ...]`` (values in {0, 1}, or {-1, 0, 1} when signed) and ``v_last [...]``, the
    potential carried out of the last step (``u_{T-1}``)."""

    spikes: torch.Tensor
    v_last: torch.Tensor


if tl is not None:

    @DeviceFunction
    def _initial_state(vinit_ptr, vth_ptr, offs, mask, v_init_value, v_th_value, BLOCK: tl.constexpr, ROUNDING: tl.constexpr,
                       VINIT_TENSOR: tl.constexpr, VTH_TENSOR: tl.constexpr):
        """Both kernels' start for the neurons ``offs``: ``(u, th, theta)`` in float32, the potential carried
        in (a tensor's values or the number ``v_init_value``), the threshold (likewise) and the firing level
        ``theta`` (``th / 2`` when rounding)."""
        if VINIT_TENSOR:
            u = tl.load(vinit_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            u = tl.zeros([BLOCK], dtype=tl.float32) + v_init_value
        if VTH_TENSOR:
            th = tl.load(vth_ptr + offs, mask=mask, other=1.0).to(tl.float32)
        else:
            th = tl.zeros([BLOCK], dtype=tl.float32) + v_th_value
        if ROUNDING:
            theta = 0.5 * th
        else:
            theta = th
        return u, th, theta

    # N is never specialized: Triton would take N % 16 == 0 as an alignment hint, vectorize the [CHUNK, BLOCK]
    # tile loads across neurons and spread the step axis over threads (H100: 2-5x slower, every step
    # then a cross-thread select); unspecialized, each thread owns one neuron and all its steps.
    @lazy_jit(do_not_specialize=("N",))
    def _neuron_forward_kernel(
        x_ptr, spikes_ptr, vlast_ptr, vinit_ptr, vth_ptr, flag_ptr,
        N, v_init_value, v_th_value, decay, v_reset,
        T: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr, SIGNED: tl.constexpr, HARD: tl.constexpr,
        ROUNDING: tl.constexpr, VINIT_TENSOR: tl.constexpr, VTH_TENSOR: tl.constexpr, CHECK: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        u, th, theta = _initial_state(vinit_ptr, vth_ptr, offs, mask, v_init_value, v_th_value, BLOCK, ROUNDING, VINIT_TENSOR, VTH_TENSOR)
        # Steps go in chunks of CHUNK: one [CHUNK, BLOCK] load before the chunk's arithmetic and one
        # store after it. A load issued after a store cannot be moved above it (the pointers may
        # alias), so loading step by step would leave one load per thread in flight; the next chunk's
        # load is issued before this chunk's store for the same reason.
        rows = tl.arange(0, CHUNK)[:, None]
        non_finite = tl.zeros([BLOCK], dtype=tl.int32)
        xs_next = tl.load(x_ptr + rows.to(tl.int64) * N + offs[None, :], mask=(rows < T) & mask[None, :], other=0.0)
        for c in tl.static_range(0, T, CHUNK):
            tile = (c + rows).to(tl.int64) * N + offs[None, :]
            tile_mask = (c + rows < T) & mask[None, :]
            xs = xs_next.to(tl.float32)
            if c + CHUNK < T:
                nxt = (c + CHUNK + rows).to(tl.int64) * N + offs[None, :]
                xs_next = tl.load(x_ptr + nxt, mask=(c + CHUNK + rows < T) & mask[None, :], other=0.0)
            if CHECK:
                # x * 0 is NaN exactly for NaN and +-Inf: the input check costs no extra pass over x.
                non_finite += tl.sum(tl.where(xs * 0.0 == 0.0, 0, 1), axis=0)
            spikes = tl.zeros([CHUNK, BLOCK], dtype=tl.float32)
            for i in tl.static_range(CHUNK):
                if c + i < T:
                    # The step axis is in-thread: selecting row i is register renaming, not a reduction.
                    x = tl.sum(tl.where(rows == i, xs, 0.0), axis=0)
                    v = u + x
                    s = tl.where(v - theta >= 0.0, 1.0, 0.0)
                    if SIGNED:
                        if ROUNDING:
                            s = s - tl.where(v + theta >= 0.0, 0.0, 1.0)  # -1 where v < -theta
                        else:
                            s = s - tl.where(-v - theta >= 0.0, 1.0, 0.0)  # -1 where v <= -theta
                    if HARD:
                        fired = tl.abs(s)
                        u = decay * (1.0 - fired) * v + v_reset * fired
                    else:
                        u = decay * v - th * s
                    spikes = tl.where(rows == i, s[None, :], spikes)
            tl.store(spikes_ptr + tile, spikes.to(spikes_ptr.dtype.element_ty), mask=tile_mask)
        tl.store(vlast_ptr + offs, u.to(vlast_ptr.dtype.element_ty), mask=mask)
        if CHECK:
            # Written only by programs that saw a non-finite value (all write 1): an atomic from every
            # program would contend on one word.
            bad = tl.max(non_finite, axis=0) > 0
            tl.store(flag_ptr + tl.arange(0, 1), tl.full([1], 1, tl.int32), mask=tl.full([1], 1, tl.int1) & bad)

    # N is never specialized: Triton would take N % 16 == 0 as an alignment hint, vectorize the [CHUNK, BLOCK]
    # tile loads across neurons and spread the step axis over threads (H100: 2-5x slower, every step
    # then a cross-thread select); unspecialized, each thread owns one neuron and all its steps.
    @lazy_jit(do_not_specialize=("N",))
    def _neuron_backward_kernel(
        x_ptr, gspikes_ptr, gvlast_ptr, gx_ptr, gvinit_ptr, vinit_ptr, vth_ptr,
        N, v_init_value, v_th_value, decay, v_reset, alpha,
        T: tl.constexpr, T_PAD: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr, SIGNED: tl.constexpr,
        HARD: tl.constexpr,
        ROUNDING: tl.constexpr, VINIT_TENSOR: tl.constexpr, VTH_TENSOR: tl.constexpr, SURR: tl.constexpr,
        DETACH: tl.constexpr, HAS_GVLAST: tl.constexpr, WANT_GVINIT: tl.constexpr,
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        u, th, theta = _initial_state(vinit_ptr, vth_ptr, offs, mask, v_init_value, v_th_value, BLOCK, ROUNDING, VINIT_TENSOR, VTH_TENSOR)
        # The last chunk of dL/ds, the first the reverse recurrence needs, is loaded before the recompute
        # (nothing is stored before it): its load overlaps the loads of x and the arithmetic.
        rows = tl.arange(0, CHUNK)[:, None]
        c_last = ((T - 1) // CHUNK) * CHUNK
        last_tile = (c_last + rows).to(tl.int64) * N + offs[None, :]
        g_spikes_last = tl.load(gspikes_ptr + last_tile, mask=(c_last + rows < T) & mask[None, :], other=0.0)
        # Per-step derivatives kept in registers: row t of ds_dv / du_dv (the step axis is in-thread).
        steps = tl.arange(0, T_PAD)[:, None]
        ds_dv_all = tl.zeros([T_PAD, BLOCK], dtype=tl.float32)
        du_dv_all = tl.zeros([T_PAD, BLOCK], dtype=tl.float32)
        # Recompute: this loop stores nothing, so its loads are free to run ahead of the arithmetic.
        for t in tl.static_range(T):
            x = tl.load(x_ptr + t * N.to(tl.int64) + offs, mask=mask, other=0.0).to(tl.float32)
            v = u + x
            s = tl.where(v - theta >= 0.0, 1.0, 0.0)
            z = v - theta
            if SURR == 0:
                w = 1.5707963267948966 * alpha * z
                ds_dv = (0.5 * alpha) / (1.0 + w * w)
            else:
                sg = tl.sigmoid(alpha * z)
                ds_dv = alpha * sg * (1.0 - sg)
            if SIGNED:
                # Either side's surrogate is even, so d/dv of the -1 spike is sg'(v + theta) up to rounding.
                if ROUNDING:
                    s = s - tl.where(v + theta >= 0.0, 0.0, 1.0)
                    z2 = v + theta
                else:
                    s = s - tl.where(-v - theta >= 0.0, 1.0, 0.0)
                    z2 = -v - theta
                if SURR == 0:
                    w2 = 1.5707963267948966 * alpha * z2
                    ds_dv += (0.5 * alpha) / (1.0 + w2 * w2)
                else:
                    sg2 = tl.sigmoid(alpha * z2)
                    ds_dv += alpha * sg2 * (1.0 - sg2)
            if HARD:
                fired = tl.abs(s)
                if DETACH:
                    du_dv = decay * (1.0 - fired)
                else:
                    # d|s|/ds is sign(s) (zero where no spike), as autograd's abs.
                    sign = tl.where(s > 0.0, 1.0, tl.where(s < 0.0, -1.0, 0.0))
                    du_dv = decay * (1.0 - fired) + (v_reset - decay * v) * sign * ds_dv
                u = decay * (1.0 - fired) * v + v_reset * fired
            else:
                if DETACH:
                    du_dv = tl.zeros([BLOCK], dtype=tl.float32) + decay
                else:
                    du_dv = decay - th * ds_dv
                u = decay * v - th * s
            ds_dv_all = tl.where(steps == t, ds_dv[None, :], ds_dv_all)
            du_dv_all = tl.where(steps == t, du_dv[None, :], du_dv_all)

        if HAS_GVLAST:
            g_u = tl.load(gvlast_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            g_u = tl.zeros([BLOCK], dtype=tl.float32)
        # Reverse recurrence in chunks (as the forward kernel): one [CHUNK, BLOCK] load of dL/ds, one store of dL/dx.
        for j in tl.static_range(0, T, CHUNK):
            c = ((T - 1 - j) // CHUNK) * CHUNK  # chunks from the last one back to step 0
            tile = (c + rows).to(tl.int64) * N + offs[None, :]
            tile_mask = (c + rows < T) & mask[None, :]
            if j == 0:
                g_spikes = g_spikes_last.to(tl.float32)
            else:
                g_spikes = tl.load(gspikes_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
            g_x = tl.zeros([CHUNK, BLOCK], dtype=tl.float32)
            for i in tl.static_range(CHUNK):
                t = c + CHUNK - 1 - i
                if t < T:
                    ds_dv = tl.sum(tl.where(steps == t, ds_dv_all, 0.0), axis=0)
                    du_dv = tl.sum(tl.where(steps == t, du_dv_all, 0.0), axis=0)
                    g_s = tl.sum(tl.where(rows == t - c, g_spikes, 0.0), axis=0)
                    g_v = g_s * ds_dv + g_u * du_dv
                    g_x = tl.where(rows == t - c, g_v[None, :], g_x)
                    g_u = g_v
            tl.store(gx_ptr + tile, g_x.to(gx_ptr.dtype.element_ty), mask=tile_mask)
        if WANT_GVINIT:
            tl.store(gvinit_ptr + offs, g_u, mask=mask)


class _Config(NamedTuple):
    decay: float
    reset_hard: bool
    v_reset: float
    signed: bool
    rounding: bool
    surrogate_id: int
    alpha: float
    detach_reset: bool
    v_init_value: float
    v_th_value: float
    spike_dtype: torch.dtype
    check_finite: bool


def _flat_or_none(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | None:
    """A per-neuron float32 ``[N]`` copy of a tensor parameter (broadcast to one step), or None for a float."""
    if not isinstance(value, torch.Tensor):
        return None
    return value.detach().to(torch.float32).expand(like.shape[1:]).reshape(-1).contiguous()


def _chunk(steps: int) -> int:
    """Steps per register tile: all of them up to 16, then 16 (registers: a few tiles of CHUNK per thread)."""
    return min(triton.next_power_of_2(steps), CHUNK_STEPS)


def _launch_forward(x2d: torch.Tensor, v_init: torch.Tensor | None, v_th: torch.Tensor | None, cfg: _Config,
                    block: int = FORWARD_BLOCK, num_warps: int = FORWARD_WARPS):
    """Spikes ``[T, N]`` and ``v_last [N]``; with ``cfg.check_finite`` a non-finite ``x`` is a ``ValueError``
    (one device-to-host read). ``block`` / ``num_warps``: neurons and warps per program (sweeps)."""
    steps, neurons = x2d.shape
    spikes = torch.empty((steps, neurons), dtype=cfg.spike_dtype, device=x2d.device)
    v_last = torch.empty(neurons, dtype=x2d.dtype, device=x2d.device)
    flag = torch.zeros(1, dtype=torch.int32, device=x2d.device) if cfg.check_finite else v_last
    grid = (triton.cdiv(neurons, block),)
    meta = dict(
        T=steps, CHUNK=_chunk(steps), BLOCK=block, SIGNED=cfg.signed, HARD=cfg.reset_hard, ROUNDING=cfg.rounding,
        VINIT_TENSOR=v_init is not None, VTH_TENSOR=v_th is not None, CHECK=cfg.check_finite,
    )
    if x2d.is_cuda:
        # No fused multiply-add: the reference rounds decay * v and v_th * s separately.
        meta.update(num_warps=num_warps, enable_fp_fusion=False)
    _neuron_forward_kernel[grid](
        x2d, spikes, v_last, v_init if v_init is not None else x2d, v_th if v_th is not None else x2d, flag,
        neurons, cfg.v_init_value, cfg.v_th_value, cfg.decay, cfg.v_reset, **meta,
    )
    # One host read per checked forward, instead of a separate pass over x. It waits for the kernel, so
    # at a few million neurons it costs as much as the kernel itself: check_finite=False skips it.
    if cfg.check_finite and int(flag):
        raise ValueError("x_seq contains NaN or Inf; spike coding needs finite values (checked because check_finite=True)")
    return spikes, v_last


def _launch_backward(x2d, grad_spikes, grad_v_last, v_init, v_th, cfg: _Config, want_grad_v_init: bool,
                     block: int = BLOCK_NEURONS, num_warps: int = 4):
    steps, neurons = x2d.shape
    grad_x = torch.empty_like(x2d)
    grad_v_init = torch.empty(neurons, dtype=torch.float32, device=x2d.device) if want_grad_v_init else None
    grid = (triton.cdiv(neurons, block),)
    args = (
        x2d, grad_spikes, grad_v_last if grad_v_last is not None else x2d, grad_x,
        grad_v_init if grad_v_init is not None else x2d,
        v_init if v_init is not None else x2d, v_th if v_th is not None else x2d,
        neurons, cfg.v_init_value, cfg.v_th_value, cfg.decay, cfg.v_reset, cfg.alpha,
    )
    meta = dict(
        T=steps, T_PAD=triton.next_power_of_2(steps), CHUNK=_chunk(steps), BLOCK=block, SIGNED=cfg.signed, HARD=cfg.reset_hard,
        ROUNDING=cfg.rounding, VINIT_TENSOR=v_init is not None, VTH_TENSOR=v_th is not None,
        SURR=cfg.surrogate_id, DETACH=cfg.detach_reset, HAS_GVLAST=grad_v_last is not None,
        WANT_GVINIT=want_grad_v_init,
    )
    if x2d.is_cuda:
        meta.update(num_warps=num_warps, enable_fp_fusion=False)
    _neuron_backward_kernel[grid](*args, **meta)
    return grad_x, grad_v_init


class _MultiStepNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d, v_init, v_th, cfg: _Config):
        spikes, v_last = _launch_forward(x2d, v_init, v_th, cfg)
        # An output the loss does not use gets None, not a zero tensor to fill and read (v_last, usually).
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x2d, v_init if v_init is not None else x2d.new_empty(0), v_th if v_th is not None else x2d.new_empty(0))
        ctx.has_v_init = v_init is not None
        ctx.has_v_th = v_th is not None
        ctx.cfg = cfg
        return spikes, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_v_last):
        x2d, v_init, v_th = ctx.saved_tensors
        v_init = v_init if ctx.has_v_init else None
        v_th = v_th if ctx.has_v_th else None
        if grad_spikes is None and grad_v_last is None:
            return None, None, None, None
        grad_spikes = x2d.new_zeros(x2d.shape) if grad_spikes is None else grad_spikes.contiguous()
        grad_v_last = None if grad_v_last is None else grad_v_last.contiguous()
        want_v_init = ctx.has_v_init and ctx.needs_input_grad[1]
        grad_x, grad_v_init = _launch_backward(x2d, grad_spikes, grad_v_last, v_init, v_th, ctx.cfg, want_v_init)
        return grad_x, grad_v_init, None, None


@functools.lru_cache(maxsize=64)
def _named_surrogate(name: str, alpha: float | None) -> SurrogateSpike:
    """The module of a named surrogate, built once per (name, alpha): building an ``nn.Module`` per call
    cost a third of the host time of a launch (the call's time at a few million neurons)."""
    return get_surrogate(name, alpha)


def _surrogate_id_and_alpha(surrogate: object, alpha: float | None) -> tuple[int, float] | None:
    """``(kernel id, alpha)`` of a surrogate the kernel implements, or None (torch only)."""
    if isinstance(surrogate, str):
        try:
            module = _named_surrogate(surrogate, alpha)
        except TypeError:  # an unhashable alpha: let get_surrogate say what is wrong with it
            module = get_surrogate(surrogate, alpha)
    else:
        module = surrogate
    if isinstance(module, ATan):
        return SURROGATE_IDS["atan"], module.alpha
    if isinstance(module, Sigmoid):
        return SURROGATE_IDS["sigmoid"], module.alpha
    return None


def _as_number_or_tensor(value: object, name: str) -> float | torch.Tensor:
    if isinstance(value, torch.Tensor):
        check_float_tensor(value, name)
        return value
    return check_real(value, f"{name} (a number or a float tensor)")


def multistep_neuron(
    x_seq: torch.Tensor,
    v_th: torch.Tensor | float,
    v_init: torch.Tensor | float = 0.0,
    decay: float = 1.0,
    reset: Literal["soft", "hard"] = "soft",
    v_reset: float = 0.0,
    signed: bool = False,
    rounding: bool = False,
    surrogate: str | SurrogateSpike = "atan",
    surrogate_alpha: float | None = None,
    detach_reset: bool = False,
    *,
    spike_dtype: torch.dtype | None = None,
    check_finite: bool = True,
    backend: Backend = "auto",
) -> NeuronOutput:
    """Run the adaptive IF/LIF neuron over ``T`` steps; differentiable (surrogate gradient).

    Args:
        x_seq: input ``[T, ...]`` (float16/bfloat16/float32; float64 on the torch backend), finite.
        v_th: threshold ``> 0``, a float or a tensor broadcastable to ``x_seq[0]`` (e.g. one per row,
            from :func:`sb_neurons.adaptive_threshold`); a constant of the backward pass.
        v_init: potential carried in, a float or a tensor broadcastable to ``x_seq[0]`` (may require grad).
        decay: 1 for IF, in (0, 1] for LIF; a float.
        reset: ``"soft"`` (subtract ``v_th``) or ``"hard"`` (to ``v_reset``).
        v_reset: potential after a hard reset.
        signed: also fire -1 below ``-theta``.
        rounding: fire at ``v_th / 2`` (counts round instead of floor).
        surrogate: ``"atan"``, ``"sigmoid"`` or an :class:`sb_neurons.ATan` / :class:`sb_neurons.Sigmoid`
            instance (any other callable: torch backend only).
        surrogate_alpha: slope of a named surrogate.
        detach_reset: cut the gradient through the reset term.
        spike_dtype: dtype of the spikes (default ``x_seq.dtype``): float32, float16 or bfloat16 hold
            {-1, 0, 1} exactly; a narrower one halves the spike bytes and those of their gradient.
        check_finite: the Triton kernel flags NaN/Inf in ``x_seq`` in its single pass and raises
            ``ValueError``, at the price of one device-to-host read that waits for the kernel (at a
            few million neurons, about the kernel's own time). ``False`` skips the flag and the read:
            the call is then asynchronous, and non-finite inputs give unspecified spikes and states.
            It also skips the check that a CUDA tensor ``v_th`` is positive (another read). The torch
            backend always checks.
        backend: ``"torch"`` (:func:`sb_neurons.multistep_neuron_forward`), ``"triton"`` or ``"auto"``.

    Returns:
        ``NeuronOutput(spikes [T, ...] in spike_dtype, v_last [...] in x_seq.dtype)``.
    """
    # Finiteness: checked by the reference itself, and by the kernel in its single pass over x_seq.
    check_float_tensor(x_seq, "x_seq", finite=False)
    if x_seq.ndim < 1 or x_seq.shape[0] < 1:
        raise ValueError(f"x_seq must have shape [T, ...] with T >= 1, got {tuple(x_seq.shape)}")
    if reset not in ("soft", "hard"):
        raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}")
    v_th = _as_number_or_tensor(v_th, "v_th")
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be a bool, got {type(check_finite).__name__}")
    if isinstance(v_th, float):
        check_positive(v_th, "v_th")
    elif (check_finite or not v_th.is_cuda) and v_th.numel() and not bool((v_th > 0).all()):
        raise ValueError("v_th must be > 0 everywhere")
    v_init = _as_number_or_tensor(v_init, "v_init")
    check_real(decay, "decay", minimum=0, maximum=1, open_minimum=True)
    check_real(v_reset, "v_reset")
    spike_dtype = x_seq.dtype if spike_dtype is None else spike_dtype
    if spike_dtype not in SPIKE_DTYPES + (torch.float64,):
        raise TypeError(f"spike_dtype must be a float dtype among float32, float16, bfloat16, got {spike_dtype!r}")
    for name, value in (("v_th", v_th), ("v_init", v_init)):
        if isinstance(value, torch.Tensor):
            try:
                torch.broadcast_shapes(value.shape, x_seq.shape[1:])
            except RuntimeError as err:
                raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to a step {tuple(x_seq.shape[1:])}") from err
            if torch.broadcast_shapes(value.shape, x_seq.shape[1:]) != x_seq.shape[1:]:
                raise ValueError(f"{name} of shape {tuple(value.shape)} would enlarge a step {tuple(x_seq.shape[1:])}")

    tensors = [x_seq] + [t for t in (v_th, v_init) if isinstance(t, torch.Tensor)]
    chosen = resolve_backend(backend, *tensors, op="multistep_neuron")
    kernel_surrogate = _surrogate_id_and_alpha(surrogate, surrogate_alpha)
    unsupported = _kernel_limits(x_seq, v_th, kernel_surrogate, spike_dtype)
    if chosen == "triton" and unsupported and backend == "triton":
        raise ValueError(f"multistep_neuron: backend='triton' cannot run this call: {unsupported}; use backend='torch'")
    if chosen == "torch" or unsupported:
        return _reference(x_seq, v_th, v_init, decay, reset, v_reset, signed, rounding, surrogate, surrogate_alpha,
                          detach_reset, spike_dtype)

    surrogate_id, alpha = kernel_surrogate  # type: ignore[misc]
    cfg = _Config(
        decay=float(decay), reset_hard=reset == "hard", v_reset=float(v_reset), signed=bool(signed),
        rounding=bool(rounding), surrogate_id=surrogate_id, alpha=float(alpha), detach_reset=bool(detach_reset),
        v_init_value=v_init if isinstance(v_init, float) else 0.0,
        v_th_value=v_th if isinstance(v_th, float) else 1.0, spike_dtype=spike_dtype, check_finite=check_finite,
    )
    x2d = x_seq.reshape(x_seq.shape[0], -1)
    if not x2d.is_contiguous():
        x2d = x2d.contiguous()
    v_init_flat = None
    if isinstance(v_init, torch.Tensor):
        v_init_flat = v_init.to(torch.float32).expand(x_seq.shape[1:]).reshape(-1)
        v_init_flat = v_init_flat.contiguous()
    spikes, v_last = _MultiStepNeuron.apply(x2d, v_init_flat, _flat_or_none(v_th, x_seq), cfg)
    return NeuronOutput(spikes.reshape(x_seq.shape), v_last.reshape(x_seq.shape[1:]))


def _kernel_limits(x_seq, v_th, kernel_surrogate, spike_dtype) -> str:
    """Why the kernel cannot run this call ('' when it can)."""
    if x_seq.dtype not in SPIKE_DTYPES:
        return f"x_seq dtype {x_seq.dtype} (the kernel takes float16, bfloat16, float32)"
    if spike_dtype not in SPIKE_DTYPES:
        return f"spike_dtype {spike_dtype}"
    if x_seq.shape[0] > MAX_STEPS:
        return f"T = {x_seq.shape[0]} > {MAX_STEPS} steps unrolled in the kernel"
    if kernel_surrogate is None:
        return "a custom surrogate (the kernel implements ATan and Sigmoid)"
    if isinstance(v_th, torch.Tensor) and v_th.requires_grad:
        return "a threshold that requires grad (the kernel holds it constant)"
    return ""


def _reference(x_seq, v_th, v_init, decay, reset, v_reset, signed, rounding, surrogate, surrogate_alpha,
               detach_reset, spike_dtype) -> NeuronOutput:
    spike_fn = get_surrogate(surrogate, surrogate_alpha) if isinstance(surrogate, str) else surrogate
    spikes, u_seq = multistep_neuron_forward(
        x_seq, v_th, v_init, decay, reset, signed, v_reset,
        rounding=rounding, surrogate=spike_fn, detach_reset=detach_reset,
    )
    return NeuronOutput(spikes.to(spike_dtype), u_seq[-1])


__all__ = ["NeuronOutput", "multistep_neuron"]
