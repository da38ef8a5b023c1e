"""The cost model of SpikingBrain against a dense Transformer of the same shape (the brief's ``R``).

The cost of SpikingBrain relative to a dense Transformer of the same dimensions is modelled as

    R = alpha * (m / n) + (1 - alpha) * a * (k / M),        speedup = 1 / R

- ``alpha`` (attention share): the fraction of the dense baseline's FLOPs spent on attention scores
  (``q k^T`` and ``p v``) at context length ``n``; the rest, ``1 - alpha``, is the linear part
  (projections and FFN).
- ``m / n`` (attended fraction): the attention work SpikingBrain does, as a fraction of full causal
  attention over the same context (sliding windows, linear attention).
- ``a`` (active-neuron fraction) ``= 1 - sparsity``: the share of projection inputs that carry spikes
  (sparsity: the fraction of silent channels, activation elements whose spike count is zero).
  Only event-driven hardware turns it into saved work; on a GPU a spike-coded matmul costs as much as a
  dense one, so ``a = 1`` is the honest figure for GPU runs of the bf16 model.
- ``k / M`` (active-expert fraction): the share of the baseline's linear work that is computed per token
  (top-k routing over M experts).

Each input is either given or derived from the model's shape (:class:`ModelShape`) at each context length.
The FLOP count behind the derived values (2 FLOPs per multiply-add; embeddings, norms, gates, router and
LM head left out: they are small, and time to first token reads one position of the head):

- Attention, per (query, key) pair and layer: ``4 H d`` (``H`` query heads of width ``d``).
  Pairs at context ``n``: ``prefill`` (all ``n`` tokens of a prompt): ``P_full = n (n + 1) / 2`` for full
  causal attention, ``P_swa = sum_i min(i, w)`` for a window of ``w`` keys; ``decode`` (one token after
  ``n - 1`` of context, so ``n`` keys with itself): ``n`` and ``min(n, w)``. A gated-linear-attention
  layer costs per token the state update ``k^T v`` and the read-out ``q S``, ``2 d^2`` multiply-adds per
  head, the cost of attending ``d`` keys; it can also run in its quadratic (parallel) form, so it counts
  ``min(n d, P_full)`` pairs in prefill and ``min(d, n)`` in decode.
- Linear, per token and layer: ``2 D (H d) + 4 D (K d) + 2 (H d) D`` for the q, k, v, o projections
  (``D`` hidden size, ``K`` key-value heads) and ``6 D I`` per FFN (``I`` intermediate size); the
  baseline computes every expert of a MoE layer (``M`` routed plus ``S`` shared), SpikingBrain ``k + S``.
- ``alpha = L * 4 H d * P_full / (L * 4 H d * P_full + T * sum_layers linear)`` with ``T = n`` tokens in
  prefill and 1 in decode; ``m / n = sum_layers pairs(layer) / (L * P_full)`` where a layer's pairs are
  those of each attention it runs (a 76B-style layer runs GLA beside SWA or full attention, so its
  share can exceed 1 at short contexts); ``k / M`` = computed linear FLOPs / baseline linear FLOPs.

Identities: ``R = 1`` when nothing is sparse (``m/n = a = k/M = 1``) for every ``alpha``; ``R`` lies between
``m/n`` and ``a k/M`` (a convex combination), so the speedup is at least 1 when all three are at most 1.

This module is the arithmetic. :mod:`~sb_layers.models.spikingbrain.cost_runs` reads the JSON that
``benchmarks/ttft.py`` writes and puts the theoretical speedups beside the measured ones (Qwen2 time to
first token / ours) per context length; :mod:`~sb_layers.models.spikingbrain.cost_tables` prints both as
the tables of ``spikingbrain estimate`` (:mod:`spikingbrain.estimate`; docs/cost-model.md).

Example (SpikingBrain-7B, whose shape is the default of :class:`ModelShape`)::

    from sb_layers.models.spikingbrain.cost_model import ModelShape, estimate
    from sb_layers.models.spikingbrain.cost_tables import format_estimates

    print(format_estimates([estimate(ModelShape(), n) for n in (4096, 131072)]))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sb_neurons.validation import check_int, check_real

from .configuration import SpikingBrainConfig

_RELEASED = SpikingBrainConfig()  # SpikingBrain-7B as released (facts section 4): the defaults of ModelShape

PHASES = ("prefill", "decode")
"""``prefill``: all ``n`` tokens of a prompt (time to first token); ``decode``: one token after ``n - 1``."""
DEFAULT_CONTEXTS = (4096, 32768, 131072, 524288)
"""The context lengths ``spikingbrain estimate`` shows by default: 4k, 32k, 128k, 512k."""
CONVERTIBLE_MODEL_TYPES = ("qwen2", "llama", "mistral")
"""``model_type`` of the dense Transformers whose config :meth:`ModelShape.from_config` reads as the SpikingBrain
model converted from them (report section 3.1; :meth:`SpikingBrainForCausalLM.from_qwen2`)."""


# --- validation ------------------------------------------------------------------------------------
# --- the cost model --------------------------------------------------------------------------------


def cost_ratio(alpha: float, attended_fraction: float, active_fraction: float = 1.0, expert_fraction: float = 1.0) -> float:
    """``R = alpha * (m/n) + (1 - alpha) * a * (k/M)``: SpikingBrain's cost over the dense baseline's.

    Args:
        alpha: attention share of the baseline's cost, in [0, 1].
        attended_fraction: ``m / n``, >= 0 (at most 1 for one attention per layer).
        active_fraction: ``a = 1 - sparsity``, in [0, 1].
        expert_fraction: ``k / M``, in (0, 1].

    Returns R (>= 0); R = 1 when the last three are 1, whatever ``alpha``.
    """
    alpha = check_real(alpha, "alpha", minimum=0, maximum=1)
    attended_fraction = check_real(attended_fraction, "attended_fraction (m/n)", minimum=0)
    active_fraction = check_real(active_fraction, "active_fraction (a = 1 - sparsity)", minimum=0, maximum=1)
    expert_fraction = check_real(expert_fraction, "expert_fraction (k/M)", minimum=0, maximum=1, open_minimum=True)
    return alpha * attended_fraction + (1.0 - alpha) * active_fraction * expert_fraction


def speedup(alpha: float, attended_fraction: float, active_fraction: float = 1.0, expert_fraction: float = 1.0) -> float:
    """``1 / R`` (:func:`cost_ratio`); ``inf`` when R is 0 (nothing computed at all)."""
    ratio = cost_ratio(alpha, attended_fraction, active_fraction, expert_fraction)
    return math.inf if ratio == 0 else 1.0 / ratio


def _converted_config(config: Any) -> SpikingBrainConfig:
    """The :class:`SpikingBrainConfig` of the SpikingBrain model converted from the dense Transformer of ``config``:
    its widths, the 7B layout's defaults for the rest (as ``spikingbrain_config_from_qwen2``)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in CONVERTIBLE_MODEL_TYPES:
        raise ValueError(
            "ModelShape.from_config takes a SpikingBrainConfig, or the config of a dense Transformer that converts "
            f"to SpikingBrain (model_type one of {', '.join(CONVERTIBLE_MODEL_TYPES)}); got a {type(config).__name__} "
            f"(model_type {model_type!r})"
        )
    heads = config.num_attention_heads
    return SpikingBrainConfig(
        num_hidden_layers=config.num_hidden_layers, hidden_size=config.hidden_size, num_attention_heads=heads,
        num_key_value_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        intermediate_size=config.intermediate_size,
    )


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs of a model (defaults: ``SpikingBrainConfig()``'s, SpikingBrain-7B as released).

    Attributes:
        num_layers: decoder layers ``L``.
        hidden_size: ``D``. num_heads, num_kv_heads, head_dim: ``H``, ``K``, ``d``.
        intermediate_size: ``I``, the FFN width (of one expert).
        gla_layers, swa_layers, full_layers: layers running gated linear attention, sliding-window
            attention and full causal attention. 7B: 14, 14, 0. A 76B-style layer runs GLA beside SWA or
            full attention, so there ``gla_layers = L`` and ``swa_layers + full_layers = L``.
        window: keys per query of the sliding-window layers.
        num_experts: routed experts ``M`` of the MoE layers (0: dense FFNs everywhere).
        experts_per_token: routed experts ``k`` each token uses. shared_experts: ``S``, always used.
        moe_layers: layers whose FFN is a MoE (default: all of them when ``num_experts > 0``).
    """

    # The defaults are read from SpikingBrainConfig's (the released 7B), not restated here.
    num_layers: int = _RELEASED.num_hidden_layers
    hidden_size: int = _RELEASED.hidden_size
    num_heads: int = _RELEASED.num_attention_heads
    num_kv_heads: int = _RELEASED.num_key_value_heads
    head_dim: int = _RELEASED.head_dim
    intermediate_size: int = _RELEASED.intermediate_size
    gla_layers: int = _RELEASED.num_hidden_layers - len(_RELEASED.attn_layers)
    swa_layers: int = len(_RELEASED.attn_layers)
    full_layers: int = 0
    window: int = _RELEASED.sliding_window
    num_experts: int = _RELEASED.num_experts
    experts_per_token: int = 1
    shared_experts: int = 0
    moe_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "window"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("gla_layers", "swa_layers", "full_layers"):
            count = check_int(getattr(self, name), name, minimum=0)
            if count > self.num_layers:
                raise ValueError(f"{name} must be in [0, num_layers={self.num_layers}], got {count}")
        if self.swa_layers + self.full_layers > self.num_layers:
            raise ValueError(
                f"swa_layers + full_layers must be at most num_layers={self.num_layers} (one softmax attention "
                f"per layer), got {self.swa_layers} + {self.full_layers}"
            )
        if self.gla_layers + self.swa_layers + self.full_layers < self.num_layers:
            raise ValueError(
                f"gla_layers + swa_layers + full_layers must cover num_layers={self.num_layers} (every layer "
                f"attends somehow), got {self.gla_layers} + {self.swa_layers} + {self.full_layers}"
            )
        check_int(self.num_experts, "num_experts", minimum=0)
        check_int(self.shared_experts, "shared_experts", minimum=0)
        if self.num_experts:
            check_int(self.experts_per_token, f"experts_per_token (num_experts={self.num_experts})", minimum=1, maximum=self.num_experts)
        if self.moe_layers is not None:
            check_int(self.moe_layers, f"moe_layers (num_layers={self.num_layers})", minimum=0, maximum=self.num_layers)

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """The shape of a :class:`sb_layers.models.spikingbrain.SpikingBrainConfig` (7B or 76B style), or of
        the SpikingBrain model converted from a dense Transformer given by its config (``model_type`` in
        :data:`CONVERTIBLE_MODEL_TYPES`): the Transformer's widths, GLA and SWA layers alternating (SWA at
        the odd layers, window 4096) as in SpikingBrain-7B and the conversion of report section 3.1.

        Raises:
            ValueError: any other config (its class and ``model_type`` named).
        """
        if not isinstance(config, SpikingBrainConfig):
            config = _converted_config(config)
        layers = config.num_hidden_layers
        if config.variant == "inter_layer":
            swa = len(config.attn_layers)
            gla, full = layers - swa, 0
        else:
            full = len(config.full_attn_layers)
            gla, swa = layers, layers - full
        moe = layers - len(config.dense_ffn_layers) if config.num_experts else None
        return cls(
            num_layers=layers, hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
            intermediate_size=config.intermediate_size, gla_layers=gla, swa_layers=swa, full_layers=full,
            window=config.sliding_window or 2**62, num_experts=config.num_experts,
            experts_per_token=config.num_experts_per_tok if config.num_experts else 1,
            shared_experts=config.num_shared_experts if config.num_experts else 0, moe_layers=moe,
        )

    @property
    def num_moe_layers(self) -> int:
        if not self.num_experts:
            return 0
        return self.num_layers if self.moe_layers is None else self.moe_layers

    def attention_flops_per_pair(self) -> int:
        """FLOPs of one (query, key) pair in one layer: ``4 H d`` (``q . k`` and ``p v``)."""
        return 4 * self.num_heads * self.head_dim

    def linear_flops_per_token(self, *, baseline: bool) -> int:
        """Linear FLOPs per token over all layers; ``baseline=True`` computes every expert of a MoE layer."""
        width, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        projections = 2 * self.hidden_size * width + 4 * self.hidden_size * kv + 2 * width * self.hidden_size
        ffn = 6 * self.hidden_size * self.intermediate_size
        moe = self.num_moe_layers
        experts = (self.num_experts if baseline else self.experts_per_token) + self.shared_experts
        return self.num_layers * projections + (self.num_layers - moe) * ffn + moe * experts * ffn


def full_pairs(context: int, phase: str = "prefill") -> int:
    """(query, key) pairs of full causal attention at ``context``: ``n (n + 1) / 2`` in prefill, ``n`` in decode."""
    check_int(context, "context", minimum=1)
    _check_phase(phase)
    return context * (context + 1) // 2 if phase == "prefill" else context


def window_pairs(context: int, window: int, phase: str = "prefill") -> int:
    """Pairs of causal attention limited to ``window`` keys per query (itself included)."""
    check_int(context, "context", minimum=1)
    check_int(window, "window", minimum=1)
    _check_phase(phase)
    if phase == "decode":
        return min(context, window)
    if context <= window:
        return context * (context + 1) // 2
    return window * (window + 1) // 2 + (context - window) * window


def linear_attention_pairs(context: int, head_dim: int, phase: str = "prefill") -> int:
    """Pair-equivalents of a GLA layer: ``d`` keys' worth per token, or the quadratic form if cheaper."""
    check_int(head_dim, "head_dim", minimum=1)
    if phase == "decode":
        return min(head_dim, full_pairs(context, phase))
    return min(context * head_dim, full_pairs(context, phase))


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")


def attention_share(shape: ModelShape, context: int, phase: str = "prefill") -> float:
    """``alpha``: attention-score FLOPs over all FLOPs of the dense full-attention baseline at ``context``."""
    attention = shape.num_layers * shape.attention_flops_per_pair() * full_pairs(context, phase)
    tokens = context if phase == "prefill" else 1
    linear = tokens * shape.linear_flops_per_token(baseline=True)
    return attention / (attention + linear)


def attended_fraction(shape: ModelShape, context: int, phase: str = "prefill") -> float:
    """``m / n``: SpikingBrain's attention pairs (GLA as pair-equivalents) over the baseline's ``L P_full``."""
    full = full_pairs(context, phase)
    pairs = (
        shape.full_layers * full
        + shape.swa_layers * window_pairs(context, shape.window, phase)
        + shape.gla_layers * linear_attention_pairs(context, shape.head_dim, phase)
    )
    return pairs / (shape.num_layers * full)


def expert_fraction(shape: ModelShape) -> float:
    """``k / M``: linear FLOPs computed per token over the baseline's (every expert); 1 without MoE."""
    return shape.linear_flops_per_token(baseline=False) / shape.linear_flops_per_token(baseline=True)


@dataclass(frozen=True)
class Estimate:
    """One context length's inputs, where each came from (``"given"`` or ``"derived"``), R and 1/R."""

    context: int
    phase: str
    alpha: float
    attended_fraction: float
    active_fraction: float
    expert_fraction: float
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def cost_ratio(self) -> float:
        return cost_ratio(self.alpha, self.attended_fraction, self.active_fraction, self.expert_fraction)

    @property
    def speedup(self) -> float:
        return speedup(self.alpha, self.attended_fraction, self.active_fraction, self.expert_fraction)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_ratio": self.cost_ratio, "speedup": self.speedup}


def active_from_sparsity(sparsity: float) -> float:
    """``a = 1 - sparsity`` (sparsity in [0, 1], e.g. the report's 0.6915 at T = 3)."""
    return 1.0 - check_real(sparsity, "sparsity", minimum=0, maximum=1)


def estimate(
    shape: ModelShape,
    context: int,
    *,
    phase: str = "prefill",
    alpha: float | None = None,
    attended: float | None = None,
    active: float | None = None,
    experts: float | None = None,
) -> Estimate:
    """The cost model at ``context``: each input given (not None) or derived from ``shape`` (``active``: 1)."""
    if not isinstance(shape, ModelShape):
        raise TypeError(f"shape must be a ModelShape, got {type(shape).__name__}")
    check_int(context, "context", minimum=1)
    _check_phase(phase)
    values = {
        "alpha": (alpha, lambda: attention_share(shape, context, phase)),
        "attended_fraction": (attended, lambda: attended_fraction(shape, context, phase)),
        "active_fraction": (active, lambda: 1.0),
        "expert_fraction": (experts, lambda: expert_fraction(shape)),
    }
    resolved = {name: (given if given is not None else derive()) for name, (given, derive) in values.items()}
    sources = {name: ("given" if given is not None else "derived") for name, (given, _) in values.items()}
    if active is None:
        sources["active_fraction"] = "dense (no spike sparsity given)"
    result = Estimate(context=context, phase=phase, sources=sources, **resolved)
    result.cost_ratio  # noqa: B018 - validates the inputs (ranges named in the errors)
    return result


__all__ = [
    "CONVERTIBLE_MODEL_TYPES",
    "DEFAULT_CONTEXTS",
    "PHASES",
    "Estimate",
    "ModelShape",
    "active_from_sparsity",
    "attended_fraction",
    "attention_share",
    "cost_ratio",
    "estimate",
    "expert_fraction",
    "full_pairs",
    "linear_attention_pairs",
    "speedup",
    "window_pairs",
]
