"""GLU feed-forward and mixture of experts, with upcycling from a dense GLU (facts section 5).

- :class:`GLUMLP`: ``down_proj(act(gate_proj(x)) * up_proj(x))``, no biases (the release's MLP, with
  ``act = silu``; the GELU variants and ReLU of other HuggingFace GLU models too, :data:`ACTIVATIONS`).
- :class:`MoE`: ``N`` routed GLU experts chosen top-k per token by a softmax or sigmoid router, plus
  ``S`` shared experts every token uses; a load-balancing auxiliary loss and per-expert load statistics.
- :func:`upcycle`: a MoE whose experts all start as copies of a dense GLU, rescaled so that the MoE
  computes exactly the dense function at initialization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sb_kernels import silu_mul
from sb_neurons.validation import check_float_tensor, check_int

from .spiking_linear import SpikeCoding, make_linear

RouterKind = Literal["softmax", "sigmoid"]

# The gate activations of GLU MLPs, by the names of transformers' ``hidden_act`` (its ACT2FN table).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def check_activation(activation: object) -> str:
    """``activation`` as a key of :data:`ACTIVATIONS`; ``ValueError`` naming the known ones otherwise."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def check_routing(num_experts: object, top_k: object, num_shared: object, router: object) -> None:
    """The routing arguments of a :class:`MoE`: ``num_experts >= 1``, ``1 <= top_k <= num_experts``,
    ``num_shared >= 0`` and a router of :data:`RouterKind`; ``ValueError`` naming the argument otherwise."""
    check_int(num_experts, "num_experts", minimum=1)
    check_int(top_k, f"top_k (num_experts={num_experts})", minimum=1, maximum=num_experts)
    check_int(num_shared, "num_shared", minimum=0)
    if router not in ("softmax", "sigmoid"):
        raise ValueError(f"router must be 'softmax' or 'sigmoid', got {router!r}")


class GLUMLP(nn.Module):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``: ``[..., hidden] -> [..., hidden]``.

    ``coding`` spike-codes the three projections' inputs (None: dense). ``activation``: a name of
    :data:`ACTIVATIONS` (``"silu"``, the release's, runs the fused ``silu_mul``).
    """

    def __init__(
        self, hidden_size: int, intermediate_size: int, coding: SpikeCoding | None = None, device=None, dtype=None,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        for name, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
            check_int(value, name, minimum=1)
        factory = dict(device=device, dtype=dtype)
        self.activation = check_activation(activation)
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size
        self.gate_proj = make_linear(hidden_size, intermediate_size, False, coding, **factory)
        self.up_proj = make_linear(hidden_size, intermediate_size, False, coding, **factory)
        self.down_proj = make_linear(intermediate_size, hidden_size, False, coding, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", finite=False)  # float math: NaN and Inf propagate
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"input's last dimension must be hidden_size={self.hidden_size}, got shape {tuple(x.shape)}")
        if self.activation in ("silu", "swish"):
            return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(ACTIVATIONS[self.activation](self.gate_proj(x)) * self.up_proj(x))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class MoE(nn.Module):
    """Mixture of GLU experts: ``y = sum_shared E_s(x) + sum_{i in topk(p)} p_i E_i(x)``.

    Router ``p = softmax(W_r x)`` or ``sigmoid(W_r x)`` over ``num_experts``; the top ``top_k`` experts of
    each token run, weighted by their (unrenormalized) router probabilities.

    After each forward:
        ``aux_loss``: the Switch-Transformer load-balancing loss ``N * sum_i f_i P_i`` (``f_i`` the
        fraction of routed token slots sent to expert i, ``P_i`` its mean router probability; 1 when
        balanced), differentiable through ``P``.
        ``expert_load``: ``f`` as a tensor ``[N]`` (sums to 1), and :attr:`routing_skew` = max/mean load.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_experts: int,
        top_k: int = 1,
        num_shared: int = 0,
        router: RouterKind = "softmax",
        coding: SpikeCoding | None = None,
        device=None,
        dtype=None,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        check_int(hidden_size, "hidden_size", minimum=1)
        check_routing(num_experts, top_k, num_shared, router)
        factory = dict(device=device, dtype=dtype)
        self.hidden_size, self.num_experts, self.top_k, self.router_kind = hidden_size, num_experts, top_k, router
        self.router = nn.Linear(hidden_size, num_experts, bias=False, **factory)
        experts = dict(coding=coding, activation=activation, **factory)
        self.experts = nn.ModuleList(GLUMLP(hidden_size, intermediate_size, **experts) for _ in range(num_experts))
        self.shared_experts = nn.ModuleList(GLUMLP(hidden_size, intermediate_size, **experts) for _ in range(num_shared))
        self.aux_loss: torch.Tensor | None = None
        self.expert_load: torch.Tensor | None = None

    @property
    def routing_skew(self) -> float:
        """Largest expert load over the mean load (1 when perfectly balanced)."""
        if self.expert_load is None:
            raise RuntimeError("routing_skew is known after a forward pass")
        return float(self.expert_load.max() * self.num_experts)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probs [T, N], top-k weights [T, k], top-k indices [T, k])`` for tokens ``x [T, hidden]``."""
        logits = self.router(x)
        logits = logits.double() if logits.dtype == torch.float64 else logits.float()
        probs = logits.softmax(-1) if self.router_kind == "softmax" else torch.sigmoid(logits)
        weights, indices = probs.topk(self.top_k, dim=-1)
        return probs, weights, indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", finite=False)  # float math: NaN and Inf propagate
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"input's last dimension must be hidden_size={self.hidden_size}, got shape {tuple(x.shape)}")
        tokens = x.reshape(-1, self.hidden_size)
        probs, weights, indices = self.route(tokens)
        out = torch.zeros_like(tokens)
        for expert_id, expert in enumerate(self.experts):
            token_ids, slot = torch.nonzero(indices == expert_id, as_tuple=True)
            if token_ids.numel():
                contribution = expert(tokens[token_ids]) * weights[token_ids, slot, None].to(tokens.dtype)
                out = out.index_add(0, token_ids, contribution)
        for expert in self.shared_experts:
            out = out + expert(tokens)
        counts = torch.bincount(indices.flatten(), minlength=self.num_experts).to(probs.dtype)
        self.expert_load = counts / counts.sum()
        self.aux_loss = self.num_experts * (self.expert_load * probs.mean(0)).sum()
        return out.reshape(x.shape)


def upcycle(
    dense_mlp: GLUMLP,
    num_experts: int,
    top_k: int = 1,
    num_shared: int = 1,
    router: RouterKind = "softmax",
    scaling: Literal["exact", "report"] = "exact",
) -> MoE:
    """A :class:`MoE` whose experts are copies of ``dense_mlp`` (report Eq. 15-18).

    The router starts at zero, so every token gives each expert the same probability ``p0``
    (``1/N`` softmax, ``1/2`` sigmoid) and, before rescaling, the MoE output is ``(S + k p0) E(x)`` for
    the dense GLU ``E`` (the report's ``a_MoE = (S + k/N) a_dense``). Each expert is rescaled by
    ``c = 1 / (S + k p0)``:

    - ``scaling="exact"`` (default) scales the two linear factors ``up_proj`` and ``down_proj`` by
      ``c^(1/2)`` each. Identity: ``upcycle(mlp, ...)(x) == mlp(x)`` for every ``x`` (to float
      rounding), whatever N, k, S, router and gate activation (it acts on ``gate_proj``, left as is).
    - ``scaling="report"`` scales all three matrices by ``alpha = c^(1/3)`` as the report does
      (alpha = 0.98 for S = 1, k = 1, N = 16). That is exact only for a homogeneous activation; with
      SiLU inside ``silu(alpha * gate x)`` the MoE equals the dense MLP only approximately.

    The dense module is not modified; expert projections keep its spike coding.
    """
    if not isinstance(dense_mlp, GLUMLP):
        raise TypeError(f"dense_mlp must be a GLUMLP, got {type(dense_mlp).__name__}")
    if scaling not in ("exact", "report"):
        raise ValueError(f"scaling must be 'exact' or 'report', got {scaling!r}")
    ref = dense_mlp.gate_proj.weight
    moe = MoE(
        dense_mlp.hidden_size, dense_mlp.intermediate_size, num_experts, top_k, num_shared, router,
        coding=getattr(dense_mlp.gate_proj, "coding", None), device=ref.device, dtype=ref.dtype,
        activation=dense_mlp.activation,
    )
    p0 = 1.0 / num_experts if router == "softmax" else 0.5
    c = 1.0 / (num_shared + top_k * p0)
    if scaling == "exact":
        factors = {"up_proj": c**0.5, "down_proj": c**0.5}
    else:
        factors = dict.fromkeys(("gate_proj", "up_proj", "down_proj"), c ** (1 / 3))
    with torch.no_grad():
        moe.router.weight.zero_()
        for expert in list(moe.experts) + list(moe.shared_experts):
            expert.load_state_dict(dense_mlp.state_dict())
            for name, factor in factors.items():
                getattr(expert, name).weight.mul_(factor)
            for projection in (expert.gate_proj, expert.up_proj, expert.down_proj):
                if getattr(projection, "weight_quantizer", None) is not None:
                    projection.calibrate_weight_scales()  # the copied scales belong to the unscaled weight
    return moe
