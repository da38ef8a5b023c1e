"""Gated linear attention (GLA), SpikingBrain-7B's linear-attention mixer (facts section 4).

Per head, with a per-channel log decay ``g_t <= 0`` (``gk``), keys ``k_t``, values ``v_t``, queries ``q_t``:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          S: [Dk, Dv]
    o_t = (scale * q_t) S_t

The op lives in :mod:`sb_kernels.gla`: the references :func:`sb_kernels.gla_recurrent`,
:func:`sb_kernels.gla_chunked` and the spiking form :func:`sb_kernels.gla_event_driven`, fla's GPU
kernels (:func:`sb_kernels.gla_fla`) and the one-token decode kernel (:func:`sb_kernels.gla_decode_step`).
This module is the layer, :class:`GatedLinearAttention`, built on them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sb_kernels.gla import fla_available, gla_chunked, gla_decode_step, gla_event_driven, gla_fla, gla_recurrent
from sb_neurons import spike_count
from sb_neurons.validation import check_int, check_positive

from ._checks import check_attention_mask, check_head_layout, check_hidden_states
from ._merged import merged_linear_outputs
from .gla_state import GLAState
from .mixer_cache import MixerCache, check_layer_idx, mix_on_cache
from .rms_norm import RMSNorm
from .spiking_linear import SpikeCoding, make_linear

GLAMode = Literal["chunk", "recurrent", "fla", "auto"]


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
            event (:func:`sb_kernels.gla_event_driven`); the output and state take its values and the gradient of
            the count form (straight-through), which is computed alongside.
        mode: ``"chunk"``, ``"recurrent"``, ``"fla"`` (GPU kernel) or ``"auto"`` (fla on CUDA when
            installed, else chunk; on CUDA a one-token call takes :func:`sb_kernels.gla_decode_step`, one
            kernel per decode step). All compute the same function.
        chunk_size: chunk length of the ``"chunk"`` form (any sequence length works).
        layer_idx: this layer's entry in a :class:`sb_layers.MixerCache` (its index in the stack).

    Identities: the three modes agree (float rounding); a layer with ``coding.mode="spike"`` equals the
    same layer with ``coding.mode="count"``; as ``coding.k`` grows a spike-coded layer approaches the
    dense one (``coding=None``) with the same weights.

    ``forward(hidden_states [B, L, hidden], attention_mask [B, L] | None, cache: MixerCache | None)``
    returns ``output [B, L, hidden]`` (the mixer protocol, :mod:`sb_layers.mixer_cache`): the recurrent
    state is entry ``layer_idx`` of ``cache``, a :class:`sb_layers.GLAState` (``recurrent [B, H, Dk, Dv]``,
    float32 or float64), which each call replaces by a new one. ``attention_mask`` (1 keep, 0 pad) zeroes the padded
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
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = check_layer_idx(layer_idx)
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

    def kernel_for(self, hidden_states: torch.Tensor, *, decode: bool = True) -> str:
        """The one place the layer picks how a call runs: ``"decode"`` (:func:`sb_kernels.gla_decode_step`),
        ``"fla"``, ``"chunk"`` or ``"recurrent"``. An explicit ``mode`` is obeyed; ``"auto"`` takes, on
        CUDA, the decode kernel for one token (when ``decode``, and unless the spiking form runs event by
        event) and fla when it imports, and the chunked form everywhere else."""
        if self.mode != "auto":
            return self.mode
        if not hidden_states.is_cuda:
            return "chunk"
        if decode and hidden_states.shape[1] == 1 and not self._event_driven():
            return "decode"
        return "fla" if fla_available() else "chunk"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: MixerCache | None = None,
    ) -> torch.Tensor:
        """``output [B, L, hidden]`` for ``hidden_states [B, L, hidden]`` (the mixer protocol,
        :mod:`sb_layers.mixer_cache`).

        ``attention_mask`` ``[B, L]`` covers this call's tokens only (a wrapper holding HuggingFace's
        ``[B, past + L]`` mask passes its last L columns). ``cache``: a :class:`sb_layers.MixerCache` whose
        entry ``layer_idx`` is this layer's :class:`sb_layers.GLAState` (None before the first call: a zero
        state), replaced by a new GLAState (the old one is left as it was); ``None``: a zero state, nothing kept.
        """
        return mix_on_cache(self, hidden_states, attention_mask, cache)

    def _mix(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, state: GLAState | None,
    ) -> tuple[torch.Tensor, GLAState]:
        """The layer as a function of its state: ``(output [B, L, hidden], a new GLAState)``; ``state`` is
        only read, so that a saved entry can be replayed (gradient checkpointing)."""
        self._check_call(hidden_states, attention_mask, state)
        initial = None if state is None else state.recurrent
        kernel = self.kernel_for(hidden_states)
        q_flat, k_flat, v_flat = self._projections(hidden_states)
        if kernel == "decode":
            out, new_state = self._decode_step(hidden_states, q_flat, k_flat, v_flat, attention_mask, initial)
            return out, GLAState(new_state)
        inputs = self._recurrence_inputs(hidden_states, q_flat, k_flat, v_flat, attention_mask)
        o, new_state = self._recurrence(kernel, inputs, initial)
        return self._output(o, hidden_states), GLAState(new_state)

    def _check_call(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, state: GLAState | None) -> None:
        check_hidden_states(hidden_states, self.hidden_size)
        batch, length, _ = hidden_states.shape
        check_attention_mask(attention_mask, batch, length)
        if state is None:
            return
        if not isinstance(state, GLAState):
            raise TypeError(f"the cache entry of GLA layer {self.layer_idx} must be a GLAState, got {type(state).__name__}")
        expected_state = (batch, self.num_heads, self.head_dim, self.head_dim)
        if tuple(state.recurrent.shape) != expected_state:
            raise ValueError(
                f"the GLA state (GLAState.recurrent) must have shape (B, H, Dk, Dv) = {expected_state}, got {tuple(state.recurrent.shape)}"
            )

    def _projections(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` projections ``[B, L, heads * D]`` (k and v through one merged matmul when possible)."""
        q_flat = self.q_proj(hidden_states)
        kv = merged_linear_outputs(hidden_states, (self.k_proj, self.v_proj), self, "kv")
        k_flat, v_flat = kv if kv is not None else (self.k_proj(hidden_states), self.v_proj(hidden_states))
        return q_flat, k_flat, v_flat

    def _recurrence_inputs(
        self, hidden_states: torch.Tensor, q_flat: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """What the recurrence reads, ``[B, H, L, D]`` each (grouped heads repeated): ``q`` (feature map,
        spike-coded with ``spike_qk``), ``k``, ``v`` and the log decay ``gk`` (padded steps: v and gk zeroed),
        plus the q/k counts and thresholds of the event-driven form."""
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
        inputs: dict[str, torch.Tensor] = {}
        if self.spike_qk:
            coding = self.coding or SpikeCoding()
            q_counts, q_v_th = spike_count(q, coding.k, -1, coding.clamp)
            k_counts, k_v_th = spike_count(k, coding.k, -1, coding.clamp)
            q, k = (q_counts * q_v_th).to(q.dtype), (k_counts * k_v_th).to(k.dtype)
            inputs.update(q_counts=q_counts, q_v_th=q_v_th, k_counts=k_counts, k_v_th=k_v_th)
        if attention_mask is not None:
            # The release zeroes padded values; zeroing their log decay too makes a padded step leave the
            # state exactly as it was, so padding is a no-op even with a non-zero incoming state.
            keep = attention_mask[:, None, :, None]
            v, gk = v * keep.to(v.dtype), gk * keep.to(gk.dtype)
        inputs.update(q=q, k=self._repeat_kv(k), v=self._repeat_kv(v), gk=self._repeat_kv(gk))
        return inputs

    def _recurrence(
        self, kernel: str, inputs: dict[str, torch.Tensor], state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(o [B, H, L, Dv], new_state)`` of the recurrence from ``state`` with ``kernel`` (``"fla"``,
        ``"recurrent"`` or ``"chunk"``, from :meth:`kernel_for`)."""
        q, k, v, gk = inputs["q"], inputs["k"], inputs["v"], inputs["gk"]
        if kernel == "recurrent":
            o, new_state = gla_recurrent(q, k, v, gk, self.scale, state)
        elif kernel == "fla":
            o, new_state = gla_fla(q, k, v, gk, self.scale, state)
        else:
            o, new_state = gla_chunked(q, k, v, gk, self.scale, state, self.chunk_size)
        if self._event_driven():
            o_events, state_events = gla_event_driven(
                inputs["q_counts"].detach(), inputs["q_v_th"], self._repeat_kv(inputs["k_counts"].detach()),
                self._repeat_kv(inputs["k_v_th"]), v.detach(), gk.detach(), self.scale, self.coding.codec,
                None if state is None else state.detach(),
            )
            # Values of the event-driven form, gradients of the (equal) count form.
            o = o + (o_events - o).detach()
            new_state = new_state + (state_events.to(new_state.dtype) - new_state).detach()
        return o, new_state

    def _output(self, o: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        """``g_norm`` per head, then ``o_proj``: ``o [B, H, L, Dv]`` -> ``[B, L, hidden]``."""
        batch, length, _ = hidden_states.shape
        o = self.g_norm(o.transpose(1, 2).to(hidden_states.dtype))  # [B, L, H, Dv]
        return self.o_proj(o.reshape(batch, length, self.num_heads * self.head_dim))

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
