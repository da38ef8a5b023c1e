"""The demo's figures and the files they are written to: the spike raster of one token, the histogram of
spike counts per k, and the small model's Fig. 9-style spike report (the library's
:func:`~sb_layers.models.spikingbrain.plot_spike_report`).

matplotlib is imported when a figure is drawn, with the Agg backend (files only, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sb_neurons import get_codec, spike_count

from .compute import RASTER_CODEC

RASTER_CHANNELS = 48


def _save(figure, path: Path, dpi: int) -> None:
    """Write ``figure`` to ``path`` (PNG) and close it."""
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def plot_raster(counts: torch.Tensor, path: Path, codec: str = RASTER_CODEC, whole_tensor_steps: int | None = None) -> None:
    """Write :func:`raster_figure` of ``counts`` to ``path`` (PNG)."""
    _save(raster_figure(counts, codec, whole_tensor_steps), path, dpi=120)  # the figure selects Agg before pyplot loads


def raster_figure(counts: torch.Tensor, codec: str = RASTER_CODEC, whole_tensor_steps: int | None = None):
    """Spike raster of the first channels of one token (``counts``: that token's counts, ``[features]``):
    +1 spikes up-ticks, -1 spikes down-ticks. Returns the matplotlib ``Figure``.

    Three T's differ here, and the title names each: the train drawn is as long as the channels shown
    need; the whole token can need more, and the demo's table gives T for the whole tensor, which the
    largest count of any token sets (pass it as ``whole_tensor_steps``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coder = get_codec(codec)
    train = coder.encode(counts[:RASTER_CHANNELS]).to(torch.float32)  # [T, channels]
    steps, channels = train.shape
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    for sign, color, label in ((1, "tab:red", "+1 spike"), (-1, "tab:blue", "-1 spike")):
        t, c = torch.nonzero(train == sign, as_tuple=True)
        ax.scatter(t.numpy(), c.numpy(), marker="|" if sign > 0 else "_", s=120, color=color, label=label)
    ax.set_xlabel("time step (MSB first)")
    ax.set_ylabel("channel")
    ax.set_xticks(range(steps))
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(-0.5, channels - 0.5)
    title = f"Spike raster, {codec} coding, token 0, channels 0-{channels - 1}\nT = {steps} (the channels shown)"
    title += f"; the whole token needs T = {coder.min_steps(counts)}"
    if whole_tensor_steps is not None:
        title += f", the table's whole tensor T = {whole_tensor_steps}"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # outside: never over a spike
    return fig


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
    _save(fig, path, dpi=120)


def write_spike_report(report, out: Path) -> Path:
    """Write the Fig. 9-layout figure of ``report`` (the report's 7B figures beside ours) to
    ``out/spike_report.png``, creating ``out``; returns the file's path."""
    from sb_layers.models.spikingbrain import plot_spike_report

    out.mkdir(parents=True, exist_ok=True)
    path = out / "spike_report.png"
    _save(plot_spike_report(report), path, dpi=110)
    return path
