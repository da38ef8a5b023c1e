"""``spikingbrain demo``: spike-code LLM-like activations and report what the spikes cost, then build a
small SpikingBrain model from sb_layers parts, generate text with it, convert it to W8ASpike and print
its Fig. 9-style spike report.

Everything runs on the CPU from built-in defaults in seconds; nothing is downloaded (the tokenizer is
byte-level: UTF-8 bytes are the tokens).

This module runs the demo's parts in order: each computes (:mod:`.compute`), turns its results into text
(:mod:`.text`) and prints it, and writes its figures (:mod:`.plots`). Their public names are re-exported
here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .compute import (
    CORPUS,
    RASTER_CODEC,
    TRAIN_STEPS,
    ByteTokenizer,
    DemoRow,
    HFInjectionResult,
    LayerCheck,
    ModelDemoResult,
    PartsLM,
    RasterData,
    codec_counts,
    compute_model_demo,
    corpus_batches,
    demo_config,
    hf_injection,
    raster_data,
    spike_code_table,
    spiking_layer_check,
    synthetic_activations,
)
from .plots import RASTER_CHANNELS, plot_count_histogram, plot_raster, raster_figure, write_spike_report
from .text import (
    TABLE_T_NOTE,
    format_activation_demo,
    format_hf_injection,
    format_layer_checks,
    format_model_demo,
    format_spike_report,
    format_table,
)

__all__ = [
    "CORPUS", "RASTER_CHANNELS", "RASTER_CODEC", "TABLE_T_NOTE", "TRAIN_STEPS",
    "ByteTokenizer", "DemoRow", "HFInjectionResult", "LayerCheck", "ModelDemoResult", "PartsLM", "RasterData",
    "codec_counts", "compute_model_demo", "corpus_batches", "demo_config", "hf_injection", "raster_data",
    "spike_code_table", "spiking_layer_check", "synthetic_activations",
    "plot_count_histogram", "plot_raster", "raster_figure", "write_spike_report",
    "format_activation_demo", "format_hf_injection", "format_layer_checks", "format_model_demo",
    "format_spike_report", "format_table",
    "hf_injection_demo", "model_demo", "run_demo",
]


def run_demo(
    out: Path = Path("spikingbrain-demo"),
    ks: Sequence[float] = (1.0, 3.0, 8.0),
    tokens: int = 256,
    features: int = 1024,
    seed: int = 0,
    prompt: str | None = None,
    new_tokens: int = 24,
    train_steps: int = TRAIN_STEPS,
) -> list[DemoRow]:
    """Print the spike-coding table and a spike-coded layer check; write ``spike_raster.png`` and
    ``count_histogram.png`` to ``out``. Then run :func:`hf_injection_demo` and, with a ``prompt``,
    :func:`model_demo` (small SpikingBrain model from parts, generation, W8ASpike, spike report; writes
    ``spike_report.png``)."""
    if not ks or any(not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0) for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of finite numbers > 0, got {ks!r}")
    x = synthetic_activations(tokens, features, seed)
    rows = spike_code_table(x, ks)
    print(format_activation_demo(tokens, features, seed, rows, spiking_layer_check(x, ks, seed=seed)))

    out.mkdir(parents=True, exist_ok=True)
    raster = raster_data(x, ks, rows)
    raster_path, histogram_path = out / "spike_raster.png", out / "count_histogram.png"
    plot_raster(raster.counts, raster_path, whole_tensor_steps=raster.whole_tensor_steps)
    plot_count_histogram(x, ks, histogram_path)
    print(f"\nWrote {raster_path} (k = {raster.k:g}) and {histogram_path}")
    hf_injection_demo(seed=seed)
    if prompt is not None:
        model_demo(prompt, out=out, new_tokens=new_tokens, seed=seed, train_steps=train_steps)
    return rows


def hf_injection_demo(arch: str = "qwen2", seed: int = 0, k: float = 3.0):
    """Inject spiking into a tiny HuggingFace ``arch`` model built from a config (nothing downloaded),
    print which projections were replaced and its spiking report on random token batches, then unload
    (:func:`~spikingbrain.demo.compute.hf_injection`).

    Returns:
        The :class:`sb_layers.SpikingReport` merged over the batches.
    """
    result = hf_injection(arch, seed, k)
    print(format_hf_injection(result))
    return result.report


def model_demo(
    prompt: str = "Spiking neurons",
    *,
    out: Path | None = None,
    new_tokens: int = 24,
    seed: int = 0,
    train_steps: int = TRAIN_STEPS,
    verbose: bool = True,
) -> ModelDemoResult:
    """Build a small SpikingBrain model from sb_layers parts, train it briefly on the built-in corpus,
    generate from ``prompt`` (byte-level tokens, cached decoding), convert it to W8ASpike
    (:func:`~spikingbrain.demo.compute.compute_model_demo`) and print the Fig. 9-style spike report;
    writes ``spike_report.png`` to ``out`` when given.

    Args:
        prompt: text to continue (non-empty).
        out: folder for the figure (None: no file).
        new_tokens: tokens to generate (>= 1).
        seed: seeds the weights, the training windows and nothing else (generation is greedy).
        train_steps: AdamW steps on the corpus before generating (0: the random model).
        verbose: print the steps' results.
    """
    result = compute_model_demo(prompt, new_tokens=new_tokens, seed=seed, train_steps=train_steps)
    if verbose:
        print(format_model_demo(result))
    if out is not None:
        path = write_spike_report(result.report, out)
        if verbose:
            print(f"\nWrote {path}")
    return result
