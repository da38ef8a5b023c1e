"""W8ASpike: spike-coded activations and int8 weight groups for a SpikingBrain model (facts section 4).

:func:`to_w8aspike` rebuilds a float :class:`SpikingBrainForCausalLM` in the release's W8ASpike layout:

- spike-coded :class:`sb_layers.SpikingLinear` projections (adaptive threshold ``mean|x| / k`` per token
  row, ``k = 3``; bidirectional bitwise spike trains in ``"spike"`` mode) for GLA q/k/v/o and its gate,
  SWA q/k/v/o, and the MLP gate/up projections;
- symmetric int8 weights per group of ``group_size = 128`` input features, with the release's
  ``weight_quantizer.scales`` buffers ``(out, in / group, 1)``;
- the GLA low-rank gate pair merged into one ``gk_proj`` (``W = W1 W0``, ``b = b1``), as released;
- MLP ``down_proj`` kept float and unspiked, as the release's forward runs it;
- SWA attention as released (``spike_attention``): queries spike-coded per head vector with the same
  ``k``, keys and values int8 per head vector after RoPE (the INT8 KV cache).

:func:`sb_layers.record_spikes` runs a converted model on calibration batches (the release calibrates on
128 text samples) and reports its spike statistics as a :class:`sb_layers.SpikingReport` (its
``by_projection``: the statistics of the report's Fig. 9); :func:`plot_spike_report` draws them beside the
report's own 7B figures (the ``FIG9_*`` constants).

:func:`pack_int8` turns a W8ASpike model's spiking projections into :class:`sb_layers.Int8SpikingLinear`
layers that hold int8 codes (and the residual of the codes past int8) instead of float weights: on a CPU
they run the integer path of ``sb_kernels.w8aspike_linear_cpu``. :func:`resident_bytes` counts what a
model holds (parameters and buffers, by dtype), also for a model built on the meta device.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import torch

from sb_layers.report import SpikingReport, projection_kind, spiking_layers
from sb_layers.int8_linear import Int8SpikingLinear
from sb_layers.spiking_linear import WeightQuantizer, coding_with
from sb_neurons.validation import check_int

from .configuration import SpikingBrainConfig
from .modeling import SpikingBrainForCausalLM

_LOW_RANK_GATE = re.compile(r"^(.*\.attn\.(?:linear_attn\.)?gk_proj)\.0\.weight$")


def w8aspike_config(
    config: SpikingBrainConfig,
    *,
    k: float = 3.0,
    group_size: int | None = 128,
    codec: str = "bitwise_bidirectional",
    weight_bits: int = 8,
    mode: str = "count",
    attention: bool = True,
) -> SpikingBrainConfig:
    """A copy of ``config`` with the W8ASpike fields set (the low-rank GLA gate becomes the merged one;
    ``attention`` switches on the release's spiking-query, int8-KV softmax attention)."""
    if not isinstance(config, SpikingBrainConfig):
        raise TypeError(f"config must be a SpikingBrainConfig, got {type(config).__name__}")
    converted = copy.deepcopy(config)
    converted.spiking = True
    converted.coding = dict(k=k, codec=codec, weight_bits=weight_bits, group_size=group_size, mode=mode)  # validated
    converted.spike_down_proj = False
    converted.spike_attention = bool(attention)
    if converted.gla_gate == "low_rank":
        converted.gla_gate = "merged"
    return converted


def merge_low_rank_gates(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every ``gk_proj.{0,1}`` pair replaced by one ``gk_proj`` linear of the same function.

    ``gk_proj.1(gk_proj.0(x)) = W1 (W0 x) + b1 = (W1 W0) x + b1``; the product is taken in float64 and
    cast back to the stored dtype.
    """
    merged = dict(state)
    for name in list(state):
        match = _LOW_RANK_GATE.match(name)
        if not match:
            continue
        prefix = match.group(1)
        down, up, bias = state[f"{prefix}.0.weight"], state[f"{prefix}.1.weight"], state[f"{prefix}.1.bias"]
        merged[f"{prefix}.weight"] = (up.double() @ down.double()).to(down.dtype)
        merged[f"{prefix}.bias"] = bias.clone()
        for key in (f"{prefix}.0.weight", f"{prefix}.1.weight", f"{prefix}.1.bias"):
            del merged[key]
    return merged


@torch.no_grad()
def to_w8aspike(
    model: SpikingBrainForCausalLM,
    *,
    k: float = 3.0,
    group_size: int | None = 128,
    codec: str = "bitwise_bidirectional",
    mode: str = "count",
    attention: bool = True,
) -> SpikingBrainForCausalLM:
    """The W8ASpike version of a float ``model`` (a new model; ``model`` is left unchanged).

    Args:
        model: a float (``spiking=False``) :class:`SpikingBrainForCausalLM`.
        k: threshold divisor (3.0 as released). group_size: input features per weight scale (128 as
            released; must divide every projection's input width). codec: spike-train coding of
            ``mode="spike"`` (bidirectional bitwise as released). mode: ``"count"`` or ``"spike"``.
        attention: also run the SWA layers' attention as released (queries spike-coded per head vector
            with ``k``, keys and values int8 per head vector: the INT8 KV cache); False keeps it float.

    Weight scales are ``max|w_group| / 127`` of the source weights (the merged gate's of the product).
    Thresholds are adaptive per token, so nothing is fitted on data: the release's calibration pass over
    128 text samples only records spike statistics, which ``sb_layers.record_spikes(converted, batches)``
    does.
    """
    if not isinstance(model, SpikingBrainForCausalLM):
        raise TypeError(f"model must be a SpikingBrainForCausalLM, got {type(model).__name__}")
    if model.config.spiking:
        raise ValueError("model is already spike-coded (config.spiking=True); convert its float original")
    config = w8aspike_config(model.config, k=k, group_size=group_size, codec=codec, mode=mode, attention=attention)
    reference = model.lm_head.weight
    converted = SpikingBrainForCausalLM.build(config, device="meta", dtype=reference.dtype)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    if model.config.gla_gate == "low_rank":
        state = merge_low_rank_gates(state)
    for name, layer in spiking_layers(converted).items():
        # Scales are computed here, on the weights' device: the meta-built layers cannot derive them.
        quantizer = WeightQuantizer(layer.out_features, layer.in_features, config.coding.weight_bits, config.coding.group_size)
        weight = state[f"{name}.weight"]
        quantizer.to(weight.device).calibrate(weight)
        state[f"{name}.weight_quantizer.scales"] = quantizer.scales
    converted.load_state_dict(state, strict=True, assign=True)
    converted.to(reference.device).eval()
    return converted


@torch.no_grad()
def repack_per_channel(model: SpikingBrainForCausalLM) -> SpikingBrainForCausalLM:
    """A copy of the W8ASpike ``model`` whose int8 weights carry one scale per output channel instead of
    one per group of inputs (``model`` is left unchanged). An explicit option, never a default.

    Why: with the release's group-128 scales the integer GEMM rescales every group's sum, which kept it
    below bf16 speed on Hopper (docs/kernels.md, "W8ASpike GEMM"); with one scale per output channel the
    whole sum stays an integer and the same GEMM measured 1.37-1.48x bf16 (H100, MLP shapes, M = 32768).
    What it costs: every weight the model uses, ``W = q_g * s_g`` (the release's values), becomes
    ``round(W / s_c) * s_c`` with ``s_c = max|W[n, :]| / 127``: at most ``s_c / 2`` from ``W``, and
    ``s_c`` is the row's largest group scale, so rows whose groups differ in range lose resolution.
    Measure the logit drift on your model before using it (``benchmarks/repack_drift.py`` does on a
    small trained one).

    Identity: each repacked weight is within half its new scale of the weight ``model`` uses, and the
    new scales are ``max_g s_g * max|q_g| / 127`` per row.
    """
    if not isinstance(model, SpikingBrainForCausalLM):
        raise TypeError(f"model must be a SpikingBrainForCausalLM, got {type(model).__name__}")
    layers = spiking_layers(model)
    if not model.config.spiking or not layers or any(layer.weight_quantizer is None for layer in layers.values()):
        raise ValueError("model must be a W8ASpike model (to_w8aspike or the release's checkpoint) with int8 weights")
    repacked = copy.deepcopy(model)
    repacked.config.coding = {"group_size": None}
    for layer in spiking_layers(repacked).values():
        released = layer.effective_weight().detach()
        quantizer = WeightQuantizer(layer.out_features, layer.in_features, layer.weight_quantizer.bits, None)
        quantizer.to(released.device).calibrate(released)
        layer.weight_out_in().copy_(released)
        layer.weight_quantizer = quantizer
        layer.coding = dataclasses.replace(layer.coding, group_size=None)
    return repacked


@torch.no_grad()
def pack_int8(model: SpikingBrainForCausalLM, *, backend: str = "auto") -> SpikingBrainForCausalLM:
    """Replace, in place, every weight-quantized spiking projection of ``model`` by its
    :class:`sb_layers.Int8SpikingLinear` (int8 codes, residual, scales, bias; the float weight is dropped)
    and return ``model``.

    The packed model computes the same function: the codes are each layer's ``int8_codes()``, exactly.
    ``backend`` becomes every packed layer's ``coding.backend`` and the config's: ``"auto"`` (the
    default) runs the integer CPU path on CPU tensors and the Triton kernel on CUDA; ``"torch"`` keeps
    the release's fake quantization (weights dequantized per call). Other layers (embeddings, norms, the
    unspiked ``down_proj``, ``lm_head``) keep their float weights. A model built on the meta device packs
    to meta int8 codes without residual entries (shapes only: what :func:`resident_bytes` counts).
    """
    if not isinstance(model, SpikingBrainForCausalLM):
        raise TypeError(f"model must be a SpikingBrainForCausalLM, got {type(model).__name__}")
    if backend not in ("torch", "triton", "auto"):
        raise ValueError(f"backend must be 'torch', 'triton' or 'auto', got {backend!r}")
    layers = {name: layer for name, layer in spiking_layers(model).items() if layer.weight_quantizer is not None}
    if not model.config.spiking or not layers:
        raise ValueError("model must be a W8ASpike model (to_w8aspike or the release's checkpoint) with int8 weights")
    for name, layer in layers.items():
        packed = layer if isinstance(layer, Int8SpikingLinear) else Int8SpikingLinear.from_spiking_linear(layer)
        packed.coding = dataclasses.replace(packed.coding, backend=backend)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, packed)
    model.config.coding = coding_with(model.config.coding, {"backend": backend})
    return model


def resident_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of every parameter and buffer of ``model`` (each storage counted once, shared ones too),
    by dtype name (``"int8"``, ``"bfloat16"``, ...) and in all (``"total"``). Meta tensors count as
    their shape and dtype would on a device, so a model built on ``"meta"`` is measured without memory.
    Python-side caches (int8 copies a :class:`sb_layers.SpikingLinear` keeps) are not counted."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: set[tuple] = set()
    sizes: dict[str, int] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        # Tied weights (lm_head / embeddings) are one tensor; views of one storage count once.
        key = (id(tensor),) if tensor.is_meta else (tensor.untyped_storage().data_ptr(), tensor.device)
        if key in seen:
            continue
        seen.add(key)
        name = str(tensor.dtype).removeprefix("torch.")
        nbytes = tensor.numel() * tensor.element_size() if tensor.is_meta else tensor.untyped_storage().nbytes()
        sizes[name] = sizes.get(name, 0) + nbytes
    sizes["total"] = sum(sizes.values())
    return sizes


# The report's Fig. 9 figures for SpikingBrain-7B under bitwise-ternary spike coding (arXiv 2509.05276,
# "SpikingBrain: Spiking Brain-inspired Large Models", Fig. 9 and its text), drawn by plot_spike_report
# beside ours. They are published figures of the real 7B, not targets: a small or random model spikes
# differently.
FIG9_LABEL = "report (Fig. 9)"
FIG9_MEAN_SPIKES_PER_CHANNEL = 1.13  # mean spikes per activation channel
FIG9_SILENT_PERCENT = 18.4  # channels with no spike, in percent
FIG9_WITHIN_7 = 0.941  # share of |count| within [0, 7]
FIG9_ABOVE_16 = 0.01  # share of |count| above 16 ("about 1%")


def plot_spike_report(report: SpikingReport, max_count: int = 16):
    """The report's Fig. 9 layout for ``report``, with SpikingBrain-7B's published figures beside ours.

    Panels: the |count| histogram (bars ``0 .. max_count`` and one for ``> max_count``; the ``[0, 7]``
    band shaded, with our share and the report's 94.1%; with ``max_count = 16``, the default, the
    report's ~1% above 16 is marked on the ``> 16`` bar), then mean spikes per channel and silent
    channels per projection (bars), each with our overall value (dashed, ``"all (ours)"``) and the
    report's 1.13 / 18.4% (dotted, labelled :data:`FIG9_LABEL`). The reference figures are the module's
    ``FIG9_*`` constants. Legends sit below the panels, clear of every bar.

    Returns the matplotlib ``Figure`` (nothing is shown or saved).
    """
    if not isinstance(report, SpikingReport):
        raise TypeError(f"report must be a SpikingReport, got {type(report).__name__}")
    check_int(max_count, "max_count", minimum=1)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    total = report.total
    histogram = total.count_histogram.double()
    shares = (histogram[: max_count + 1] / histogram.sum()).tolist()
    above = 1.0 - total.fraction_of_counts_at_most(max_count)
    names = list(report.by_projection)
    legend = dict(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)

    fig, (ax_hist, ax_mean, ax_silent) = plt.subplots(1, 3, figsize=(14, 4.8), layout="constrained")
    ax_hist.bar(range(len(shares)), shares, color="tab:blue", label="ours")
    ax_hist.bar([max_count + 1], [above], color="tab:gray", label=f"ours, > {max_count}: {above:.1%}")
    ax_hist.axvspan(-0.5, min(7, max_count) + 0.5, color="tab:green", alpha=0.1,
                    label=f"|count| in [0, 7]: ours {total.fraction_of_counts_at_most(7):.1%}, "
                          f"{FIG9_LABEL} {FIG9_WITHIN_7:.1%}")
    if max_count == 16:  # the report's figure is for |count| > 16: only comparable with this bar
        ax_hist.scatter([max_count + 1], [FIG9_ABOVE_16], marker="_", s=400, color="tab:red", zorder=3,
                        label=f"{FIG9_LABEL}: ~{FIG9_ABOVE_16:.0%} above 16")
    ticks = list(range(0, max_count, max(1, max_count // 8)))  # max_count itself would crowd the "> max_count" tick
    ax_hist.set_xticks(ticks + [max_count + 1], [str(t) for t in ticks] + [f">{max_count}"])
    ax_hist.set(xlabel="|spike count| per channel", ylabel="share of channels", title="spike count distribution")
    ax_hist.legend(**legend)

    ax_mean.barh(names, [s.mean_spikes_per_channel for s in report.by_projection.values()], color="tab:blue")
    ax_mean.axvline(total.mean_spikes_per_channel, color="k", ls="--", label=f"all (ours): {total.mean_spikes_per_channel:.2f}")
    ax_mean.axvline(FIG9_MEAN_SPIKES_PER_CHANNEL, color="tab:red", ls=":", lw=2,
                    label=f"{FIG9_LABEL}, SpikingBrain-7B: {FIG9_MEAN_SPIKES_PER_CHANNEL:.2f}")
    ax_mean.set(xlabel="mean spikes per channel", title="spikes per channel")
    ax_mean.legend(**legend)

    ax_silent.barh(names, [100 * s.silent_channel_fraction for s in report.by_projection.values()], color="tab:blue")
    ax_silent.axvline(100 * total.silent_channel_fraction, color="k", ls="--",
                      label=f"all (ours): {total.silent_channel_fraction:.1%}")
    ax_silent.axvline(FIG9_SILENT_PERCENT, color="tab:red", ls=":", lw=2,
                      label=f"{FIG9_LABEL}, SpikingBrain-7B: {FIG9_SILENT_PERCENT:.1f}%")
    ax_silent.set(xlabel="silent channels (%)", title="silent channels")
    ax_silent.tick_params(labelleft=False)  # the same projections as the middle panel
    ax_silent.legend(**legend)
    fig.suptitle("W8ASpike spike report in the layout of the report's Fig. 9: ours beside SpikingBrain-7B's figures", fontsize=11)
    return fig


__all__ = [
    "FIG9_ABOVE_16",
    "FIG9_LABEL",
    "FIG9_MEAN_SPIKES_PER_CHANNEL",
    "FIG9_SILENT_PERCENT",
    "FIG9_WITHIN_7",
    "SpikingReport",
    "merge_low_rank_gates",
    "pack_int8",
    "plot_spike_report",
    "projection_kind",
    "repack_per_channel",
    "resident_bytes",
    "spiking_layers",
    "to_w8aspike",
    "w8aspike_config",
]
