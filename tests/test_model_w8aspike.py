"""W8ASpike conversion of a SpikingBrain model and its Fig. 9-style spike statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.w8aspike import (
    SpikeReport,
    merge_low_rank_gates,
    plot_spike_report,
    record_spike_statistics,
    spike_report,
    spiking_linears,
    to_w8aspike,
    w8aspike_config,
)
from sb_layers.spiking_linear import SpikingLinear

VOCAB, GROUP = 89, 16


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
def converted(source, calibration) -> SpikingBrainForCausalLM:
    return to_w8aspike(source, calibration, group_size=GROUP, progress=False)


def test_released_projections_are_spiking_with_int8_groups(converted, source):
    gla, swa = converted.model.layers[0], converted.model.layers[1]
    spiking = {
        *(f"model.layers.0.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "gk_proj", "o_proj")),
        *(f"model.layers.1.attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")),
        *(f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj")),
    }
    assert set(spiking_linears(converted)) == spiking
    assert type(gla.mlp.down_proj) is nn.Linear and type(swa.mlp.down_proj) is nn.Linear
    for layer in spiking_linears(converted).values():
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
    assert not spiking_linears(source)


def test_merged_gate_computes_the_low_rank_gate_exactly(source):
    merged_config = w8aspike_config(source.config)
    merged_config.spiking, merged_config.weight_bits = False, None
    merged = SpikingBrainForCausalLM.build(merged_config, dtype=torch.float64).eval()
    merged.load_state_dict(merge_low_rank_gates(source.state_dict()))
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, source(ids).logits, rtol=1e-10, atol=1e-10)


def test_spike_mode_equals_count_mode_in_the_whole_model(source):
    counted = to_w8aspike(source, group_size=GROUP, mode="count", progress=False)
    spiked = to_w8aspike(source, group_size=GROUP, mode="spike", progress=False)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(spiked(ids).logits, counted(ids).logits, rtol=1e-9, atol=1e-9)


def test_error_against_the_float_model_shrinks_as_k_grows(source):
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        exact = source(ids).logits
        errors = [
            float((to_w8aspike(source, group_size=GROUP, k=k, progress=False)(ids).logits - exact).abs().mean())
            for k in (1.0, 3.0, 30.0)
        ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.25 * float(exact.abs().mean())


def test_spike_report_is_consistent_with_the_recorded_counts(converted, calibration):
    report = spike_report(converted)
    total = report.total
    tokens = sum(batch.numel() for batch in calibration)
    widths = sum(layer.in_features for layer in spiking_linears(converted).values())
    assert total.num_channels == tokens * widths
    assert int(total.count_histogram.sum()) == total.num_channels
    assert total.silent_channels == int(total.count_histogram[0])  # bitwise: only a zero count is silent
    assert 0 < total.mean_spikes_per_channel and 0 < total.silent_channel_fraction < 1
    assert set(report.by_projection) == {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.gk_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj"}
    assert sum(s.num_channels for s in report.by_projection.values()) == total.num_channels
    summary = report.as_dict()
    assert 0 <= summary["fraction_at_most_7"] <= 1 and 0 <= summary["fraction_above_16"] <= 1


def test_plot_has_the_three_fig9_panels(converted):
    figure = plot_spike_report(spike_report(converted), max_count=16)
    histogram, means, silent = figure.axes
    assert len(histogram.patches) == min(17, len(spike_report(converted).total.count_histogram))
    assert len(means.patches) == len(silent.patches) == 7
    import matplotlib.pyplot as plt

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
        record_spike_statistics(converted, [], progress=False)
    with pytest.raises(ValueError, match="no spike statistics"):
        spike_report(to_w8aspike(source, group_size=GROUP, progress=False))
    assert isinstance(spike_report(converted), SpikeReport)
