"""The ``spikingbrain`` command: --help, and a demo that prints its table and writes its plots."""

import subprocess
import sys

import pytest
import torch

from spikingbrain.cli import main
from spikingbrain.demo import run_demo, synthetic_activations
from sb_neurons import CODEC_NAMES


def test_help_lists_demo():
    result = subprocess.run(
        [sys.executable, "-m", "spikingbrain.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_bad_k_is_rejected(capsys):
    with pytest.raises(SystemExit) as err:
        main(["demo", "--k", "0"])
    assert err.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def test_synthetic_activations_are_reproducible_and_heavy_tailed():
    a, b = synthetic_activations(64, 256, seed=3), synthetic_activations(64, 256, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, synthetic_activations(64, 256, seed=4))
    # heavy tails: the largest entries sit far beyond a Gaussian's ~4.5 sigma at this size
    assert float(a.abs().max() / a.std()) > 8.0


def test_demo_prints_table_and_writes_plots(tmp_path, capsys):
    ks = (1.0, 3.0, 8.0)
    rows = run_demo(out=tmp_path, ks=ks, tokens=32, features=256, seed=0)
    out = capsys.readouterr().out
    assert len(rows) == len(ks) * len(CODEC_NAMES)
    for header in ("rate", "sparsity", "spk/act", "silent", "rel.err", "vs FP16", "vs INT8", "SpikingLinear"):
        assert header in out
    for name in ("spike_raster.png", "count_histogram.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    errors = {r.k: r.relative_error for r in rows}
    assert errors[1.0] > errors[3.0] > errors[8.0], "a lower threshold must code activations more finely"
    for r in rows:
        assert 0.0 <= r.firing_rate <= 1.0 and 0.0 <= r.sparsity <= 1.0
        assert r.energy_pj_per_mac == pytest.approx(r.mean_spikes_per_activation * 0.03)
    by = {(r.k, r.codec): r for r in rows}
    # an on/off pair spends as many spikes as the signed code of the same counts
    assert by[(3.0, "binary")].mean_spikes_per_activation == pytest.approx(by[(3.0, "ternary")].mean_spikes_per_activation)
    # bitwise coding spends exponentially fewer steps than ternary on the same counts
    assert by[(3.0, "bitwise_bidirectional")].time_steps < by[(3.0, "ternary")].time_steps


def test_demo_layer_check_agrees_with_dense_and_between_modes(capsys):
    from spikingbrain.demo import spiking_layer_check

    x = synthetic_activations(16, 256, seed=1)
    checks = spiking_layer_check(x, (1.0, 3.0, 8.0), out_features=32)
    errors = [c.relative_error_vs_dense for c in checks]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05
    for c in checks:
        assert c.spike_vs_count_max_abs < 1e-4  # float32 event accumulation vs one matmul
        assert 0.0 < c.firing_rate < 1.0
