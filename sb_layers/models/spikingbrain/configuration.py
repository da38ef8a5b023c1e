"""SpikingBrainConfig: the released ``gla_swa`` config.json plus this project's variant and spiking options.

Every field of SpikingBrain-7B's released ``config.json`` (facts section 4) is a field here under the same
name, so a released config loads without remote code and saves back in the same layout. Unknown extra
keys of a released file are kept as attributes (``PreTrainedConfig`` behaviour) and written back.

Two model types name the same class of configuration:

- ``"spikingbrain"`` (:class:`SpikingBrainConfig`): what this project writes for its own models.
- ``"gla_swa"`` (:class:`GLASwaConfig`): the release's model type, registered with ``AutoConfig`` so that
  a released directory loads through ``AutoConfig`` / ``AutoModelForCausalLM`` without ``trust_remote_code``.

Variants:

- ``"inter_layer"`` (SpikingBrain-7B): layer ``i`` is sliding-window attention when ``i in attn_layers``,
  gated linear attention otherwise; dense GLU MLPs.
- ``"intra_layer"`` (SpikingBrain-76B style, facts section 5): every layer runs linear attention beside
  softmax attention (sliding-window, or full at ``full_attn_layers``), ``num_sink_tokens`` learnable sink
  tokens, linear-attention gate tied to the key and a sigmoid feature map, MoE FFNs (``num_experts > 0``)
  except at ``dense_ffn_layers``.

Layer indices in this config are 0-based (the release's ``attn_layers`` already are).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from transformers import PreTrainedConfig

from sb_layers.spiking_linear import SpikeCoding, coding_with
from sb_neurons.validation import check_int, check_positive, check_real

VARIANTS = ("inter_layer", "intra_layer")
GLA_GATES = ("low_rank", "merged", "tied_key")
FEATURE_MAPS = ("relu", "sigmoid")
ATTN_MODES = ("chunk", "recurrent", "fla", "auto")
# fla's kernel names in released configs, mapped to our GLA modes (same function, different kernel).
RELEASE_ATTN_MODES = {"fused_chunk": "chunk", "fused_recurrent": "recurrent"}
ACTIVATIONS = ("swish", "silu")
ROUTERS = ("softmax", "sigmoid")
BACKENDS = ("torch", "triton", "auto")


# The flat spike fields of an old config format, now fields of ``coding`` (a SpikeCoding): old key -> field.
# Not read: a keyword, attribute or config.json key of these names raises a ValueError naming coding.<field>.
FLAT_FIELDS = {
    "spike_k": "k", "spike_codec": "codec", "spike_clamp": "clamp", "spike_mode": "mode",
    "weight_bits": "weight_bits", "group_size": "group_size", "spike_backend": "backend",
}


def reject_flat_fields(owner: str, names: Iterable[str]) -> None:
    """A ``ValueError`` naming each old flat key of ``names`` and its ``coding.<field>`` (nothing if none)."""
    old = sorted(name for name in names if name in FLAT_FIELDS)
    if old:
        plural = len(old) > 1
        renamed = ", ".join(f"coding.{FLAT_FIELDS[name]} for {name}" for name in old)
        raise ValueError(
            f"{owner}: the flat spike field{'s' if plural else ''} {', '.join(old)} of an old config format "
            f"{'are' if plural else 'is'} not read; use {renamed} (coding={{...}}, a dict of SpikeCoding fields, or "
            "a SpikeCoding; in config.json a nested \"coding\" dict)"
        )
def _check_layer_list(value: Any, name: str, num_layers: int) -> None:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of layer indices, got {type(value).__name__}")
    for index in value:
        check_int(index, f"{name} entry (num_hidden_layers={num_layers})", minimum=0, maximum=num_layers - 1)
    if len(set(value)) != len(value):
        raise ValueError(f"{name} must not repeat layer indices, got {list(value)}")


class SpikingBrainConfig(PreTrainedConfig):
    """Configuration of :class:`SpikingBrainForCausalLM` (defaults: the released SpikingBrain-7B).

    Released fields (names and defaults as in the release's ``config.json``): ``vocab_size``,
    ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``,
    ``intermediate_size``, ``hidden_act`` (``"swish"`` = SiLU), ``sliding_window`` (keys per query,
    itself included; see :mod:`sb_layers.sliding_window`), ``rope_theta``, ``norm_eps``,
    ``max_position_embeddings``, ``attn_mode`` (GLA form), ``use_short_conv`` (must be False: the release
    does not use it), ``conv_size``, ``attn_layers`` (SWA layers; default the odd ones),
    ``tie_word_embeddings``, ``bos_token_id``, ``eos_token_id``, ``initializer_range``.

    Our fields:
        head_dim: per-head size (default ``hidden_size // num_attention_heads``).
        variant: ``"inter_layer"`` (7B) or ``"intra_layer"`` (76B style).
        gla_gate: ``"low_rank"`` (release float model), ``"merged"`` (release W8ASpike), ``"tied_key"``
            (76B); default by variant. ``gate_low_rank_dim``, ``gate_logit_normalizer``: 16 as released.
        feature_map: ``"relu"`` or ``"sigmoid"`` on linear-attention q/k; default by variant.
        gla_chunk_size: chunk length of the chunked GLA form.
        swa_query_chunk_size: queries per sliding-window attention block (None: all at once); each block
            attends only the keys its window reaches, so a long prefill never builds an ``L x L`` mask.
            Without padding or sinks any int selects the mask-free windowed path instead
            (:func:`sb_layers.attention.windowed_attention`: flash attention on the band only).
            Same function whatever the value.
        prefill_chunk_size: default of ``forward``'s ``prefill_chunk_size`` (None: one piece): in eval
            mode, longer inputs run through the whole stack in pieces of this many tokens, carrying the
            cache, so activation memory stays bounded by the piece. Same function whatever the value.
        num_sink_tokens, full_attn_layers: 76B sink tokens and full-attention layers.
        num_experts (0: dense), num_experts_per_tok, num_shared_experts, router, dense_ffn_layers,
        router_aux_loss_coef: 76B MoE.
        spiking: spike-code projection inputs (W8ASpike activations) with ``coding``.
        coding: the :class:`sb_layers.SpikeCoding` of the projections (``k``, ``clamp``, ``codec``,
            ``mode``, ``weight_bits``, ``group_size``, ``backend``; validated there); a nested dict in
            ``config.json``. Assigning a dict (``config.coding = {"k": 4.0}``, or the override
            ``from_pretrained(path, coding={"k": 4.0})``) updates the fields it names and keeps the others.
        spike_down_proj: also spike-code the MLP ``down_proj`` (the release feeds it unspiked float input).
        spike_qk: spike-code the linear-attention q/k feature maps.
        spike_attention: the release's W8ASpike softmax attention: queries spike-coded per head vector
            (``k = coding.k``) and keys/values int8 per head vector after RoPE, so the SWA cache is int8
            (see :class:`sb_layers.SlidingWindowAttention`, ``spike_query_k``).

    The flat keys ``spike_k``, ``spike_codec``, ``spike_clamp``, ``spike_mode``, ``weight_bits``,
    ``group_size`` and ``spike_backend`` (an old config format; ``coding.k``, ``coding.codec``,
    ``coding.clamp``, ``coding.mode``, ``coding.weight_bits``, ``coding.group_size`` and ``coding.backend``
    here) are not read: as keywords, attributes or ``config.json`` keys they raise a ``ValueError`` naming
    the ``coding`` field.
    """

    model_type = "spikingbrain"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    # --- released config.json fields ---
    vocab_size: int = 152064
    hidden_size: int = 3584
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    intermediate_size: int = 18944
    hidden_act: str = "swish"
    sliding_window: int | None = 4096
    rope_theta: float = 1e6
    norm_eps: float = 1e-6
    max_position_embeddings: int = 131072
    attn_mode: str = "chunk"
    use_short_conv: bool = False
    conv_size: int = 4
    attn_layers: list[int] | None = None
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151643
    # --- ours: architecture ---
    head_dim: int | None = None
    variant: str = "inter_layer"
    gla_gate: str | None = None
    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0
    feature_map: str | None = None
    gla_chunk_size: int = 64
    swa_query_chunk_size: int | None = 1024
    prefill_chunk_size: int | None = None
    num_sink_tokens: int = 0
    full_attn_layers: list[int] | None = None
    num_experts: int = 0
    num_experts_per_tok: int = 1
    num_shared_experts: int = 1
    router: str = "softmax"
    dense_ffn_layers: list[int] | None = None
    router_aux_loss_coef: float = 0.0
    # --- ours: spiking ---
    spiking: bool = False
    coding: SpikeCoding | dict | None = None  # None: SpikeCoding(); a dict updates the current coding
    spike_down_proj: bool = False
    spike_qk: bool = False
    spike_attention: bool = False

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            check_int(getattr(self, name), name, minimum=1)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        check_int(self.num_key_value_heads, "num_key_value_heads", minimum=1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads={self.num_key_value_heads} must divide num_attention_heads={self.num_attention_heads}"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"num_attention_heads={self.num_attention_heads} must divide hidden_size={self.hidden_size} (or set head_dim)"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        check_int(self.head_dim, "head_dim", minimum=1)
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS} (SiLU), got {self.hidden_act!r}")
        if self.sliding_window is not None:
            check_int(self.sliding_window, "sliding_window", minimum=1)
        for name in ("rope_theta", "norm_eps", "gate_logit_normalizer"):
            check_positive(getattr(self, name), name)
        if self.use_short_conv:
            raise ValueError("use_short_conv=True is not supported: SpikingBrain-7B is released without short convolutions")
        if self.attn_mode not in ATTN_MODES and self.attn_mode not in RELEASE_ATTN_MODES:
            raise ValueError(f"attn_mode must be one of {ATTN_MODES + tuple(RELEASE_ATTN_MODES)}, got {self.attn_mode!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        intra = self.variant == "intra_layer"
        if self.attn_layers is None:
            self.attn_layers = [] if intra else list(range(1, self.num_hidden_layers, 2))
        self.attn_layers = list(self.attn_layers)
        _check_layer_list(self.attn_layers, "attn_layers", self.num_hidden_layers)
        self.full_attn_layers = list(self.full_attn_layers or [])
        _check_layer_list(self.full_attn_layers, "full_attn_layers", self.num_hidden_layers)
        self.dense_ffn_layers = list(self.dense_ffn_layers or [])
        _check_layer_list(self.dense_ffn_layers, "dense_ffn_layers", self.num_hidden_layers)
        if self.gla_gate is None:
            self.gla_gate = "tied_key" if intra else "low_rank"
        if self.gla_gate not in GLA_GATES:
            raise ValueError(f"gla_gate must be one of {GLA_GATES}, got {self.gla_gate!r}")
        if self.feature_map is None:
            self.feature_map = "sigmoid" if intra else "relu"
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {self.feature_map!r}")
        check_int(self.gate_low_rank_dim, "gate_low_rank_dim", minimum=1)
        check_int(self.gla_chunk_size, "gla_chunk_size", minimum=1)
        for name in ("swa_query_chunk_size", "prefill_chunk_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        check_int(self.num_sink_tokens, "num_sink_tokens", minimum=0)
        if not intra and (self.num_sink_tokens or self.full_attn_layers or self.num_experts):
            raise ValueError(
                "num_sink_tokens, full_attn_layers and num_experts belong to variant='intra_layer' (76B style)"
            )
        check_int(self.num_experts, "num_experts (0: dense FFNs)", minimum=0)
        if self.num_experts:
            if not 1 <= self.num_experts_per_tok <= self.num_experts:
                raise ValueError(f"num_experts_per_tok must be in [1, num_experts={self.num_experts}], got {self.num_experts_per_tok!r}")
            check_int(self.num_shared_experts, "num_shared_experts", minimum=0)
            if self.router not in ROUTERS:
                raise ValueError(f"router must be one of {ROUTERS}, got {self.router!r}")
        check_real(self.router_aux_loss_coef, "router_aux_loss_coef", minimum=0)
        if self.coding is None:
            self.coding = SpikeCoding()
        reject_flat_fields(type(self).__name__, kwargs)
        super().__post_init__(**kwargs)

    @property
    def gla_mode(self) -> str:
        """The GLA form to run: the release's fla kernel names map to ours."""
        return RELEASE_ATTN_MODES.get(self.attn_mode, self.attn_mode)

    def __setattr__(self, key: str, value: Any) -> None:
        reject_flat_fields(type(self).__name__, (key,))
        if key == "coding" and isinstance(value, dict):
            current = self.__dict__.get("coding")
            value = coding_with(current if isinstance(current, SpikeCoding) else None, value,
                                label=", ".join(f"coding.{name}" for name in value))
        super().__setattr__(key, value)

    def to_dict(self) -> dict[str, Any]:
        """``PreTrainedConfig.to_dict`` with ``coding`` as a nested dict of its fields."""
        output = super().to_dict()
        if isinstance(output.get("coding"), SpikeCoding):
            output["coding"] = output["coding"].to_dict()
        return output

    def spike_coding(self) -> SpikeCoding | None:
        """The :class:`SpikeCoding` of the projections (``coding``), or None when ``spiking`` is off."""
        return self.coding if self.spiking else None

    def is_swa_layer(self, index: int) -> bool:
        """Whether layer ``index`` of the inter-layer variant is sliding-window attention."""
        return index in self.attn_layers

    def is_moe_layer(self, index: int) -> bool:
        return self.num_experts > 0 and index not in self.dense_ffn_layers


class GLASwaConfig(SpikingBrainConfig):
    """The released checkpoint's model type ``"gla_swa"``: the same fields as :class:`SpikingBrainConfig`."""

    model_type = "gla_swa"


__all__ = ["GLASwaConfig", "SpikingBrainConfig"]
