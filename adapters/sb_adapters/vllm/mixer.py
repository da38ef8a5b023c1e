"""SpikingBrain's gated linear attention (GLA) layer on vLLM's linear-attention state.

The layer is a vLLM ``MambaBase`` of type ``LINEAR``: vLLM allocates one state slot per running request,
``[Hkv, Dk, Dv]`` float32 per layer and rank (one state per key/value head: the heads of a GQA group share
k, v and the decay, so their states are equal and only their queries differ), and hands the slots of a
batch in ``LinearAttentionMetadata.state_indices_tensor``.

The math is the HF model's (:class:`sb_layers.GatedLinearAttention`): ReLU (or sigmoid) feature maps,
``gk = logsigmoid(gate) / gate_logit_normalizer`` in float32, queries scaled by ``head_dim ** -0.5``, the
recurrence of :mod:`sb_kernels.gla` (``gla_chunked`` on the CPU, ``gla_fla`` on CUDA when
flash-linear-attention imports, ``gla_decode_step`` for one token: its Triton kernel on CUDA), then
``g_norm`` per head and ``o_proj``.

vLLM orders a batch decodes first (``reorder_batch_threshold = 1``: requests with one new token), then
prefills. A request with earlier tokens (``seq_len > query_len``: a decode, or the next piece of a chunked
prefill) starts from its stored state; a request without starts from zero (its slot may hold a finished
request's state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from vllm.config import VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    QKVParallelLinear,
    ReplicatedLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.mamba.abstract import MambaBase
from vllm.utils.torch_utils import direct_register_custom_op
from vllm.v1.attention.backends.linear_attn import LinearAttentionMetadata
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum

from sb_kernels.gla import fla_available, gla_chunked, gla_decode_step, gla_fla
from sb_layers.models.spikingbrain import SpikingBrainConfig
from sb_layers.rms_norm import RMSNorm
from sb_neurons.spike import compute_dtype
from sb_neurons.validation import check_int

# The GLA state's dtype whatever the model's: bf16 states drift over long sequences (our HF model keeps
# float32 states too).
STATE_DTYPE = torch.float32
OP_NAME = "spikingbrain_gla"


def gla_state_shape(config: SpikingBrainConfig, tensor_parallel_size: int) -> tuple[int, int, int]:
    """``(Hkv / tp, Dk, Dv)``: one rank's GLA state per request and layer (float32, :data:`STATE_DTYPE`)."""
    if not isinstance(config, SpikingBrainConfig):
        raise TypeError(f"config must be a SpikingBrainConfig, got {type(config).__name__}")
    check_int(tensor_parallel_size, "tensor_parallel_size", minimum=1)
    if config.num_key_value_heads % tensor_parallel_size:
        raise ValueError(
            f"tensor_parallel_size={tensor_parallel_size} must divide num_key_value_heads={config.num_key_value_heads}"
        )
    return (config.num_key_value_heads // tensor_parallel_size, config.head_dim, config.head_dim)


class SpikingBrainGLA(nn.Module, MambaBase):
    """One GLA layer (release names: ``q_proj``, ``k_proj``, ``v_proj`` merged into ``qkv_proj``;
    ``gk_proj`` the low-rank pair ``gk_proj.0`` / ``gk_proj.1`` or one merged matrix; ``g_norm``;
    ``o_proj``), split over tensor-parallel ranks by heads.

    ``forward(hidden_states [T, hidden]) -> [T, hidden]`` for the T tokens of a vLLM batch (flattened
    over requests); the state lives in ``self.kv_cache[0]`` ``[slots, Hkv/tp, Dk, Dv]`` float32.
    """

    def __init__(self, config: SpikingBrainConfig, vllm_config: VllmConfig, layer_idx: int, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.prefix, self.layer_idx = prefix, layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads // tp
        self.num_kv_heads = config.num_key_value_heads // tp
        self.groups = self.num_heads // self.num_kv_heads
        self.state_shape = gla_state_shape(config, tp)
        self.scale = config.head_dim**-0.5
        self.feature_map = config.feature_map
        self.gate_logit_normalizer = float(config.gate_logit_normalizer)
        self.chunk_size = config.gla_chunk_size
        kv_dim = config.num_key_value_heads * config.head_dim
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size, config.head_dim, config.num_attention_heads, config.num_key_value_heads,
            bias=True, prefix=f"{prefix}.qkv_proj",
        )
        if config.gla_gate == "low_rank":
            # The low-rank input (16 wide) is computed whole on every rank; its output columns split by heads.
            self.gk_proj = nn.ModuleList([
                ReplicatedLinear(config.hidden_size, config.gate_low_rank_dim, bias=False, prefix=f"{prefix}.gk_proj.0"),
                ColumnParallelLinear(config.gate_low_rank_dim, kv_dim, bias=True, prefix=f"{prefix}.gk_proj.1"),
            ])
        else:
            self.gk_proj = ColumnParallelLinear(config.hidden_size, kv_dim, bias=True, prefix=f"{prefix}.gk_proj")
        self.g_norm = RMSNorm(config.head_dim, eps=config.norm_eps)
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * config.head_dim, config.hidden_size, bias=False, prefix=f"{prefix}.o_proj",
        )
        self.kv_cache = (torch.tensor([]),)
        context = vllm_config.compilation_config.static_forward_context
        if prefix in context:
            raise ValueError(f"duplicate layer name {prefix!r}")
        context[prefix] = self

    # --- MambaBase: what vLLM allocates for this layer ---
    @property
    def mamba_type(self) -> MambaAttentionBackendEnum:
        return MambaAttentionBackendEnum.LINEAR

    def get_state_shape(self) -> tuple[tuple[int, int, int]]:
        return (self.state_shape,)

    def get_state_dtype(self) -> tuple[torch.dtype]:
        return (STATE_DTYPE,)

    # --- forward ---
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``[T, hidden] -> [T, hidden]`` through the custom op, which torch.compile treats as opaque (it
        reads the per-step metadata and writes the state slots)."""
        output = torch.empty_like(hidden_states)
        torch.ops.vllm.spikingbrain_gla(hidden_states, output, self.prefix)
        return output

    def gate_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The gate's pre-logsigmoid logits ``[T, Hkv/tp * Dk]``."""
        if isinstance(self.gk_proj, nn.ModuleList):
            low, _ = self.gk_proj[0](hidden_states)
            logits, _ = self.gk_proj[1](low)
        else:
            logits, _ = self.gk_proj(hidden_states)
        return logits

    def initial_states(self, slots: torch.Tensor, has_context: torch.Tensor) -> torch.Tensor:
        """The states requests start from, ``[N, H/tp, Dk, Dv]`` (repeated over each GQA group): the stored
        state of slot ``slots[i]`` where ``has_context[i]``, zero where not (a new request)."""
        stored = self.kv_cache[0][slots]
        # where, not a product: a slot never written may hold any bits (NaN * 0 is NaN).
        stored = torch.where(has_context[:, None, None, None], stored, torch.zeros((), dtype=stored.dtype, device=stored.device))
        return stored.repeat_interleave(self.groups, dim=1)

    def store_states(self, slots: torch.Tensor, states: torch.Tensor) -> None:
        """Write ``states [N, H/tp, Dk, Dv]`` back, one per key/value head (the group's first head)."""
        self.kv_cache[0][slots] = states[:, :: self.groups].to(STATE_DTYPE)

    def mix(self, hidden_states: torch.Tensor, output: torch.Tensor) -> None:
        """Fill ``output[:T]`` for the batch of the current forward context (called by the custom op)."""
        metadata = get_forward_context().attn_metadata
        if isinstance(metadata, dict):
            metadata = metadata.get(self.prefix)
        if metadata is None:  # vLLM's profiling run: the projections alone, from zero states
            num_tokens = hidden_states.shape[0]
            slots = torch.zeros(0, dtype=torch.long, device=hidden_states.device)
            output.copy_(self._run(hidden_states, [(0, num_tokens)], slots, None, profile=True))
            return
        if not isinstance(metadata, LinearAttentionMetadata):
            raise TypeError(f"{self.prefix}: expected LinearAttentionMetadata, got {type(metadata).__name__}")
        num_tokens = metadata.num_decode_tokens + metadata.num_prefill_tokens
        num_requests = metadata.num_decodes + metadata.num_prefills
        starts = metadata.query_start_loc[: num_requests + 1]
        query_lens = starts[1:] - starts[:-1]
        has_context = metadata.seq_lens[:num_requests] > query_lens
        bounds = starts.tolist()
        spans = list(zip(bounds[:-1], bounds[1:]))
        slots = metadata.state_indices_tensor[:num_requests].long()
        output[:num_tokens] = self._run(hidden_states[:num_tokens], spans, slots, has_context, metadata.num_decodes)

    def _run(
        self, x: torch.Tensor, spans: list[tuple[int, int]], slots: torch.Tensor, has_context: torch.Tensor | None,
        num_decodes: int = 0, profile: bool = False,
    ) -> torch.Tensor:
        """``[T, hidden]`` for tokens ``x [T, hidden]``: request ``i`` owns rows ``spans[i]`` and state slot
        ``slots[i]``; the first ``num_decodes`` requests have one token each."""
        num_tokens, d = x.shape[0], self.head_dim
        qkv, _ = self.qkv_proj(x)
        q, k, v = qkv.split([self.num_heads * d, self.num_kv_heads * d, self.num_kv_heads * d], dim=-1)
        gate = self.gate_logits(x)
        o = torch.empty(num_tokens, self.num_heads, d, dtype=x.dtype, device=x.device)
        if num_decodes:
            # One token per request: the decode step (Triton kernel on CUDA) on the gathered states.
            rows = slice(0, num_decodes)
            heads = lambda t, n: t[rows].reshape(num_decodes, n, d)  # noqa: E731
            out, new = gla_decode_step(
                heads(q, self.num_heads), heads(k, self.num_kv_heads), heads(v, self.num_kv_heads),
                heads(gate, self.num_kv_heads), self.initial_states(slots[rows], has_context[rows]),
                scale=self.scale, feature_map=self.feature_map, gate_normalizer=self.gate_logit_normalizer,
            )
            o[rows] = out
            self.store_states(slots[rows], new)
        compute = compute_dtype(x.dtype)
        phi = F.relu if self.feature_map == "relu" else torch.sigmoid
        gk = F.logsigmoid(gate.to(compute)) / self.gate_logit_normalizer
        for index in range(num_decodes, len(spans)):
            start, end = spans[index]
            length = end - start
            # [1, heads, L, D] as the HF layer builds them: feature maps in the model dtype, the log decay in
            # float32, key/value heads repeated over their groups.
            view = lambda t, n: t[start:end].reshape(1, length, n, d).transpose(1, 2)  # noqa: E731
            repeat = lambda t: t.repeat_interleave(self.groups, dim=1)  # noqa: E731
            q_r = phi(view(q, self.num_heads))
            k_r, v_r, gk_r = repeat(phi(view(k, self.num_kv_heads))), repeat(view(v, self.num_kv_heads)), repeat(view(gk, self.num_kv_heads))
            initial = None if profile else self.initial_states(slots[index : index + 1], has_context[index : index + 1])
            if x.is_cuda and fla_available():
                out, new = gla_fla(q_r, k_r, v_r, gk_r, self.scale, initial)
            else:
                out, new = gla_chunked(q_r, k_r, v_r, gk_r, self.scale, initial, self.chunk_size)
            o[start:end] = out[0].transpose(0, 1).to(x.dtype)
            if not profile:
                self.store_states(slots[index : index + 1], new)
        o = self.g_norm(o)
        out, _ = self.o_proj(o.reshape(num_tokens, self.num_heads * d))
        return out


def _spikingbrain_gla(hidden_states: torch.Tensor, output: torch.Tensor, layer_name: str) -> None:
    layer = get_forward_context().no_compile_layers[layer_name]
    layer.mix(hidden_states, output)


def _spikingbrain_gla_fake(hidden_states: torch.Tensor, output: torch.Tensor, layer_name: str) -> None:
    return None


direct_register_custom_op(
    op_name=OP_NAME, op_func=_spikingbrain_gla, mutates_args=["output"], fake_impl=_spikingbrain_gla_fake,
)
