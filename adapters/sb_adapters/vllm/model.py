"""SpikingBrain-7B on vLLM's V1 engine: the decoder stack and the causal LM (``HasInnerState`` + ``IsHybrid``).

Layer ``i`` is sliding-window attention when ``i in config.attn_layers`` (vLLM's ``Attention`` with the
per-layer window), gated linear attention otherwise (:class:`sb_adapters.vllm.mixer.SpikingBrainGLA`);
every layer has a GLU MLP. The blocks compute what :class:`sb_layers.HybridBlock` computes, with our RMS
norm (:class:`sb_layers.rms_norm.RMSNorm`), rotary embedding (:func:`sb_layers.rotary.rotary_cos_sin`,
:func:`sb_kernels.apply_rotary`) and ``silu_mul``, and vLLM's tensor-parallel linear layers, so that
``tensor_parallel_size > 1`` shards the model by heads and by MLP columns.

Window convention: our ``sliding_window = w`` attends ``w`` keys, the query's own included; vLLM's
``sliding_window`` is the same count (its kernels attend keys ``i - w + 1 .. i``), so it is passed as is.

Tokens flow as vLLM's flat batch: ``input_ids [T]``, ``positions [T]`` (each request's positions
continue from its earlier tokens), hidden states ``[T, hidden]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import nn
from vllm.config import CacheConfig, VllmConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.mamba.mamba_utils import MambaStateCopyFuncCalculator
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.interfaces import HasInnerState, IsHybrid
from vllm.platforms import current_platform
from vllm.sequence import IntermediateTensors

from sb_kernels import apply_rotary, silu_mul
from sb_layers.models.spikingbrain import SpikingBrainConfig, adapt_config_to_checkpoint
from sb_layers.rms_norm import RMSNorm
from sb_layers.rotary import rotary_cos_sin

from .mixer import STATE_DTYPE, SpikingBrainGLA, gla_state_shape
from .servable import check_servable
from .weights import load_spikingbrain_weights


def _attention_head_sizes() -> list[int] | None:
    """Head sizes of this platform's attention backend where it has a fixed list (the CPU's), else None."""
    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    return None


def servable_config(vllm_config: VllmConfig) -> SpikingBrainConfig:
    """The model's config adapted to the weights in a local checkpoint folder (a merged ``gk_proj`` selects
    the merged gate; W8ASpike scales switch ``spiking`` on, which :func:`check_servable` then refuses),
    checked: a ``ValueError`` naming the field the plugin cannot serve."""
    config = vllm_config.model_config.hf_config
    if not isinstance(config, SpikingBrainConfig):
        raise TypeError(f"the checkpoint's config must be a SpikingBrainConfig ('spikingbrain' or 'gla_swa'), got {type(config).__name__}")
    path = vllm_config.model_config.model
    if os.path.isdir(path):
        config = adapt_config_to_checkpoint(config, path)
    check_servable(config, vllm_config.parallel_config.tensor_parallel_size, _attention_head_sizes())
    return config


class SpikingBrainSWA(nn.Module):
    """A sliding-window attention layer: ``qkv_proj`` (release ``q_proj``/``k_proj``/``v_proj``, with bias),
    RoPE (half rotation, ``rope_theta``), vLLM ``Attention`` (scale ``head_dim ** -0.5``, the per-layer
    window, GQA), ``o_proj`` without bias. ``forward(positions [T], hidden_states [T, hidden])``."""

    def __init__(self, config: SpikingBrainConfig, cache_config: CacheConfig | None, prefix: str) -> None:
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        self.head_dim, self.rope_theta = config.head_dim, float(config.rope_theta)
        self.num_heads = config.num_attention_heads // tp
        # Fewer key/value heads than ranks: QKVParallelLinear replicates them.
        self.num_kv_heads = max(1, config.num_key_value_heads // tp)
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size, config.head_dim, config.num_attention_heads, config.num_key_value_heads,
            bias=True, prefix=f"{prefix}.qkv_proj",
        )
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * config.head_dim, config.hidden_size, bias=False, prefix=f"{prefix}.o_proj",
        )
        self.attn = Attention(
            self.num_heads, config.head_dim, config.head_dim**-0.5, num_kv_heads=self.num_kv_heads,
            cache_config=cache_config, per_layer_sliding_window=config.sliding_window, prefix=f"{prefix}.attn",
        )

    def rotate(self, x: torch.Tensor, positions: torch.Tensor, heads: int) -> torch.Tensor:
        """RoPE on ``x [T, heads * D]`` at ``positions [T]`` (our rotary: angles in float32, then x's dtype)."""
        tokens = x.shape[0]
        cos, sin = rotary_cos_sin(positions[None], self.head_dim, self.rope_theta, x.dtype)
        rotated = apply_rotary(x.view(1, tokens, heads, self.head_dim).transpose(1, 2), cos, sin)
        return rotated.transpose(1, 2).reshape(tokens, heads * self.head_dim)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv_proj(hidden_states)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        q, k = self.rotate(q, positions, self.num_heads), self.rotate(k, positions, self.num_kv_heads)
        out, _ = self.o_proj(self.attn(q, k, v.contiguous()))
        return out


class SpikingBrainMLP(nn.Module):
    """The GLU MLP ``down(silu(gate(x)) * up(x))`` with gate and up merged column-parallel, down row-parallel."""

    def __init__(self, config: SpikingBrainConfig, prefix: str) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(
            config.hidden_size, [config.intermediate_size] * 2, bias=False, prefix=f"{prefix}.gate_up_proj",
        )
        self.down_proj = RowParallelLinear(config.intermediate_size, config.hidden_size, bias=False, prefix=f"{prefix}.down_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        gate, up = gate_up.chunk(2, dim=-1)
        out, _ = self.down_proj(silu_mul(gate, up))
        return out


class SpikingBrainBlock(nn.Module):
    """Pre-norm block: ``h = x + attn(attn_norm(x))``, ``out = h + mlp(mlp_norm(h))`` (as HybridBlock)."""

    def __init__(self, config: SpikingBrainConfig, vllm_config: VllmConfig, index: int, prefix: str) -> None:
        super().__init__()
        self.is_swa = index in config.attn_layers
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        if self.is_swa:
            self.attn = SpikingBrainSWA(config, vllm_config.cache_config, f"{prefix}.attn")
        else:
            self.attn = SpikingBrainGLA(config, vllm_config, index, f"{prefix}.attn")
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = SpikingBrainMLP(config, f"{prefix}.mlp")

    def forward(self, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        normed = self.attn_norm(x)
        h = x + (self.attn(positions, normed) if self.is_swa else self.attn(normed))
        return h + self.mlp(self.mlp_norm(h))


class SpikingBrainModel(nn.Module):
    """``embeddings``, ``layers``, ``norm`` (the release's names under ``model.``)."""

    def __init__(self, config: SpikingBrainConfig, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size, prefix=f"{prefix}.embeddings")
        self.layers = nn.ModuleList(
            SpikingBrainBlock(config, vllm_config, index, f"{prefix}.layers.{index}") for index in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)

    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        for layer in self.layers:
            x = layer(positions, x)
        return self.norm(x)


class SpikingBrainForCausalLM(nn.Module, HasInnerState, IsHybrid):
    """vLLM's SpikingBrain causal LM, for ``GLAswaForCausalLM`` (the release) and ``SpikingBrainForCausalLM``
    (ours) checkpoints: ``forward(input_ids [T], positions [T]) -> hidden [T, hidden]``,
    ``compute_logits(hidden [N, hidden]) -> [N, vocab]``, ``load_weights`` from either layout."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = servable_config(vllm_config)
        self.config = config
        self.model = SpikingBrainModel(config, vllm_config, f"{prefix}model" if not prefix else f"{prefix}.model")
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, prefix="lm_head" if not prefix else f"{prefix}.lm_head")
        if config.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.model.embeddings)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(input_ids)

    def forward(
        self, input_ids: torch.Tensor | None, positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None, inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if intermediate_tensors is not None:
            raise NotImplementedError("pipeline parallelism is not supported by the SpikingBrain vLLM plugin")
        return self.model(input_ids, positions, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.logits_processor(self.lm_head, hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return load_spikingbrain_weights(self, weights)

    # --- IsHybrid: the GLA state vLLM allocates per request and layer ---
    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig) -> tuple[tuple[int, int, int]]:
        config = servable_config(vllm_config)  # vLLM asks this while it sets up: an unservable checkpoint fails here
        return (gla_state_shape(config, vllm_config.parallel_config.tensor_parallel_size),)

    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig) -> tuple[torch.dtype]:
        return (STATE_DTYPE,)

    @classmethod
    def get_mamba_state_copy_func(cls) -> tuple:
        return MambaStateCopyFuncCalculator.linear_attention_state_copy_func()
