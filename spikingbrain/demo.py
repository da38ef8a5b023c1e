"""``spikingbrain demo``: spike-code LLM-like activations and report what the spikes cost.

Everything runs on the CPU from built-in defaults in a few seconds; nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sb_layers import SpikeCoding, SpikingLinear
from sb_neurons import CODEC_NAMES, energy_estimate, get_codec, spike_count, spike_stats

RASTER_CHANNELS = 48
RASTER_CODEC = "bitwise_bidirectional"


def synthetic_activations(tokens: int = 256, features: int = 1024, seed: int = 0) -> torch.Tensor:
    """Reproducible heavy-tailed activations shaped like an LLM projection input, float32 ``[tokens, features]``.

    Student-t (3 degrees of freedom) entries, plus a few outlier channels scaled up 20x: the
    massive-activation channels that make spike counts burst (facts section 3).
    """
    generator = torch.Generator().manual_seed(seed)
    # torch.distributions has no generator argument; draw t(3) as normal / sqrt(chi2(3) / 3) instead.
    normal = torch.randn(tokens, features, generator=generator)
    chi2 = torch.randn(3, tokens, features, generator=generator).pow(2).sum(0)
    x = normal / torch.sqrt(chi2 / 3.0)
    outliers = torch.randperm(features, generator=generator)[: max(1, features // 256)]
    x[:, outliers] *= 20.0
    return x


@dataclass(frozen=True)
class DemoRow:
    k: float
    codec: str
    time_steps: int
    firing_rate: float
    sparsity: float
    mean_spikes_per_activation: float
    silent_activation_fraction: float
    relative_error: float
    energy_pj_per_mac: float
    saving_vs_fp16: float
    saving_vs_int8: float


def codec_counts(counts: torch.Tensor, codec: str) -> torch.Tensor:
    """Counts as the codec can carry them: an unsigned codec (binary, bitwise) has no negative spikes,
    so a signed count becomes an on/off pair of channels (positive part, negative part)."""
    if not get_codec(codec).signed:
        return torch.cat([counts.clamp(min=0), (-counts).clamp(min=0)], dim=-1)
    return counts


def spike_code_table(x: torch.Tensor, ks: Sequence[float]) -> list[DemoRow]:
    """One row per (k, codec): spike statistics, reconstruction error and energy of coding ``x``."""
    rows = []
    for k in ks:
        counts, v_th = spike_count(x, k)
        relative_error = float(torch.linalg.vector_norm(counts * v_th - x) / torch.linalg.vector_norm(x))
        silent_fraction = float((counts == 0).to(torch.float64).mean())  # a zero count never spikes
        for name in CODEC_NAMES:
            # Statistics straight from the counts: the trains of binary/ternary coding are as long as
            # the largest burst, too large to materialize for nothing.
            stats = spike_stats(counts=codec_counts(counts, name), codec=name)
            # Per activation, not per coded channel: an on/off pair is one activation, whose layer
            # input spends one add per spike of either channel.
            spikes_per_activation = stats.total_spikes / counts.numel()
            energy = energy_estimate(spikes_per_activation)
            rows.append(
                DemoRow(
                    k=k,
                    codec=name,
                    time_steps=stats.time_steps,
                    firing_rate=stats.firing_rate,
                    sparsity=stats.sparsity,
                    mean_spikes_per_activation=spikes_per_activation,
                    silent_activation_fraction=silent_fraction,
                    relative_error=relative_error,
                    energy_pj_per_mac=energy.spiking_pj_per_mac,
                    saving_vs_fp16=energy.saving_vs_fp16,
                    saving_vs_int8=energy.saving_vs_int8,
                )
            )
    return rows


@dataclass(frozen=True)
class LayerCheck:
    """A spike-coded projection against its dense twin on the demo's activations."""

    k: float
    relative_error_vs_dense: float
    spike_vs_count_max_abs: float
    firing_rate: float
    mean_spikes_per_channel: float
    silent_channel_fraction: float


def spiking_layer_check(x: torch.Tensor, ks: Sequence[float], out_features: int = 256, seed: int = 0) -> list[LayerCheck]:
    """Run a random projection densely and spike-coded (count and event-driven spike modes, W8ASpike
    int8 weights) on ``x``: agreement with the dense output and the input's spike statistics."""
    torch.manual_seed(seed)
    dense = torch.nn.Linear(x.shape[-1], out_features)
    checks = []
    with torch.no_grad():
        reference = dense(x)
        for k in ks:
            coding = dict(k=k, codec="bitwise_bidirectional", weight_bits=8, group_size=128 if x.shape[-1] % 128 == 0 else None)
            count = SpikingLinear.from_linear(dense, SpikeCoding(mode="count", **coding), record_stats=True)
            spike = SpikingLinear.from_linear(dense, SpikeCoding(mode="spike", **coding))
            y_count, y_spike = count(x), spike(x)
            stats = count.spike_stats
            checks.append(
                LayerCheck(
                    k=k,
                    relative_error_vs_dense=float((y_count - reference).norm() / reference.norm()),
                    spike_vs_count_max_abs=float((y_spike - y_count).abs().max()),
                    firing_rate=stats.firing_rate,
                    mean_spikes_per_channel=stats.mean_spikes_per_channel,
                    silent_channel_fraction=stats.silent_channel_fraction,
                )
            )
    return checks


def format_layer_checks(checks: Sequence[LayerCheck]) -> str:
    header = f"{'k':>5} {'rel.err vs dense':>17} {'|spike - count|':>16} {'rate':>7} {'spk/ch':>7} {'silent':>7}"
    lines = [header, "-" * len(header)]
    for c in checks:
        lines.append(
            f"{c.k:>5g} {c.relative_error_vs_dense:>17.4f} {c.spike_vs_count_max_abs:>16.2e} "
            f"{c.firing_rate:>7.4f} {c.mean_spikes_per_channel:>7.3f} {c.silent_channel_fraction:>7.2%}"
        )
    return "\n".join(lines)


def format_table(rows: Sequence[DemoRow]) -> str:
    header = (
        f"{'k':>5} {'codec':<24} {'T':>4} {'rate':>7} {'sparsity':>8} {'spk/act':>7} "
        f"{'silent':>7} {'rel.err':>8} {'pJ/MAC':>7} {'vs FP16':>8} {'vs INT8':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.k:>5g} {r.codec:<24} {r.time_steps:>4d} {r.firing_rate:>7.4f} {r.sparsity:>8.2%} "
            f"{r.mean_spikes_per_activation:>7.3f} {r.silent_activation_fraction:>7.2%} {r.relative_error:>8.4f} "
            f"{r.energy_pj_per_mac:>7.4f} {-r.saving_vs_fp16:>+8.1%} {-r.saving_vs_int8:>+8.1%}"
        )
    return "\n".join(lines)


def plot_raster(counts: torch.Tensor, path: Path, codec: str = RASTER_CODEC) -> None:
    """Spike raster of the first channels of one token: +1 spikes up-ticks, -1 spikes down-ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = get_codec(codec).encode(counts[:RASTER_CHANNELS]).to(torch.float32)  # [T, channels]
    steps, channels = train.shape
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for sign, color, label in ((1, "tab:red", "+1 spike"), (-1, "tab:blue", "-1 spike")):
        t, c = torch.nonzero(train == sign, as_tuple=True)
        ax.scatter(t.numpy(), c.numpy(), marker="|" if sign > 0 else "_", s=120, color=color, label=label)
    ax.set_xlabel(f"time step (MSB first, T = {steps})")
    ax.set_ylabel("channel")
    ax.set_xticks(range(steps))
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(-0.5, channels - 0.5)
    ax.set_title(f"Spike raster, {codec} coding, token 0")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_count_histogram(x: torch.Tensor, ks: Sequence[float], path: Path) -> None:
    """Histogram of |spike count| per activation for each k (log scale: bursts are rare but long)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in ks:
        magnitudes = spike_count(x, k).counts.abs().flatten()
        top = int(magnitudes.max())
        hist = torch.bincount(magnitudes.to(torch.int64), minlength=top + 1).to(torch.float64)
        ax.step(range(top + 1), (hist / hist.sum()).numpy(), where="mid", label=f"k = {k:g}")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set_xlabel("|spike count| per activation")
    ax.set_ylabel("fraction of activations")
    ax.set_title("Spike count distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(
    out: Path = Path("spikingbrain-demo"),
    ks: Sequence[float] = (1.0, 3.0, 8.0),
    tokens: int = 256,
    features: int = 1024,
    seed: int = 0,
) -> list[DemoRow]:
    """Print the spike-coding table and a spike-coded layer check; write ``spike_raster.png`` and
    ``count_histogram.png`` to ``out``."""
    if not ks or any(not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0) for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of finite numbers > 0, got {ks!r}")
    x = synthetic_activations(tokens, features, seed)
    print(f"Synthetic activations: {tokens} tokens x {features} features, Student-t(3) with outlier channels, seed {seed}")
    print("Energy model: 45 nm, FP16 MAC 1.5 pJ, INT8 MAC 0.23 pJ, spiking MAC = spikes x 0.03 pJ (add)")
    print("rate/sparsity: per coded channel and step; spk/act, silent and energy: per activation")
    print("(unsigned codecs, binary and bitwise, carry signed counts as an on/off pair of channels)\n")
    rows = spike_code_table(x, ks)
    print(format_table(rows))

    print("\nSpikingLinear (W8ASpike: int8 weights per group of 128, bitwise bidirectional spikes) vs nn.Linear")
    print(format_layer_checks(spiking_layer_check(x, ks, seed=seed)))

    out.mkdir(parents=True, exist_ok=True)
    raster_k = 3.0 if 3.0 in ks else ks[0]
    raster = out / "spike_raster.png"
    histogram = out / "count_histogram.png"
    plot_raster(spike_count(x[0], raster_k).counts, raster)
    plot_count_histogram(x, ks, histogram)
    print(f"\nWrote {raster} (k = {raster_k:g}) and {histogram}")
    return rows
