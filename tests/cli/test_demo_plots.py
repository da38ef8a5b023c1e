"""The demo's figures say what they show: the raster's T against the table's, and the Fig. 9-style spike
report (the library's :func:`plot_spike_report`, which the demo draws) with the report's own figures
beside ours and legends clear of the bars (Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import spikingbrain.demo as demo  # noqa: E402
from sb_layers.models.spikingbrain import SpikingReport, plot_spike_report  # noqa: E402
from sb_layers.models.spikingbrain.w8aspike import (  # noqa: E402
    FIG9_ABOVE_16,
    FIG9_LABEL,
    FIG9_MEAN_SPIKES_PER_CHANNEL,
    FIG9_SILENT_PERCENT,
    FIG9_WITHIN_7,
)
from sb_neurons import SpikeStats, get_codec, spike_count, spike_stats  # noqa: E402
from spikingbrain.demo import (  # noqa: E402
    RASTER_CHANNELS,
    RASTER_CODEC,
    format_spike_report,
    format_table,
    raster_figure,
    spike_code_table,
    synthetic_activations,
)

PROJECTIONS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.gk_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj")


@pytest.fixture(scope="module")
def report() -> SpikingReport:
    """A report shaped like the demo's: bitwise-bidirectional counts of seven projections' inputs."""
    by = {
        name: spike_stats(counts=spike_count(synthetic_activations(16, 256, seed=i), 3.0).counts, codec=RASTER_CODEC)
        for i, name in enumerate(PROJECTIONS)
    }
    return SpikingReport(total=SpikeStats.accumulate(by.values()), by_projection=by)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_raster_title_names_its_own_T_and_the_tables_whole_tensor_T():
    x = synthetic_activations(64, 1024, seed=0)
    rows = spike_code_table(x, (3.0,))
    table_steps = next(r.time_steps for r in rows if r.codec == RASTER_CODEC)
    token = spike_count(x[0], 3.0).counts
    codec = get_codec(RASTER_CODEC)
    shown, whole_token = codec.min_steps(token[:RASTER_CHANNELS]), codec.min_steps(token)
    assert table_steps == codec.min_steps(spike_count(x, 3.0).counts)  # the table's T: the whole tensor
    assert shown < table_steps, "the case the figure must explain: its T is smaller than the table's"
    figure = raster_figure(token, whole_tensor_steps=table_steps)
    try:
        ax = figure.axes[0]
        title = ax.get_title()
        assert f"T = {shown} (the channels shown)" in title
        assert f"whole token needs T = {whole_token}" in title
        assert f"the table's whole tensor T = {table_steps}" in title
        assert len(ax.get_xticks()) == shown
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        legend = ax.get_legend()
        assert legend is not None and not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    finally:
        plt.close(figure)
    assert "table" not in raster_figure(token).axes[0].get_title()  # no table T given, none claimed
    plt.close("all")


def test_table_says_its_T_is_the_whole_tensors():
    lines = format_table(spike_code_table(synthetic_activations(8, 128, seed=0), (3.0,))).splitlines()
    assert lines[-1].startswith("T: time steps for the whole tensor") and "spike_raster.png" in lines[-1]


def test_spike_report_draws_fig9_figures_beside_ours(report):
    figure = plot_spike_report(report)  # default max_count = 16, as in Fig. 9
    try:
        hist, means, silent = figure.axes
        assert "Fig. 9" in figure.get_suptitle()
        assert len(means.patches) == len(silent.patches) == len(PROJECTIONS)
        assert len(hist.patches) == 17 + 1 + 1  # bars 0..16, the "> 16" bar, the [0, 7] band

        def reference_x(ax) -> list[float]:
            return [line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith(FIG9_LABEL)]

        assert reference_x(means) == [pytest.approx(1.13)]
        assert reference_x(silent) == [pytest.approx(18.4)]
        ours = {ax: [line.get_xdata()[0] for line in ax.get_lines() if line.get_label().startswith("all (ours)")] for ax in (means, silent)}
        assert ours[means] == [pytest.approx(report.total.mean_spikes_per_channel)]
        assert ours[silent] == [pytest.approx(100 * report.total.silent_channel_fraction)]
        labels = [text.get_text() for text in hist.get_legend().get_texts()]
        assert any("94.1%" in label and FIG9_LABEL in label for label in labels), labels
        assert any("above 16" in label and FIG9_LABEL in label for label in labels), labels
        assert [t.get_text() for t in hist.get_xticklabels()][-1] == ">16"
    finally:
        plt.close(figure)


def test_spike_report_legends_cover_no_bar(report):
    """The old figure's "all" legend sat on the top bar; every legend now lies outside its panel."""
    figure = plot_spike_report(report)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        bars = [patch.get_window_extent(renderer) for ax in figure.axes for patch in ax.patches]
        for ax in figure.axes:
            legend = ax.get_legend()
            assert legend is not None, ax.get_title()
            box = legend.get_window_extent(renderer)
            assert not _overlaps(box, ax.get_window_extent(renderer)), ax.get_title()
            assert not any(_overlaps(box, bar) for bar in bars), ax.get_title()
            assert figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1), "legend cut off"
    finally:
        plt.close(figure)


def test_reference_figures_are_the_reports():
    """The report's SpikingBrain-7B figures (arXiv 2509.05276, Fig. 9), defined once in the library."""
    assert (FIG9_MEAN_SPIKES_PER_CHANNEL, FIG9_SILENT_PERCENT, FIG9_WITHIN_7, FIG9_ABOVE_16) == (1.13, 18.4, 0.941, 0.01)


def test_other_max_count_draws_no_above_16_mark(report):
    """The report's ~1% is for |count| > 16: with another cut-off there is nothing to compare it with."""
    figure = plot_spike_report(report, max_count=32)
    try:
        hist = figure.axes[0]
        labels = [text.get_text() for text in hist.get_legend().get_texts()]
        assert not any("above 16" in label for label in labels), labels
        assert any("94.1%" in label for label in labels), labels
        assert [t.get_text() for t in hist.get_xticklabels()][-1] == ">32"
    finally:
        plt.close(figure)


def test_demo_draws_the_library_figure_and_states_the_same_figures(report):
    """One implementation: the demo (none of its modules) has no figure or reference constants of its own,
    and its text report quotes the library's constants (its line unchanged)."""
    for module in (demo, demo.compute, demo.plots, demo.text):
        assert not hasattr(module, "plot_spike_report_vs_fig9"), module.__name__
        assert not [name for name in vars(module) if name.startswith("FIG9_")], module.__name__
    assert format_spike_report(report).splitlines()[-1] == (
        "report (SpikingBrain-7B): 1.13 spikes per channel, 18.4% silent, 94.1% within [0, 7], ~69% sparsity"
    )


@pytest.mark.parametrize("max_count, error", [(0, ValueError), (-1, ValueError), (True, TypeError), (16.0, TypeError), ("16", TypeError)])
def test_spike_report_rejects_bad_max_count(report, max_count, error):
    with pytest.raises(error, match="max_count must be an int >= 1"):
        plot_spike_report(report, max_count=max_count)


def test_spike_report_rejects_a_non_report():
    with pytest.raises(TypeError, match="report"):
        plot_spike_report({"total": None})
