"""The demo's results as text: the activations' description, the spike-coding table, the layer check, the
sb_adapters injection, the small model's steps and its Fig. 9-style spike report.

Every function returns a string (nothing is printed here); :mod:`spikingbrain.demo` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence

from .compute import CORPUS, ByteTokenizer, DemoRow, HFInjectionResult, LayerCheck, ModelDemoResult

TABLE_T_NOTE = (
    "T: time steps for the whole tensor (set by its largest |count|); spike_raster.png shows "
    "a few channels of token 0, whose own T can be smaller"
)


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
    lines.append(TABLE_T_NOTE)
    return "\n".join(lines)


def format_layer_checks(checks: Sequence[LayerCheck]) -> str:
    header = f"{'k':>5} {'rel.err vs dense':>17} {'|spike - count|':>16} {'rate':>7} {'spk/ch':>7} {'silent':>7}"
    lines = [header, "-" * len(header)]
    for c in checks:
        lines.append(
            f"{c.k:>5g} {c.relative_error_vs_dense:>17.4f} {c.spike_vs_count_max_abs:>16.2e} "
            f"{c.firing_rate:>7.4f} {c.mean_spikes_per_channel:>7.3f} {c.silent_channel_fraction:>7.2%}"
        )
    return "\n".join(lines)


def format_activation_demo(tokens: int, features: int, seed: int, rows: Sequence[DemoRow], checks: Sequence[LayerCheck]) -> str:
    """The demo's first part: what the activations and the energy model are, the spike-coding ``rows``
    (:func:`format_table`) and the layer ``checks`` (:func:`format_layer_checks`)."""
    return "\n".join([
        f"Synthetic activations: {tokens} tokens x {features} features, Student-t(3) with outlier channels, seed {seed}",
        "Energy model: 45 nm, FP16 MAC 1.5 pJ, INT8 MAC 0.23 pJ, spiking MAC = spikes x 0.03 pJ (add)",
        "rate/sparsity: per coded channel and step; spk/act, silent and energy: per activation",
        "(unsigned codecs, binary and bitwise, carry signed counts as an on/off pair of channels)",
        "",
        format_table(rows),
        "",
        "SpikingLinear (W8ASpike: int8 weights per group of 128, bitwise bidirectional spikes) vs nn.Linear",
        format_layer_checks(checks),
    ])


def format_hf_injection(result: HFInjectionResult) -> str:
    """Which projections of the tiny HuggingFace model were replaced, and its spiking report."""
    return "\n".join([
        f"\nsb_adapters: inject_spiking into a tiny random {result.model_name} (built from a config), k = {result.k:g}",
        result.summary,
        str(result.report),
    ])


def format_spike_report(report, max_count: int = 16) -> str:
    """Fig. 9 as text: the |count| histogram (bars), mean spikes per channel and silent channels, per
    projection and in total, beside the report's SpikingBrain-7B figures."""
    histogram = report.total.count_histogram.double()
    total = float(histogram.sum())
    lines = ["|count|  share of channels"]
    for n in range(min(max_count, len(histogram) - 1) + 1):
        share = float(histogram[n]) / total
        lines.append(f"{n:>7d}  {share:>7.2%} {'#' * round(60 * share)}")
    above = 1.0 - report.total.fraction_of_counts_at_most(max_count)
    lines.append(f"{'>' + str(max_count):>7}  {above:>7.2%} {'#' * round(60 * above)}")
    lines.append("")
    header = f"{'projection':<16} {'spk/ch':>7} {'silent':>7} {'<= 7':>7} {'sparsity':>8} {'T':>3}"
    lines += [header, "-" * len(header)]
    for name, stats in list(report.by_projection.items()) + [("all", report.total)]:
        lines.append(
            f"{name:<16} {stats.mean_spikes_per_channel:>7.3f} {stats.silent_channel_fraction:>7.2%} "
            f"{stats.fraction_of_counts_at_most(7):>7.2%} {stats.sparsity:>8.2%} {stats.time_steps:>3d}"
        )
    from sb_layers.models.spikingbrain.w8aspike import FIG9_MEAN_SPIKES_PER_CHANNEL, FIG9_SILENT_PERCENT, FIG9_WITHIN_7

    lines.append(f"report (SpikingBrain-7B): {FIG9_MEAN_SPIKES_PER_CHANNEL:.2f} spikes per channel, {FIG9_SILENT_PERCENT:.1f}% silent, "
                 f"{FIG9_WITHIN_7:.1%} within [0, 7], ~69% sparsity")
    return "\n".join(lines)


def format_model_demo(result: ModelDemoResult) -> str:
    """The small model's steps: parts vs model, training (when it trained), generation with and without
    cache, W8ASpike generation and agreement, then the spike report (:func:`format_spike_report`)."""
    config = result.config
    lines = [
        f"\nSpikingBrain from parts: {config.num_hidden_layers} HybridBlocks ({', '.join(result.layer_kinds)}), "
        f"hidden {config.hidden_size}, window {config.sliding_window}, {result.parameters / 1e6:.2f}M parameters, seed {result.seed}",
        f"parts vs SpikingBrainForCausalLM, same weights: max |logit difference| = {result.parts_vs_model_max_abs:.1e}",
    ]
    if result.train_steps:
        lines.append(f"trained {result.train_steps} AdamW steps on the built-in {len(CORPUS)}-byte corpus: "
                     f"loss {result.loss_before:.3f} -> {result.loss_after:.3f}")
    lines += [
        f"\nByte-level tokenizer (UTF-8 bytes, vocab {ByteTokenizer.vocab_size}); greedy generation with a SpikingBrainCache:",
        f"  {result.prompt!r} -> {result.generated!r}",
        f"  cache after {result.generated_length} tokens: {result.cache_bytes / 1024:.1f} KiB "
        f"(GLA states + SWA windows of {config.sliding_window}: constant beyond the window); "
        f"without cache: {'identical' if result.cached_equals_uncached else 'DIFFERENT'}",
        "\nW8ASpike (int8 weights per group of 128, projection inputs as spike counts at k = 3, bitwise bidirectional; "
        "SWA queries spike-coded, keys and values int8 in the cache):",
        f"  {result.prompt!r} -> {result.generated_w8aspike!r}",
        f"  next-token agreement with the float model on held-out windows: {result.top1_agreement:.1%}",
        "\nSpike report (Fig. 9 style), projection inputs over the calibration windows:",
        format_spike_report(result.report),
    ]
    return "\n".join(lines)
