"""SpikingBrain-7B (and a 76B-style variant) as a transformers ``PreTrainedModel``, built from sb_layers parts.

Structure and state-dict names follow the release (facts section 4), so released checkpoints load as is::

    model.embeddings                    nn.Embedding(vocab, hidden)
    model.layers.{i}                    sb_layers.HybridBlock: attn_norm, attn, mlp_norm, mlp
        .attn                           GatedLinearAttention | SlidingWindowAttention | ParallelMixer
        .mlp                            GLUMLP | MoE
    model.norm                          RMSNorm
    model.sink_tokens                   sb_layers.SinkTokens, weight [num_sink_tokens, hidden] (76B-style only)
    lm_head                             Linear(hidden, vocab, bias=False)

Padding and positions: ``attention_mask`` (1 real, 0 pad) is passed to every layer; the SWA layers place
rotary positions on real tokens only and GLA zeroes padded values, so with left padding a row's real-token
logits equal those of the row alone. ``position_ids``, when given, must equal those positions
(``cumsum(mask) - 1`` continuing from the cache) on real tokens: the layers derive positions from the mask,
and a mismatch raises instead of being ignored.
"""

from __future__ import annotations

import copy
import inspect
import os
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, MoeCausalLMOutputWithPast
from transformers.utils import logging

from sb_layers.blocks import HybridBlock, ParallelMixer
from sb_layers.feed_forward import GLUMLP, MoE
from sb_layers.linear_attention import GatedLinearAttention
from sb_layers.rms_norm import RMSNorm
from sb_layers.sinks import SinkTokens
from sb_layers.report import format_weight_code_stats, weight_code_stats
from sb_layers.sliding_window import SlidingWindowAttention
from sb_layers.spiking_linear import SpikingLinear
from sb_neurons.validation import check_int

from .cache import SpikingBrainCache
from .cache_names import CACHE_NAMES, GENERATE_CACHE_KEY, OUTPUT_CACHE_FIELD, output_cache, resolve_cache
from .configuration import GLASwaConfig, SpikingBrainConfig, reject_flat_fields
from .layout import adapt_config_to_checkpoint, check_checkpoint_shapes, weight_file_shapes
from .qwen2 import convert_qwen2_into

logger = logging.get_logger(__name__)

try:
    from transformers.modeling_utils import slice_logits_to_keep
except ImportError:  # transformers releases before the helper existed

    def slice_logits_to_keep(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
        """``hidden_states [B, L, H]`` at the positions whose logits are kept (transformers' rule)."""
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return hidden_states[:, keep, :]


def _plain_linear_like(linear: nn.Linear) -> nn.Linear:
    """An ``nn.Linear`` sharing ``linear``'s Parameters (un-spiking a projection without a copy)."""
    plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    plain.weight, plain.bias = linear.weight, linear.bias
    return plain


def build_mixer(config: SpikingBrainConfig, index: int) -> nn.Module:
    """The token mixer of layer ``index``: GLA or SWA (inter-layer), or both in parallel (intra-layer)."""
    coding = config.spike_coding()
    sizes = dict(
        hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
    )

    def linear_attention() -> GatedLinearAttention:
        return GatedLinearAttention(
            **sizes, gate=config.gla_gate, gate_low_rank_dim=config.gate_low_rank_dim,
            gate_logit_normalizer=config.gate_logit_normalizer, feature_map=config.feature_map,
            norm_eps=config.norm_eps, coding=coding, spike_qk=config.spike_qk, mode=config.gla_mode,
            chunk_size=config.gla_chunk_size, layer_idx=index,
        )

    def softmax_attention(window: int | None, sinks: int) -> SlidingWindowAttention:
        return SlidingWindowAttention(
            **sizes, window=window, rope_theta=config.rope_theta, qkv_bias=True, num_sinks=sinks, coding=coding,
            query_chunk_size=config.swa_query_chunk_size,
            spike_query_k=config.coding.k if config.spike_attention else None, layer_idx=index,
        )

    if config.variant == "inter_layer":
        return softmax_attention(config.sliding_window, 0) if config.is_swa_layer(index) else linear_attention()
    window = None if index in config.full_attn_layers else config.sliding_window
    return ParallelMixer(linear_attention(), softmax_attention(window, config.num_sink_tokens), config.norm_eps)


def build_mlp(config: SpikingBrainConfig, index: int) -> nn.Module:
    """The FFN of layer ``index``: a GLU MLP, or a MoE of GLU experts (76B-style MoE layers)."""
    coding = config.spike_coding()
    if config.is_moe_layer(index):
        mlp = MoE(
            config.hidden_size, config.intermediate_size, config.num_experts, config.num_experts_per_tok,
            config.num_shared_experts, config.router, coding=coding,
        )
        experts = list(mlp.experts) + list(mlp.shared_experts)
    else:
        mlp = GLUMLP(config.hidden_size, config.intermediate_size, coding=coding)
        experts = [mlp]
    if coding is not None and not config.spike_down_proj:
        # The release feeds silu(gate) * up to down_proj's float weight, unspiked (facts section 4).
        for expert in experts:
            expert.down_proj = _plain_linear_like(expert.down_proj)
    return mlp


# Keyword arguments of ``PreTrainedModel.from_pretrained`` that configure the loading itself: transformers
# takes them out before the rest reaches the config (as field overrides), so ``_load_config`` does the same.
# The named parameters are read from the signature; these are the ones it takes from ``**kwargs``.
_LOADER_KWARGS = frozenset({
    "adapter_kwargs", "adapter_name", "allow_all_kernels", "device_map", "device_mesh", "distributed_config",
    "dtype", "generation_config", "key_mapping", "kernel_config", "max_memory", "offload_buffers",
    "offload_folder", "output_loading_info", "proxies", "quantization_config", "state_dict", "subfolder",
    "tp_plan", "tp_size", "torch_dtype", "tqdm_class", "trust_remote_code", "use_kernels", "variant",
    "_commit_hash", "_from_auto", "_from_pipeline", "mirror", "_fast_init", "low_cpu_mem_usage", "from_tf",
    "from_flax", "offload_state_dict",
}) | frozenset(
    name for name, parameter in inspect.signature(PreTrainedModel.from_pretrained).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
)
# Loading options that also locate the config file (transformers passes them to both).
_DOWNLOAD_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _load_config(config_path: str | os.PathLike, kwargs: dict[str, Any]) -> tuple[PreTrainedConfig, dict[str, Any]]:
    """The config at ``config_path`` with the config-field overrides among ``kwargs`` applied and validated.

    Returns the config and the keyword arguments left for ``PreTrainedModel.from_pretrained``: its loading
    options plus whatever no config field claimed (transformers hands those to the model's ``__init__``).
    """
    loader = {name: value for name, value in kwargs.items() if name in _LOADER_KWARGS}
    overrides = {name: value for name, value in kwargs.items() if name not in _LOADER_KWARGS}
    download = {name: loader[name] for name in _DOWNLOAD_KWARGS if name in loader}
    config, unused = AutoConfig.from_pretrained(config_path, return_unused_kwargs=True, **download, **overrides)
    if isinstance(config, SpikingBrainConfig):
        reject_flat_fields(type(config).__name__, unused)  # an old flat field as an override: name its coding field
    if isinstance(config, SpikingBrainConfig) and set(overrides) - set(unused):
        # transformers sets the overrides as attributes after construction, past __post_init__'s checks:
        # build the config again from its fields so that an overridden value is validated like a saved one.
        config = type(config).from_dict(config.to_dict())
    return config, {**loader, **unused}


class SpikingBrainPreTrainedModel(PreTrainedModel):
    """Weight initialization, gradient checkpointing and loading rules shared by the SpikingBrain models."""

    config: SpikingBrainConfig
    config_class = SpikingBrainConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HybridBlock"]
    _skip_keys_device_placement = list(CACHE_NAMES)
    # The W8ASpike release stores scales for down_proj although its forward never uses them.
    _keys_to_ignore_on_load_unexpected = [r"mlp\.down_proj\.weight_quantizer\.scales"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear/Embedding: normal(0, initializer_range); RMSNorm: ones
        if isinstance(module, SinkTokens):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, SpikingLinear) and module.weight_quantizer is not None:
            scales = module.weight_quantizer.scales
            if not getattr(scales, "_is_hf_initialized", False) and scales.device.type != "meta":
                module.calibrate_weight_scales()  # scales follow the (new or loaded) weight

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``, also for the release's layout (``model_type: "gla_swa"``).

        For a local directory the config is read with ``AutoConfig`` (``"gla_swa"`` is registered by this
        package, so no remote code runs) and adapted to the weights found: ``weight_quantizer.scales`` keys
        switch on W8ASpike (int8 weight groups of the stored size, spike-coded activations), a merged
        ``gk_proj.weight`` selects the merged GLA gate.

        As for every transformers model, keyword arguments that name config fields override the saved
        config (``from_pretrained(path, norm_eps=1e-3)``); the overridden config is validated like a new
        one (a bad value raises ``ValueError`` naming the field); ``coding={"k": 4.0}`` updates the saved
        coding's fields it names, and an old flat spike field (``spike_k=4.0``) raises ``ValueError`` naming
        its ``coding.<field>``. Keyword arguments that are neither
        loading options nor config fields go to the model's ``__init__`` (which rejects them with a
        ``TypeError``), as in transformers. With an explicit ``config=`` object nothing overrides it. A
        loading option keeps its meaning where a config field has the same name: ``variant=`` is the
        weight-file variant (``model.<variant>.safetensors``), so the config's ``variant`` is changed
        through ``config=``.

        Before anything is loaded, the shapes in the safetensors headers are compared with those of the
        model the config describes (built on the meta device, nothing allocated): a weight of another shape
        (a wrong config.json, or a corrupted weight) raises ``ValueError`` naming the weight, its shape in the
        checkpoint and the expected one, unless ``ignore_mismatched_sizes=True`` (transformers then
        re-initializes it, as documented there).
        """
        path = os.fspath(pretrained_model_name_or_path)
        directory = os.path.join(path, kwargs.get("subfolder") or "")
        if os.path.isdir(directory):
            config = kwargs.pop("config", None)
            if not isinstance(config, PreTrainedConfig):
                config, kwargs = _load_config(path if config is None else config, kwargs)
            if not isinstance(config, SpikingBrainConfig):
                raise TypeError(f"config must be a SpikingBrainConfig, got {type(config).__name__}")
            kwargs["config"] = adapt_config_to_checkpoint(config, directory)
            if not kwargs.get("ignore_mismatched_sizes"):
                found = weight_file_shapes(directory, kwargs.get("variant"))
                if found is not None:
                    expected = cls.build(copy.deepcopy(kwargs["config"]), device="meta").state_dict()
                    check_checkpoint_shapes({name: tuple(t.shape) for name, t in expected.items()}, found, cls.base_model_prefix)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # int8 weight groups: say how many codes the checkpoint puts past int8 (kept exactly); counting
        # them is a pass over every weight, so only when the summary will be shown.
        if model.config.spiking and logger.isEnabledFor(logging.INFO) and (codes := weight_code_stats(model)):
            logger.info("%s: %s", pretrained_model_name_or_path, format_weight_code_stats(codes))
        return loaded

    @classmethod
    def build(cls, config: SpikingBrainConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Construct the model directly on ``device`` (``"meta"`` for shape-only) in ``dtype``.

        Parameters are allocated on ``device`` from the start (a ``torch.device`` context), so a 7B model
        is never materialized with random weights on the CPU first. On ``"meta"`` nothing is allocated;
        fill it with ``load_state_dict(..., assign=True)`` or use :meth:`from_pretrained`.
        """
        if not isinstance(config, SpikingBrainConfig):
            raise TypeError(f"config must be a SpikingBrainConfig, got {type(config).__name__}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        with torch.device(device if device is not None else "cpu"):
            return cls._from_config(config, dtype=dtype) if dtype is not None else cls._from_config(config)


class SpikingBrainModel(SpikingBrainPreTrainedModel):
    """The decoder stack without the LM head: ``input_ids [B, L] -> last_hidden_state [B, L, hidden]``."""

    def __init__(self, config: SpikingBrainConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            HybridBlock(config.hidden_size, build_mixer(config, i), build_mlp(config, i), config.norm_eps)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.sink_tokens = SinkTokens(config.num_sink_tokens, config.hidden_size) if config.num_sink_tokens else None
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def _check_position_ids(self, position_ids: torch.Tensor, mask: torch.Tensor, cache: SpikingBrainCache | None) -> None:
        batch, length = mask.shape
        if position_ids.ndim != 2 or position_ids.shape[1] != length or position_ids.shape[0] not in (1, batch):
            raise ValueError(f"position_ids must have shape (B, L) or (1, L) with L = {length}, got {tuple(position_ids.shape)}")
        start = cache.real_tokens if cache is not None and cache.real_tokens is not None else 0
        expected = mask.long().cumsum(dim=1) - 1 + (start[:, None] if torch.is_tensor(start) else start)
        real = mask.bool()
        if not torch.equal(position_ids.expand(batch, length)[real], expected[real].to(position_ids.dtype)):
            raise ValueError(
                "position_ids must count real tokens (cumsum(attention_mask) - 1, continuing from the cache): "
                "the sliding-window layers place rotary positions from the mask"
            )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: SpikingBrainCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        prefill_chunk_size: int | None = None,
        keep_last: int = 0,
        past_key_values: SpikingBrainCache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        """Run the stack. ``attention_mask`` may span the cached positions too (``[B, past + L]``).

        Args:
            cache: the :class:`SpikingBrainCache` to continue from and append to; ``past_key_values`` is
                its older name, accepted on every transformers release (give one of the two). Every
                layer reads and updates its own entry of it in place (:mod:`sb_layers.mixer_cache`).
            prefill_chunk_size: in eval mode, an input longer than this runs through the whole stack in
                pieces of this many tokens with the cache carried (a temporary one when ``use_cache`` is
                False), so activation memory is that of one piece. Default ``config.prefill_chunk_size``
                (None: one piece). Identity: the outputs equal the one-piece outputs (float rounding).
            keep_last: 0 returns every position; ``n > 0`` only the last ``n`` positions of
                ``last_hidden_state`` (what a ``logits_to_keep=n`` head reads), never holding the others.

        Returns ``BaseModelOutputWithPast(last_hidden_state [B, L, hidden], cache, hidden_states)``, the cache
        under the installed transformers' field name (``cache``, or ``past_key_values`` before the rename).
        """
        cache = resolve_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if input_ids is not None and (input_ids.ndim != 2 or input_ids.dtype not in (torch.int32, torch.int64)):
            raise ValueError(f"input_ids must be an integer tensor [B, L], got {input_ids.dtype} {tuple(input_ids.shape)}")
        if inputs_embeds is not None and (inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.hidden_size):
            raise ValueError(f"inputs_embeds must be [B, L, {self.config.hidden_size}], got {tuple(inputs_embeds.shape)}")
        check_int(keep_last, "keep_last", minimum=0)
        piece = self.config.prefill_chunk_size if prefill_chunk_size is None else prefill_chunk_size
        if piece is not None:
            check_int(piece, "prefill_chunk_size (None: one piece)", minimum=1)
        source = input_ids if input_ids is not None else inputs_embeds
        batch, length = source.shape[:2]
        in_pieces = piece is not None and length > piece and not self.training
        use_cache = self.config.use_cache if use_cache is None else use_cache
        checkpointing = self.gradient_checkpointing and self.training
        if checkpointing and use_cache and cache is None:
            use_cache = False  # recomputation in backward must not append to a cache twice
        # The layers keep their state in one cache (the mixer protocol): a temporary one when none is kept.
        temporary = cache is None and not use_cache
        if cache is None:
            cache = SpikingBrainCache(len(self.layers))
        if len(cache) != len(self.layers):
            raise ValueError(f"cache has {len(cache)} layers, the model {len(self.layers)}")
        device = inputs_embeds.device if inputs_embeds is not None else self.embeddings.weight.device
        mask = self._regular_mask(attention_mask, batch, length, device)
        if position_ids is not None:
            self._check_position_ids(position_ids, mask, cache)

        # One pass of the stack, or (a long prefill in eval mode) consecutive pieces of `piece` tokens,
        # each through the whole stack with the cache carried: a loop, not a recursion.
        bounds = [(start, min(start + piece, length)) for start in range(0, length, piece)] if in_pieces else [(0, length)]
        outputs, piece_hidden = [], []
        for start, stop in bounds:
            keep = keep_last
            if in_pieces:
                # With keep_last, a piece returns only its positions among the last keep_last; a piece
                # with none of them still runs (for the cache) and its one returned position is dropped.
                wanted = min(stop - start, keep_last - (length - stop)) if keep_last else 0
                keep = max(wanted, 1) if keep_last else 0
            hidden, all_hidden = self._run_stack(
                input_ids=None if input_ids is None else input_ids[:, start:stop],
                inputs_embeds=None if inputs_embeds is None else inputs_embeds[:, start:stop],
                mask=mask[:, start:stop], unmasked=attention_mask is None, cache=cache,
                output_hidden_states=bool(output_hidden_states), checkpointing=checkpointing, keep_last=keep,
            )
            if not in_pieces or not keep_last or wanted > 0:
                outputs.append(hidden)
            piece_hidden.append(all_hidden)
        hidden = _concat(outputs)
        all_hidden = tuple(_concat(parts) for parts in zip(*piece_hidden)) if output_hidden_states else None
        returned = None if temporary or (in_pieces and not use_cache) else cache
        return BaseModelOutputWithPast(last_hidden_state=hidden, hidden_states=all_hidden, **{OUTPUT_CACHE_FIELD: returned})

    def _run_stack(
        self, input_ids, inputs_embeds, mask, unmasked, cache, output_hidden_states, checkpointing, keep_last,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One piece through embeddings, every layer (each updating its entry of ``cache``) and the norm:
        ``(hidden [B, L or keep_last, hidden], per-layer hidden states)``; the cache is advanced."""
        hidden = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        first_call = cache.seen_tokens == 0
        sinks = self.config.num_sink_tokens if first_call else 0
        # Without a mask nothing is padded: skip the host round trip of checking it (decode-step graphs).
        layer_mask = None if unmasked or bool(mask.all()) else mask
        if sinks:  # the sink-aware SWA layers take the first call's leading tokens as the sinks
            hidden, layer_mask = self.sink_tokens.prepend(hidden, layer_mask)
        all_hidden: tuple[torch.Tensor, ...] = ()
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden += (hidden[:, sinks:],)
            if checkpointing:
                hidden = self._gradient_checkpointing_func(_from_state(layer, cache, index), hidden, layer_mask)
            else:
                hidden = layer(hidden, layer_mask, cache)
        hidden = hidden[:, sinks:]
        if keep_last and not output_hidden_states:
            hidden = hidden[:, -keep_last:]
        hidden = self.norm(hidden)
        if output_hidden_states:
            all_hidden += (hidden,)
            if keep_last:
                hidden = hidden[:, -keep_last:]
        cache.advance(mask)
        return hidden, all_hidden

    @staticmethod
    def _regular_mask(attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """The ``[B, L]`` 0/1 mask of the new positions (the last ``L`` columns of a longer mask)."""
        if attention_mask is None:
            return torch.ones(batch, length, dtype=torch.long, device=device)
        if attention_mask.ndim != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < length:
            raise ValueError(f"attention_mask must be [B, >= L] = [{batch}, >= {length}], got {tuple(attention_mask.shape)}")
        mask = attention_mask[:, -length:]
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        return mask.to(device=device, dtype=torch.long)


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def _from_state(layer: nn.Module, cache: SpikingBrainCache, index: int):
    """``layer`` on ``cache`` for gradient checkpointing: the forward and its recomputation in backward both
    start from the entry the forward found, not from the one it left. A GLA layer replaces its entry, but a
    sliding window is appended to in place, so each run starts from its own copy of the saved entry
    (``select_batch`` of every row, which shares no tensor with it)."""
    before = cache.states[index]

    def run(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if before is not None:
            cache.states[index] = before.select_batch(torch.arange(hidden.shape[0], device=hidden.device))
        else:
            cache.states[index] = None
        return layer(hidden, mask, cache)

    return run


class SpikingBrainForCausalLM(SpikingBrainPreTrainedModel, GenerationMixin):
    """SpikingBrain causal LM: :class:`SpikingBrainModel` plus an untied ``lm_head`` (release layout).

    ``forward(input_ids, attention_mask, position_ids, cache, inputs_embeds, labels, use_cache,
    logits_to_keep, prefill_chunk_size)`` (``past_key_values=`` names the cache too) returns logits
    ``[B, L, vocab]`` (``[B, n, vocab]`` for ``logits_to_keep=n``; the stack then returns only those positions: see
    :meth:`SpikingBrainModel.forward` for ``prefill_chunk_size``); with ``labels`` ``[B, L]`` the loss is the mean
    cross-entropy of position ``t`` predicting ``labels[t + 1]`` (``-100`` ignored), plus
    ``router_aux_loss_coef`` times the MoE load-balancing loss when MoE layers exist. ``generate()`` keeps
    a :class:`SpikingBrainCache` (GLA states and rolling SWA windows).
    """

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: SpikingBrainConfig) -> None:
        super().__init__(config)
        self.model = SpikingBrainModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def moe_aux_loss(self) -> torch.Tensor | None:
        """Mean load-balancing loss of the MoE layers (the blocks' MLPs) in the last forward (None without
        MoE). Reads the blocks only: walking all ~400 submodules cost 0.35 ms of host time per forward."""
        mlps = (getattr(block, "mlp", None) for block in self.model.layers)
        losses = [m.aux_loss for m in mlps if isinstance(m, MoE) and m.aux_loss is not None]
        return torch.stack([loss.float() for loss in losses]).mean() if losses else None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: SpikingBrainCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        prefill_chunk_size: int | None = None,
        past_key_values: SpikingBrainCache | None = None,
        **kwargs: Any,
    ) -> MoeCausalLMOutputWithPast:
        # Positions whose logits are not kept are never held past the stack (bounded memory in pieces).
        keep_last = logits_to_keep if isinstance(logits_to_keep, int) and logits_to_keep > 0 and labels is None else 0
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache, past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_hidden_states=output_hidden_states, prefill_chunk_size=prefill_chunk_size, keep_last=keep_last,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        aux_loss = self.moe_aux_loss()
        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(logits.shape[:2])} (keep all logits), got {tuple(labels.shape)}")
            extra = {"num_items_in_batch": kwargs["num_items_in_batch"]} if "num_items_in_batch" in kwargs else {}
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **extra)
            if aux_loss is not None and self.config.router_aux_loss_coef > 0:
                loss = loss + self.config.router_aux_loss_coef * aux_loss.to(loss.dtype)
        output = MoeCausalLMOutputWithPast(
            loss=loss, aux_loss=aux_loss, logits=logits, hidden_states=outputs.hidden_states,
            **{OUTPUT_CACHE_FIELD: output_cache(outputs)},
        )
        return output if return_dict is not False else output.to_tuple()

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        """``generate()`` hook: a :class:`SpikingBrainCache` instead of transformers' KV caches.

        A cache the caller passed as ``cache=`` or ``past_key_values=`` is continued; it travels under the key
        the installed transformers reads (:data:`GENERATE_CACHE_KEY`).
        """
        cache = resolve_cache(model_kwargs.pop("cache", None), model_kwargs.pop("past_key_values", None))
        if cache is not None:
            cache._is_user_defined = True
        elif generation_config.use_cache is False:
            return
        else:
            cache = SpikingBrainCache(self.config.num_hidden_layers)
        model_kwargs[GENERATE_CACHE_KEY] = cache

    @classmethod
    def from_qwen2(cls, model_or_dir, **overrides: Any) -> SpikingBrainForCausalLM:
        """Convert a Qwen2 causal LM (module or local directory) into SpikingBrain-7B (facts section 6).

        See :func:`sb_layers.models.spikingbrain.convert.convert_qwen2` (the same conversion).
        """
        return convert_qwen2_into(cls, model_or_dir, **overrides)


class GLASwaForCausalLM(SpikingBrainForCausalLM):
    """:class:`SpikingBrainForCausalLM` for the release's config class :class:`GLASwaConfig` (``model_type: "gla_swa"``).

    Exists so that ``AutoModelForCausalLM`` maps the release's config class to a model class whose
    ``config_class`` matches; it adds nothing. The release's ``config.json`` names the architecture
    ``"GLAswaForCausalLM"`` (its own spelling); transformers picks the model class from ``model_type``, so
    that name needs no class of its own.
    """

    config_class = GLASwaConfig


__all__ = ["GLASwaForCausalLM", "SpikingBrainForCausalLM", "SpikingBrainModel", "SpikingBrainPreTrainedModel", "build_mixer", "build_mlp"]
