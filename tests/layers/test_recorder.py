"""SpikeRecorder: one way to record a model's spike statistics, around a forward or ``generate``."""

from __future__ import annotations

import pytest
import torch

from sb_adapters import SpikingConfig, inject_spiking, record_spikes
from sb_adapters.tiny import tiny_model
from sb_layers import SpikeRecorder, reset_spike_stats, spiking_layers

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def model():
    model = tiny_model("llama")
    inject_spiking(model, SpikingConfig(coding={"codec": "ternary"}))
    return model


def test_generate_is_recorded_call_by_call_and_in_total(model):
    prompt = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    layers = spiking_layers(model)
    width = sum(layer.in_features for layer in layers.values())
    with SpikeRecorder(model, per_call=True) as recorder:
        out = model.generate(prompt, max_new_tokens=4, do_sample=False, min_new_tokens=4, pad_token_id=0)
        assert recorder.recording and all(layer.record_stats for layer in layers.values())
    calls = recorder.call_reports()
    assert len(calls) == out.shape[1] - prompt.shape[1]  # one forward per new token
    assert calls[0].total.num_channels == prompt.numel() * width  # the prompt
    assert all(call.total.num_channels == prompt.shape[0] * width for call in calls[1:])  # one token each
    total = recorder.report()
    assert total.total.num_channels == sum(call.total.num_channels for call in calls)
    assert total.total.total_spikes == sum(call.total.total_spikes for call in calls)
    assert torch.equal(total.total.count_histogram, sum_histograms([c.total.count_histogram for c in calls]))
    # leaving gives the layers back what they had: recording off, nothing recorded
    assert not recorder.recording
    assert all(not layer.record_stats and layer.spike_stats is None for layer in layers.values())


def sum_histograms(histograms):
    out = torch.zeros(max(h.numel() for h in histograms), dtype=torch.int64)
    for h in histograms:
        out[: h.numel()] += h
    return out


def test_recorder_equals_record_spikes_and_restores_what_layers_held(model):
    batch = torch.randint(1, 64, (3, 7), generator=torch.Generator().manual_seed(1))
    want = record_spikes(model, [batch]).report
    first = next(iter(spiking_layers(model).values()))
    first.record_stats = True
    with torch.no_grad():
        model(batch)
    before = first.spike_stats
    with SpikeRecorder(model) as recorder, torch.no_grad():
        model(batch)
        inside = recorder.report()  # readable while recording
    got = recorder.report()
    assert got.total.as_dict() == want.total.as_dict() == inside.total.as_dict()
    assert set(got.layers) == set(want.layers)
    assert first.record_stats and first.spike_stats is before  # as it was before the recorder
    reset_spike_stats(model)
    assert all(layer.spike_stats is None for layer in spiking_layers(model).values())


def test_recorder_errors(model):
    with pytest.raises(ValueError, match="no SpikingLinear"):
        SpikeRecorder(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="per_call"):
        SpikeRecorder(model, per_call=1)
    recorder = SpikeRecorder(model)
    with recorder:
        with pytest.raises(RuntimeError, match="already recording"):
            recorder.__enter__()
    with pytest.raises(ValueError, match="nothing recorded"):
        recorder.report()
    with pytest.raises(ValueError, match="per_call=True"):
        recorder.call_reports()
