"""W8ASpike conversion of a SpikingBrain model and its Fig. 9-style spike statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers import MixerCache, SpikingReport, record_spikes, spike_report, spiking_layers
from sb_layers.models.spikingbrain.w8aspike import (
    merge_low_rank_gates,
    plot_spike_report,
    repack_per_channel,
    to_w8aspike,
    w8aspike_config,
)
from sb_layers.spiking_linear import SpikingLinear

VOCAB, GROUP = 89, 16


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


def float_model(dtype=torch.float64) -> SpikingBrainForCausalLM:
    torch.manual_seed(0)
    config = SpikingBrainConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, sliding_window=4, gla_chunk_size=4, initializer_range=0.2,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return SpikingBrainForCausalLM(config).to(dtype).eval()


@pytest.fixture(scope="module")
def source() -> SpikingBrainForCausalLM:
    return float_model()


@pytest.fixture(scope="module")
def calibration() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (2, 12), generator=gen) for _ in range(3)]


@pytest.fixture(scope="module")
def converted(source) -> SpikingBrainForCausalLM:
    return to_w8aspike(source, group_size=GROUP)


@pytest.fixture(scope="module")
def calibration_report(converted, calibration) -> SpikingReport:
    """The release's calibration pass: the converted model run on the batches, spikes recorded."""
    return record_spikes(converted, calibration).report


def test_released_projections_are_spiking_with_int8_groups(converted, source):
    gla, swa = converted.model.layers[0], converted.model.layers[1]
    spiking = {
        *(f"model.layers.0.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "gk_proj", "o_proj")),
        *(f"model.layers.1.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")),
        *(f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj")),
    }
    assert set(spiking_layers(converted)) == spiking
    assert type(gla.mlp.down_proj) is nn.Linear and type(swa.mlp.down_proj) is nn.Linear
    for layer in spiking_layers(converted).values():
        assert layer.coding.k == 3.0 and layer.coding.codec == "bitwise_bidirectional"
        scales = layer.weight_quantizer.scales
        assert scales.shape == (layer.out_features, layer.in_features // GROUP, 1)
        grouped = layer.weight.double().reshape(layer.out_features, -1, GROUP)
        torch.testing.assert_close(scales.double(), grouped.abs().amax(-1, keepdim=True).float().double() / 127)
        integers = layer.effective_weight().double().reshape_as(grouped) / scales.double()
        torch.testing.assert_close(integers, integers.round(), rtol=0, atol=1e-6)
        assert integers.abs().max() <= 127
    assert converted.config.gla_gate == "merged" and converted.config.spiking
    assert not source.config.spiking  # the source model is unchanged
    assert not spiking_layers(source)


def test_merged_gate_computes_the_low_rank_gate_exactly(source):
    merged_config = w8aspike_config(source.config)
    merged_config.spiking, merged_config.coding, merged_config.spike_attention = False, {"weight_bits": None}, False
    merged = SpikingBrainForCausalLM.build(merged_config, dtype=torch.float64).eval()
    merged.load_state_dict(merge_low_rank_gates(source.state_dict()))
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, source(ids).logits, rtol=1e-10, atol=1e-10)


def test_spike_mode_equals_count_mode_in_the_whole_model(source):
    counted = to_w8aspike(source, group_size=GROUP, mode="count")
    spiked = to_w8aspike(source, group_size=GROUP, mode="spike")
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(spiked(ids).logits, counted(ids).logits, rtol=1e-9, atol=1e-9)


def test_error_against_the_float_model_shrinks_as_k_grows(source):
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        exact = source(ids).logits
        errors = [
            float((to_w8aspike(source, group_size=GROUP, k=k)(ids).logits - exact).abs().mean())
            for k in (1.0, 3.0, 30.0)
        ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.25 * float(exact.abs().mean())


def test_spike_report_is_consistent_with_the_recorded_counts(converted, calibration, calibration_report):
    report = calibration_report
    total = report.total
    tokens = sum(batch.numel() for batch in calibration)
    widths = sum(layer.in_features for layer in spiking_layers(converted).values())
    assert total.num_channels == tokens * widths
    assert int(total.count_histogram.sum()) == total.num_channels
    assert total.silent_channels == int(total.count_histogram[0])  # bitwise: only a zero count is silent
    assert 0 < total.mean_spikes_per_channel and 0 < total.silent_channel_fraction < 1
    assert set(report.by_projection) == {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.gk_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj"}
    assert sum(s.num_channels for s in report.by_projection.values()) == total.num_channels
    summary = report.as_dict()
    assert 0 <= summary["fraction_at_most_7"] <= 1 and 0 <= summary["fraction_above_16"] <= 1


def test_plot_has_the_three_fig9_panels(calibration_report):
    """Layout and reference marks are tested in tests/cli/test_demo_plots.py; here, a converted model's report."""
    import matplotlib.pyplot as plt

    from sb_layers.models.spikingbrain.w8aspike import FIG9_LABEL

    figure = plot_spike_report(calibration_report, max_count=16)
    try:
        histogram, means, silent = figure.axes
        # bars 0..16 (as far as the histogram goes), the "> 16" bar, the [0, 7] band
        assert len(histogram.patches) == min(17, len(calibration_report.total.count_histogram)) + 2
        assert len(means.patches) == len(silent.patches) == 7
        for ax in (means, silent):
            assert any(line.get_label().startswith(FIG9_LABEL) for line in ax.get_lines())
    finally:
        plt.close(figure)


def test_converted_model_saves_and_loads_with_its_scales(tmp_path, converted):
    converted.save_pretrained(tmp_path)
    loaded = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    assert isinstance(loaded.model.layers[0].attn.gk_proj, SpikingLinear)
    ids = torch.randint(3, VOCAB, (1, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, converted(ids).logits, rtol=0, atol=0)


def test_w8aspike_rejects_bad_arguments(source, converted):
    with pytest.raises(TypeError):
        to_w8aspike(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already spike-coded"):
        to_w8aspike(converted)
    with pytest.raises(ValueError, match="group_size"):
        to_w8aspike(source, group_size=128)  # 128 does not divide the tiny widths
    with pytest.raises(ValueError, match="k"):
        to_w8aspike(source, group_size=GROUP, k=0.0)
    with pytest.raises(ValueError, match="at least one"):
        record_spikes(converted, [])
    with pytest.raises(ValueError, match="no spike statistics"):
        spike_report(to_w8aspike(source, group_size=GROUP))


# --- W8ASpike softmax attention: spiking queries, int8 keys and values (the INT8 KV cache) -----------

import math  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sb_layers.models.spikingbrain import SpikingBrainCache  # noqa: E402
from sb_layers.rotary import apply_rotary, rotary_cos_sin  # noqa: E402
from sb_kernels import int8_fake_quantize  # noqa: E402
from sb_layers.sliding_window import SlidingWindowAttention  # noqa: E402
from sb_neurons import spike_quantize  # noqa: E402


@given(rows=st.integers(1, 6), width=st.integers(1, 40), seed=st.integers(0, 2**16), magnitude=st.sampled_from([1e-3, 1.0, 300.0]))
def test_int8_per_vector_rounds_to_a_grid_within_half_a_step(rows, width, seed, magnitude):
    x = magnitude * torch.randn(rows, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    q = int8_fake_quantize(x)
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(1e-5, 1e4)  # float64 input: float64 scales
    integers = q / scale
    torch.testing.assert_close(integers, integers.round(), rtol=0, atol=1e-9)
    assert integers.abs().max() <= 127 + 1e-9
    assert bool(((q - x).abs() <= scale / 2 + 1e-12).all())
    torch.testing.assert_close(int8_fake_quantize(q), q, rtol=0, atol=1e-12)  # on the grid: unchanged


def test_int8_per_vector_passes_gradients_straight_through():
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    int8_fake_quantize(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        int8_fake_quantize(torch.ones(2, 2, dtype=torch.int64))


def test_spiking_attention_equals_dense_softmax_on_coded_queries_and_int8_keys_values():
    torch.manual_seed(0)
    layer = SlidingWindowAttention(32, 4, 2, window=5, rope_theta=100.0, spike_query_k=3.0).double().eval()
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x, None, MixerCache(1))
        heads = lambda t, n: t.view(2, 11, n, 8).transpose(1, 2)  # noqa: E731
        q, k, v = heads(layer.q_proj(x), 4), heads(layer.k_proj(x), 2), heads(layer.v_proj(x), 2)
        cos, sin = rotary_cos_sin(torch.arange(11).expand(2, 11), 8, 100.0, torch.float64)
        q = spike_quantize(apply_rotary(q, cos, sin), 3.0)
        k, v = int8_fake_quantize(apply_rotary(k, cos, sin)), int8_fake_quantize(v)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        distance = torch.arange(11)[:, None] - torch.arange(11)[None, :]
        allowed = (distance >= 0) & (distance < 5)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~allowed, float("-inf"))
        expected = layer.o_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 11, 32))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    float_layer = SlidingWindowAttention(32, 4, 2, window=5, rope_theta=100.0).double().eval()
    float_layer.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert not torch.allclose(float_layer(x, None, MixerCache(1)), out, atol=1e-6)  # the coding does act
    with pytest.raises(ValueError, match="spike_query_k"):
        SlidingWindowAttention(32, 4, 2, spike_query_k=0.0)


def test_w8aspike_attention_streams_exactly_with_an_int8_cache(converted, source):
    swa = converted.model.layers[1].attn
    assert converted.config.spike_attention and swa.spike_query_k == 3.0
    ids = torch.randint(3, VOCAB, (1, 13), generator=torch.Generator().manual_seed(6))  # beyond the window of 4
    cache = SpikingBrainCache(converted.config.num_hidden_layers)
    with torch.no_grad():
        whole = converted(ids, use_cache=False).logits
        steps = torch.cat([converted(ids[:, t : t + 1], cache=cache).logits for t in range(ids.shape[1])], dim=1)
    torch.testing.assert_close(steps, whole, rtol=1e-9, atol=1e-9)
    keys = cache.states[1].keys  # the cached keys lie on an int8 grid per head vector
    scale = (keys.abs().amax(-1, keepdim=True) / 127).clamp(1e-5, 1e4)
    torch.testing.assert_close(keys / scale, (keys / scale).round(), rtol=0, atol=1e-8)
    float_attention = to_w8aspike(source, group_size=GROUP, attention=False)
    assert not float_attention.config.spike_attention and float_attention.model.layers[1].attn.spike_query_k is None
    with torch.no_grad():
        assert not torch.allclose(float_attention(ids).logits, whole, atol=1e-6)


def test_spike_report_is_the_one_report_type_with_layers_and_energy(converted, calibration_report):
    report = calibration_report
    assert set(report.layers) == set(spiking_layers(converted))
    assert sum(layer.macs for layer in report.layers.values()) == report.total_macs > 0
    assert 0 < report.energy.spiking_pj_per_mac and "total_macs" in report.as_dict() and "by_projection" in report.as_dict()


def test_reading_what_the_layers_accumulated_equals_recording(source, calibration, calibration_report):
    """record_spikes leaves the layers as they were; layers recording on their own (record_stats) over the
    same batches hold the same statistics, which spike_report reads."""
    model = to_w8aspike(source, group_size=GROUP)
    assert record_spikes(model, calibration).report.as_dict() == calibration_report.as_dict()
    with pytest.raises(ValueError, match="no spike statistics"):
        spike_report(model)
    for layer in spiking_layers(model).values():
        layer.record_stats = True
    with torch.no_grad():
        for ids in calibration:
            model(ids)
    assert spike_report(model).as_dict() == calibration_report.as_dict()


def test_repack_per_channel_is_within_half_a_scale_of_the_released_weights(converted, calibration):
    # The explicit per-output-channel option: every weight the repacked model uses is within half its new
    # scale of the group-quantized weight the source model uses, the scales are one per row (the row's
    # largest |W| / 127), the source is untouched, and the model still runs (logits close, not equal).
    repacked = repack_per_channel(converted)
    assert repacked.config.coding.group_size is None and converted.config.coding.group_size == GROUP
    for name, layer in spiking_layers(repacked).items():
        source_layer = spiking_layers(converted)[name]
        released = source_layer.effective_weight().detach()
        scales = layer.weight_quantizer.scales
        assert scales.shape == (layer.out_features, 1, 1) and layer.coding.group_size is None
        assert torch.allclose(scales[:, 0, 0], (released.abs().amax(1) / 127).clamp_min(1e-5).to(scales.dtype))
        assert torch.all((layer.effective_weight() - released).abs() <= scales[:, 0] / 2 * (1 + 1e-6))
        assert source_layer.weight_quantizer.scales.shape[1] == layer.in_features // GROUP
    ids = calibration[0]
    with torch.no_grad():
        before, after = converted(ids).logits, repacked(ids).logits
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert float((after - before).abs().max()) < float(before.abs().max())


def test_repack_per_channel_needs_a_w8aspike_model(source):
    with pytest.raises(ValueError, match="W8ASpike"):
        repack_per_channel(source)
    with pytest.raises(TypeError, match="SpikingBrainForCausalLM"):
        repack_per_channel(torch.nn.Linear(2, 2))
