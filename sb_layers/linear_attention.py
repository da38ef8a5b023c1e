"""Gated linear attention (GLA), SpikingBrain-7B's linear-attention mixer (facts section 4).

Per head, with a per-channel log decay ``g_t <= 0`` (``gk``), keys ``k_t``, values ``v_t``, queries ``q_t``:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          S: [Dk, Dv]
    o_t = (scale * q_t) S_t

Three forms compute the same outputs and final state: :func:`gla_recurrent` (token by token),
:func:`gla_chunked` (parallel within chunks, recurrent across them; pure PyTorch, any length and
chunk size) and flash-linear-attention's ``chunk_gla`` kernel (GPU, optional). Feeding a sequence in
pieces with the state carried gives the same outputs as one call.

Spike-coded linear attention: with q and k spike-coded per head vector (``q = v_th_q * c_q``), the
spiking form :func:`gla_event_driven` expands the counts into spike trains and runs the recurrence one
spike event at a time; it equals :func:`gla_recurrent` on ``v_th * counts`` because the recurrence is
linear in q and in k and every codec decodes exactly (``sum_tau w_tau s_tau = c``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sb_kernels import gla_decode_step
from sb_neurons import Codec, get_codec, spike_count

from sb_neurons.validation import check_float_tensor, check_int, check_positive, check_same_device, check_tensor

from ._checks import check_attention_mask, check_head_layout, check_hidden_states
from ._merged import merged_linear_outputs
from .rms_norm import RMSNorm
from .spiking_linear import SpikeCoding, make_linear

GLAMode = Literal["chunk", "recurrent", "fla", "auto"]


def _check_gla_inputs(q, k, v, gk, initial_state, scale=1.0, integer_qk=False):
    """Shapes ``[B, H, L, D]`` that agree, floating dtypes (q/k may hold integer counts when
    ``integer_qk``), a state ``[B, H, Dk, Dv]`` or None, and a finite ``scale > 0``."""
    for name, t in (("q", q), ("k", k), ("v", v), ("gk", gk)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must be a 4-d tensor [B, H, L, D], got {getattr(t, 'shape', type(t))}")
        if not t.is_floating_point() and not (integer_qk and name in ("q", "k")):
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    check_positive(scale, "scale")
    check_same_device((("q", q), ("k", k), ("v", v), ("gk", gk), ("initial_state", initial_state)))
    if initial_state is not None:
        check_tensor(initial_state, "initial_state")
        if not initial_state.is_floating_point():
            raise TypeError(f"initial_state must be a floating tensor, got {initial_state.dtype}")
    if q.shape != k.shape or gk.shape != k.shape:
        raise ValueError(f"q, k and gk must share one shape [B, H, L, Dk]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(gk.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, L, Dv] with B, H, L of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    batch, heads, _, dk = q.shape
    expected = (batch, heads, dk, v.shape[-1])
    if initial_state is not None and tuple(initial_state.shape) != expected:
        raise ValueError(f"initial_state must have shape (B, H, Dk, Dv) = {expected}, got {tuple(initial_state.shape)}")


@functools.cache
def _fla_available() -> bool:
    """Whether flash-linear-attention's GLA kernels can be imported (mode="auto" uses them on CUDA)."""
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla  # noqa: F401
    except ImportError:
        return False
    return True


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _start_state(initial_state: torch.Tensor | None, shape: tuple[int, ...], compute: torch.dtype, device) -> torch.Tensor:
    """The recurrent state ``[B, H, Dk, Dv]`` a GLA form starts from, in its ``compute`` dtype (zeros if none)."""
    if initial_state is None:
        return torch.zeros(shape, dtype=compute, device=device)
    return initial_state.to(compute)


def gla_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token GLA. ``q, k, gk``: ``[B, H, L, Dk]``; ``v``: ``[B, H, L, Dv]``; state ``[B, H, Dk, Dv]``.

    Returns ``(o [B, H, L, Dv] in v.dtype, final_state [B, H, Dk, Dv] in float32/float64)``.
    """
    _check_gla_inputs(q, k, v, gk, initial_state, scale)
    compute = _compute_dtype(v.dtype)
    batch, heads, length, dk = q.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    q, k, v, gk = (t.to(compute) for t in (q, k, v, gk))
    outputs = []
    for t in range(length):
        state = state * gk[:, :, t].exp().unsqueeze(-1) + k[:, :, t].unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t] * scale, state))
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return o.to(v.dtype), state


def gla_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel GLA, equal to :func:`gla_recurrent` (same arguments, plus ``chunk_size >= 1``).

    Within a chunk, with inclusive cumulative log decays ``b_t = sum_{r <= t} g_r``:
    ``o_t = (scale q_t * exp(b_t)) S_0 + sum_{s <= t} (scale q_t . (k_s * exp(b_t - b_s))) v_s``. Decay
    differences ``b_t - b_s <= 0`` are exponentiated pairwise, so no term overflows however strong the
    decay (at the cost of a ``[chunk, chunk, Dk]`` intermediate).
    """
    _check_gla_inputs(q, k, v, gk, initial_state, scale)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    compute = _compute_dtype(v.dtype)
    batch, heads, length, dk = q.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    q, k, v, gk = (t.to(compute) for t in (q, k, v, gk))
    outputs = []
    for start in range(0, length, chunk_size):
        qc, kc, vc = q[:, :, start : start + chunk_size] * scale, k[:, :, start : start + chunk_size], v[:, :, start : start + chunk_size]
        b = gk[:, :, start : start + chunk_size].cumsum(dim=2)  # [B, H, C, Dk]
        size = b.shape[2]
        # s <= t, built by comparison: Tensor.tril costs ~15 ms a call on some CPU builds of torch
        steps = torch.arange(size, device=q.device)
        causal = steps[:, None] >= steps[None, :]
        # decay[t, s] = exp(b_t - b_s) for s <= t (masked to 0 above the diagonal before exp)
        diff = (b.unsqueeze(3) - b.unsqueeze(2)).masked_fill(~causal[..., None], float("-inf"))
        scores = torch.einsum("bhtk,bhsk,bhtsk->bhts", qc, kc, diff.exp())
        inter = torch.einsum("bhtk,bhkv->bhtv", qc * b.exp(), state)
        outputs.append(inter + scores @ vc)
        total = b[:, :, -1]  # [B, H, Dk]
        carry = (total.unsqueeze(2) - b).exp() * kc  # k_s * exp(b_C - b_s)
        state = state * total.exp().unsqueeze(-1) + carry.transpose(-1, -2) @ vc
    o = torch.cat(outputs, dim=2) if outputs else v.new_zeros(v.shape, dtype=compute)
    return o.to(v.dtype), state


def gla_event_driven(
    q_counts: torch.Tensor,
    q_v_th: torch.Tensor,
    k_counts: torch.Tensor,
    k_v_th: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    codec: str | Codec = "bitwise_bidirectional",
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token GLA whose queries and keys arrive as spike trains (spike-coded linear attention).

    With ``s^q_tau``, ``s^k_tau`` the ``codec`` trains of the counts and ``w_tau`` its step weights:

        S_t = diag(exp(g_t)) S_{t-1} + k_v_th_t * sum_tau w_tau (s^k_{tau,t})^T v_t
        o_t = scale * q_v_th_t * sum_tau w_tau (s^q_{tau,t} S_t)

    Each spike writes (or reads) one row of the state: an add, no multiply by an activation.
    Identity: ``gla_event_driven(...) == gla_recurrent(q_v_th * q_counts, k_v_th * k_counts, v, gk, scale,
    initial_state)`` to float rounding (exact in integer arithmetic before the ``v_th`` scales).

    Args:
        q_counts: integer counts ``[B, H, L, Dk]`` (integer dtype or whole floats; non-negative for an
            unsigned codec, as ReLU/sigmoid feature maps give).
        q_v_th: thresholds ``[B, H, L, 1]`` (one per head vector).
        k_counts: integer counts ``[B, H, L, Dk]``.
        k_v_th: thresholds ``[B, H, L, 1]``.
        v: values ``[B, H, L, Dv]``.
        gk: log decays ``[B, H, L, Dk]``.
        scale: multiplies the queries (``head_dim ** -0.5``).
        codec: codec of the trains, one of :data:`sb_neurons.CODEC_NAMES`.
        initial_state: ``[B, H, Dk, Dv]`` or None.

    Returns:
        ``(o [B, H, L, Dv] in v.dtype, final_state [B, H, Dk, Dv] in float32/float64)``, as :func:`gla_recurrent`.
    """
    for name, counts in (("q_counts", q_counts), ("k_counts", k_counts)):
        if not isinstance(counts, torch.Tensor) or counts.ndim != 4:
            raise ValueError(f"{name} must be a 4-d tensor [B, H, L, Dk], got {getattr(counts, 'shape', type(counts))}")
    _check_gla_inputs(q_counts, k_counts, v, gk, initial_state, scale, integer_qk=True)
    for name, v_th in (("q_v_th", q_v_th), ("k_v_th", k_v_th)):
        check_float_tensor(v_th, name, finite=False)  # NaN propagates, as in the float forms
        check_same_device(((name, v_th), ("v", v)))
        if tuple(v_th.shape) != tuple(q_counts.shape[:3]) + (1,):
            raise ValueError(f"{name} must have shape [B, H, L, 1] = {tuple(q_counts.shape[:3]) + (1,)}, got {tuple(v_th.shape)}")
    codec = get_codec(codec)
    compute = _compute_dtype(v.dtype)
    q_train, k_train = codec.encode(q_counts), codec.encode(k_counts)  # [T, B, H, L, Dk] int8, validated
    q_weights = codec.step_weights(q_train.shape[0], dtype=compute, device=v.device)
    k_weights = codec.step_weights(k_train.shape[0], dtype=compute, device=v.device)
    batch, heads, length, dk = q_counts.shape
    state = _start_state(initial_state, (batch, heads, dk, v.shape[-1]), compute, v.device)
    v, gk, q_v_th, k_v_th = (t.to(compute) for t in (v, gk, q_v_th, k_v_th))
    outputs = []
    for t in range(length):
        written = torch.zeros_like(state)
        for tau in range(k_train.shape[0]):
            spikes = k_train[tau, :, :, t].to(compute)  # [B, H, Dk]: rows of the state this step writes
            written = written + k_weights[tau] * spikes.unsqueeze(-1) * v[:, :, t].unsqueeze(-2)
        state = state * gk[:, :, t].exp().unsqueeze(-1) + k_v_th[:, :, t].unsqueeze(-1) * written
        read = torch.zeros_like(v[:, :, t])
        for tau in range(q_train.shape[0]):
            spikes = q_train[tau, :, :, t].to(compute)  # rows of the state this step reads
            read = read + q_weights[tau] * torch.einsum("bhk,bhkv->bhv", spikes, state)
        outputs.append(scale * q_v_th[:, :, t] * read)
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(v.shape)
    return o.to(v.dtype), state


def gla_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """flash-linear-attention's GLA kernels on CUDA, in this module's ``[B, H, L, D]`` layout.

    Same arguments and results as :func:`gla_recurrent`. Runs ``fused_recurrent_gla`` for a single token
    (decoding) and ``chunk_gla`` otherwise. fla works in ``[B, L, H, D]`` and applies ``scale`` to q
    itself; its state is ``[B, H, Dk, Dv]`` float32 like ours. fla is imported here, never at module
    import. Raises ``RuntimeError`` when fla is missing or the tensors are not on CUDA.
    """
    _check_gla_inputs(q, k, v, gk, initial_state, scale)
    if not q.is_cuda:
        raise RuntimeError("the fla GLA kernels need CUDA tensors; use mode='chunk' on CPU")
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla
    except ImportError as err:
        raise RuntimeError("mode='fla' needs flash-linear-attention (package 'fla'), which is not installed") from err
    kernel = fused_recurrent_gla if q.shape[2] == 1 else chunk_gla
    gate_name = "gk" if kernel is fused_recurrent_gla else "g"
    layout = {}
    if "head_first" in inspect.signature(kernel).parameters:
        layout["head_first"] = False  # older fla releases default to [B, H, L, D]; say which we pass
    to_fla = lambda t: t.transpose(1, 2).contiguous()  # noqa: E731
    o, state = kernel(
        to_fla(q), to_fla(k), to_fla(v),
        **{gate_name: to_fla(gk)},
        scale=scale,
        initial_state=None if initial_state is None else initial_state.float().contiguous(),
        output_final_state=True,
        **layout,
    )
    return o.transpose(1, 2).to(v.dtype), state


class GatedLinearAttention(nn.Module):
    """SpikingBrain-7B's GLA layer, optionally spike-coded.

    Projections (release names): ``q_proj`` (hidden -> H * Dk, bias), ``k_proj`` and ``v_proj``
    (hidden -> Hkv * D, bias), the gate ``gk_proj`` (``"low_rank"``: ``Linear(hidden, 16)`` then
    ``Linear(16, Hkv * Dk, bias)``; ``"merged"``: one ``Linear(hidden, Hkv * Dk, bias)`` as in the W8ASpike
    release), ``g_norm`` (RMSNorm over Dv per head) and ``o_proj`` (H * Dv -> hidden, no bias). The log
    decay is ``logsigmoid(gk_proj(x)) / gate_logit_normalizer``; with ``gate="tied_key"`` (the 76B
    variant) there is no gate projection and ``g = 1 - k``, i.e. log decay ``log(1 - k)``, with
    ``feature_map="sigmoid"``. q and k pass the feature map (ReLU by default), k, v and the decay are
    shared by groups of ``num_heads / num_kv_heads`` heads (GQA), q is scaled by ``head_dim ** -0.5``.

    Args:
        hidden_size: model width.
        num_heads: query heads H; ``num_kv_heads`` (default H) must divide it.
        head_dim: per-head width (default ``hidden_size / num_heads``); Dk = Dv = head_dim.
        gate: ``"low_rank"`` (7B release), ``"merged"`` (W8ASpike release) or ``"tied_key"`` (76B).
        gate_low_rank_dim: width of the low-rank gate (16 as released).
        gate_logit_normalizer: divisor of the log decay (16 as released).
        feature_map: ``"relu"`` (7B) or ``"sigmoid"`` (76B) on q and k.
        norm_eps: epsilon of ``g_norm``.
        coding: spike-code the q/k/v/o (and gate) projections' inputs (:class:`SpikingLinear`), or None.
        spike_qk: also spike-code the non-negative q/k feature maps per head vector,
            ``v_th * round(x / v_th)`` (with ``coding``'s k and clamp, or the defaults). With
            ``coding.mode="spike"`` the q/k spike trains (``coding.codec``) drive the recurrence event by
            event (:func:`gla_event_driven`); the output and state take its values and the gradient of
            the count form (straight-through), which is computed alongside.
        mode: ``"chunk"``, ``"recurrent"``, ``"fla"`` (GPU kernel) or ``"auto"`` (fla on CUDA when
            installed, else chunk; on CUDA a one-token call takes :func:`sb_kernels.gla_decode_step`, one
            kernel per decode step). All compute the same function.
        chunk_size: chunk length of the ``"chunk"`` form (any sequence length works).

    Identities: the three modes agree (float rounding); a layer with ``coding.mode="spike"`` equals the
    same layer with ``coding.mode="count"``; as ``coding.k`` grows a spike-coded layer approaches the
    dense one (``coding=None``) with the same weights.

    ``forward(hidden_states [B, L, hidden], attention_mask [B, L] | None, state [B, H, Dk, Dv] | None)``
    returns ``(output [B, L, hidden], new_state)``. ``attention_mask`` (1 keep, 0 pad) zeroes the padded
    values before the recurrence, as the release does, and also their log decays: a padded step leaves
    the state unchanged, so the real tokens' outputs and the final state equal those of the unpadded
    sequence (left padding, or padding anywhere). Padded positions' outputs are meaningless.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        gate: Literal["low_rank", "merged", "tied_key"] = "low_rank",
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        feature_map: Literal["relu", "sigmoid"] = "relu",
        norm_eps: float = 1e-6,
        coding: SpikeCoding | None = None,
        spike_qk: bool = False,
        mode: GLAMode = "chunk",
        chunk_size: int = 64,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        num_kv_heads, head_dim = check_head_layout(hidden_size, num_heads, num_kv_heads, head_dim)
        check_int(gate_low_rank_dim, "gate_low_rank_dim", minimum=1)
        check_positive(gate_logit_normalizer, "gate_logit_normalizer")
        check_int(chunk_size, "chunk_size", minimum=1)
        if gate not in ("low_rank", "merged", "tied_key"):
            raise ValueError(f"gate must be 'low_rank', 'merged' or 'tied_key', got {gate!r}")
        if feature_map not in ("relu", "sigmoid"):
            raise ValueError(f"feature_map must be 'relu' or 'sigmoid', got {feature_map!r}")
        if gate == "tied_key" and feature_map != "sigmoid":
            raise ValueError("gate='tied_key' (g = 1 - k) needs feature_map='sigmoid' so that 0 < g < 1")
        if mode not in ("chunk", "recurrent", "fla", "auto"):
            raise ValueError(f"mode must be 'chunk', 'recurrent', 'fla' or 'auto', got {mode!r}")
        if coding is not None and not isinstance(coding, SpikeCoding):
            raise TypeError(f"coding must be a SpikeCoding or None, got {type(coding).__name__}")
        self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim = hidden_size, num_heads, num_kv_heads, head_dim
        self.gate, self.feature_map = gate, feature_map
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.spike_qk = bool(spike_qk)
        self.coding = coding
        self.mode, self.chunk_size = mode, chunk_size
        self.scale = head_dim**-0.5
        factory = dict(device=device, dtype=dtype)
        kv_dim = num_kv_heads * head_dim
        self.q_proj = make_linear(hidden_size, num_heads * head_dim, True, coding, **factory)
        self.k_proj = make_linear(hidden_size, kv_dim, True, coding, **factory)
        self.v_proj = make_linear(hidden_size, kv_dim, True, coding, **factory)
        if gate == "low_rank":
            self.gk_proj = nn.Sequential(
                make_linear(hidden_size, gate_low_rank_dim, False, coding, **factory),
                make_linear(gate_low_rank_dim, kv_dim, True, coding, **factory),
            )
        elif gate == "merged":
            self.gk_proj = make_linear(hidden_size, kv_dim, True, coding, **factory)
        self.g_norm = RMSNorm(head_dim, eps=norm_eps, **factory)
        self.o_proj = make_linear(num_heads * head_dim, hidden_size, False, coding, **factory)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        # [B, heads, L, D] as a view of the projection's time-major [B, L, heads, D] storage: elementwise
        # ops keep that layout, and gla_fla's conversion to fla's time-major layout is then free.
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Hkv, L, D]`` -> ``[B, H, L, D]``, head ``h`` taking kv head ``h // (H / Hkv)`` (as
        ``repeat_interleave``), built in one copy into time-major ``[B, L, H, D]`` storage and returned as
        its head-major view: fla reads that layout as is, so no transpose copy follows."""
        groups = self.num_heads // self.num_kv_heads
        if groups == 1:
            return x
        batch, heads, length, dim = x.shape
        time_major = x.transpose(1, 2).unsqueeze(3).expand(batch, length, heads, groups, dim)
        return time_major.reshape(batch, length, heads * groups, dim).transpose(1, 2)

    def _resolve_mode(self, hidden_states: torch.Tensor) -> str:
        if self.mode != "auto":
            return self.mode
        return "fla" if hidden_states.is_cuda and _fla_available() else "chunk"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output [B, L, hidden], new_state [B, H, Dk, Dv])`` for ``hidden_states [B, L, hidden]``.

        ``attention_mask`` ``[B, L]`` covers this call's tokens only (a wrapper holding HuggingFace's
        ``[B, past + L]`` mask passes its last L columns); ``state`` is the previous call's ``new_state``.
        """
        check_hidden_states(hidden_states, self.hidden_size)
        batch, length, _ = hidden_states.shape
        check_attention_mask(attention_mask, batch, length)
        expected_state = (batch, self.num_heads, self.head_dim, self.head_dim)
        if state is not None:
            check_tensor(state, "state")
            if tuple(state.shape) != expected_state:
                raise ValueError(f"state must have shape (B, H, Dk, Dv) = {expected_state}, got {tuple(state.shape)}")

        q_flat = self.q_proj(hidden_states)
        kv = merged_linear_outputs(hidden_states, (self.k_proj, self.v_proj), self, "kv")
        k_flat, v_flat = kv if kv is not None else (self.k_proj(hidden_states), self.v_proj(hidden_states))
        if length == 1 and self.mode == "auto" and hidden_states.is_cuda and not self._event_driven():
            return self._decode_step(hidden_states, q_flat, k_flat, v_flat, attention_mask, state)
        q = self._heads(q_flat, self.num_heads)
        k_logits = self._heads(k_flat, self.num_kv_heads)
        v = self._heads(v_flat, self.num_kv_heads)
        if self.feature_map == "relu":
            q, k = F.relu(q), F.relu(k_logits)
        else:
            q, k = torch.sigmoid(q), torch.sigmoid(k_logits)
        compute = torch.float64 if hidden_states.dtype == torch.float64 else torch.float32
        # The log decay is computed on the [B, L, Hkv * D] projection before the head view: logsigmoid
        # returns a contiguous tensor, and on a transposed view that would be head-major.
        if self.gate == "tied_key":
            gk = F.logsigmoid(-k_flat.to(compute))  # log(1 - sigmoid(z)) without cancellation for large z
        else:
            gk = F.logsigmoid(self.gk_proj(hidden_states).to(compute)) / self.gate_logit_normalizer
        gk = self._heads(gk, self.num_kv_heads)
        if self.spike_qk:
            coding = self.coding or SpikeCoding()
            q_counts, q_v_th = spike_count(q, coding.k, -1, coding.clamp)
            k_counts, k_v_th = spike_count(k, coding.k, -1, coding.clamp)
            q, k = (q_counts * q_v_th).to(q.dtype), (k_counts * k_v_th).to(k.dtype)
        if attention_mask is not None:
            # The release zeroes padded values; zeroing their log decay too makes a padded step leave the
            # state exactly as it was, so padding is a no-op even with a non-zero incoming state.
            keep = attention_mask[:, None, :, None]
            v, gk = v * keep.to(v.dtype), gk * keep.to(gk.dtype)
        k, v, gk = self._repeat_kv(k), self._repeat_kv(v), self._repeat_kv(gk)

        mode = self._resolve_mode(hidden_states)
        if mode == "recurrent":
            o, new_state = gla_recurrent(q, k, v, gk, self.scale, state)
        elif mode == "fla":
            o, new_state = gla_fla(q, k, v, gk, self.scale, state)
        else:
            o, new_state = gla_chunked(q, k, v, gk, self.scale, state, self.chunk_size)
        if self._event_driven():
            o_events, state_events = gla_event_driven(
                q_counts.detach(), q_v_th, self._repeat_kv(k_counts.detach()), self._repeat_kv(k_v_th),
                v.detach(), gk.detach(), self.scale, self.coding.codec, None if state is None else state.detach(),
            )
            # Values of the event-driven form, gradients of the (equal) count form.
            o = o + (o_events - o).detach()
            new_state = new_state + (state_events.to(new_state.dtype) - new_state).detach()
        o = self.g_norm(o.transpose(1, 2).to(hidden_states.dtype))  # [B, L, H, Dv]
        return self.o_proj(o.reshape(batch, length, self.num_heads * self.head_dim)), new_state

    def _event_driven(self) -> bool:
        return self.spike_qk and self.coding is not None and self.coding.mode == "spike"

    def _decode_step(
        self, hidden_states: torch.Tensor, q_flat: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor,
        attention_mask: torch.Tensor | None, state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row through :func:`sb_kernels.gla_decode_step` (feature maps, decay, grouped heads
        and the state update in one kernel on CUDA; its PyTorch reference where the kernel cannot run,
        e.g. under autograd or :func:`sb_kernels.use_reference`). Same function as the other modes."""
        batch = hidden_states.shape[0]
        heads = lambda t, n: t.view(batch, n, self.head_dim)  # noqa: E731  [B, 1, n * D] -> [B, n, D]
        q, k, feature_map = heads(q_flat, self.num_heads), heads(k_flat, self.num_kv_heads), self.feature_map
        if self.spike_qk:
            coding = self.coding or SpikeCoding()
            mapped = (F.relu, torch.sigmoid)[self.feature_map == "sigmoid"]
            q, k = mapped(q), mapped(k)
            q_counts, q_v_th = spike_count(q, coding.k, -1, coding.clamp)
            k_counts, k_v_th = spike_count(k, coding.k, -1, coding.clamp)
            q, k, feature_map = (q_counts * q_v_th).to(q.dtype), (k_counts * k_v_th).to(k.dtype), "identity"
        if self.gate == "tied_key":
            gate_logits, negate, normalizer = k_flat, True, 1.0
        else:
            gate_logits, negate, normalizer = self.gk_proj(hidden_states), False, self.gate_logit_normalizer
        keep = None if attention_mask is None else attention_mask[:, 0].to(torch.bool)
        o, new_state = gla_decode_step(
            q, k, heads(v_flat, self.num_kv_heads), heads(gate_logits, self.num_kv_heads), state, scale=self.scale,
            feature_map=feature_map, negate_gate=negate, gate_normalizer=normalizer, keep=keep,
        )
        o = self.g_norm(o.view(batch, 1, self.num_heads, self.head_dim).to(hidden_states.dtype))
        return self.o_proj(o.reshape(batch, 1, self.num_heads * self.head_dim)), new_state

    def extra_repr(self) -> str:
        return f"gate={self.gate}, feature_map={self.feature_map}, mode={self.mode}, spike_qk={self.spike_qk}"
