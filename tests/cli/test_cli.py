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
    assert "demo" in result.stdout and "estimate" in result.stdout


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


# --- the demo's small SpikingBrain model -----------------------------------------------------------

import contextlib  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from spikingbrain.demo import CORPUS, ByteTokenizer, PartsLM, demo_config, model_demo  # noqa: E402


@given(st.text(max_size=40))
def test_byte_tokenizer_round_trips_any_text(text):
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id and all(0 <= i < 256 for i in ids[1:])
    assert len(ids) == 1 + len(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids + [tokenizer.eos_token_id, tokenizer.pad_token_id]) == text


def test_byte_tokenizer_rejects_bad_input():
    tokenizer = ByteTokenizer()
    with pytest.raises(ValueError, match="ids must lie in"):
        tokenizer.decode([300])
    with pytest.raises(TypeError, match="text"):
        tokenizer.encode(b"bytes")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One full `spikingbrain demo` (small sizes for the activation part; the model part as shipped)."""
    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["demo", "--out", str(out), "--tokens", "32", "--features", "256", "--prompt", "Spiking neurons", "--new-tokens", "16"])
    return code, buffer.getvalue(), out


def test_demo_builds_trains_generates_and_reports_spikes(demo_run):
    code, out, folder = demo_run
    assert code == 0
    assert "SpikingLinear" in out  # the earlier parts still run first
    assert "parts vs SpikingBrainForCausalLM, same weights: max |logit difference| = 0.0e+00" in out
    before, after = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", out).groups())
    assert after < 0.25 * before, "a short training on the built-in corpus must lower the loss"
    generations = re.findall(r"'Spiking neurons' -> '([^']*)'", out)
    assert len(generations) == 2  # float model, then W8ASpike
    assert all(len(g.encode("utf-8")) <= 16 for g in generations)
    assert generations[0][:6] in CORPUS, "the trained model continues the prompt with corpus text"
    assert "without cache: identical" in out
    agreement = float(re.search(r"next-token agreement with the float model on held-out windows: ([\d.]+)%", out).group(1))
    assert agreement > 80.0
    assert "Spike report (Fig. 9 style)" in out
    shares = [float(m) for m in re.findall(r"^\s+(?:\d+|>16)\s+([\d.]+)%", out, re.MULTILINE)]
    assert len(shares) == 18 and sum(shares) == pytest.approx(100.0, abs=0.2)  # |count| 0..16 and >16
    for projection in ("attn.q_proj", "attn.gk_proj", "mlp.up_proj", "all"):
        assert re.search(rf"^{re.escape(projection)}\s+[\d.]+\s+[\d.]+%", out, re.MULTILINE), projection
    data = (folder / "spike_report.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_demo_model_part_can_be_skipped(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--tokens", "8", "--features", "128", "--k", "3", "--no-model"]) == 0
    out = capsys.readouterr().out
    assert "SpikingLinear" in out and "Spike report" not in out
    assert not (tmp_path / "spike_report.png").exists()


def test_model_demo_result_on_the_random_model():
    result = model_demo("ab", new_tokens=5, train_steps=0, seed=1, verbose=False)
    assert result.parts_vs_model_max_abs == 0.0
    assert result.cached_equals_uncached and result.loss_after == result.loss_before
    assert 0.0 <= result.top1_agreement <= 1.0
    total = result.report.total
    assert int(total.count_histogram.sum()) == total.num_channels
    assert total.silent_channel_fraction == pytest.approx(float(total.count_histogram[0]) / total.num_channels)
    assert set(result.report.by_projection) >= {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "attn.gk_proj", "mlp.gate_proj", "mlp.up_proj"}


def test_parts_model_has_the_released_names():
    import torch

    from sb_layers.models.spikingbrain import SpikingBrainForCausalLM

    config = demo_config()
    parts = PartsLM(config)
    assert set(parts.state_dict()) == set(SpikingBrainForCausalLM.build(config, device="meta").state_dict())
    assert parts.lm_head.weight.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(prompt=""), "prompt"), (dict(new_tokens=0), "new_tokens"), (dict(train_steps=-1), "train_steps")],
)
def test_model_demo_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        model_demo(**{"prompt": "x", **kwargs}, verbose=False)


# --- sb_adapters inside the spikingbrain command -----------------------------------------------------


def test_demo_injects_into_a_tiny_hf_model_and_reports_every_layer(capsys):
    from spikingbrain.demo import hf_injection_demo

    report = hf_injection_demo(arch="gpt2", seed=0)
    out = capsys.readouterr().out
    assert "-> SpikingConv1D" in out and "kept dense" in out and "energy per MAC" in out
    assert report.layers, "the report must cover the injected layers"
    assert len(report.layers) == out.count("-> SpikingConv1D")
    for layer in report.layers.values():
        assert 0.0 <= layer.stats.firing_rate <= 1.0 and layer.macs > 0


def test_adapter_subcommands_are_hosted(tmp_path, capsys):
    assert main(["report", "--tiny", "llama", "--batches", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert "total" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
    assert main(["sweep-k", "--tiny", "opt", "--batches", "1", "--k", "1", "8", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "sweep_k.json").is_file()


def test_adapter_subcommand_bad_input_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        main(["report", "--tiny", "llama", "--text", "hi"])
    assert err.value.code == 2 and "--text" in capsys.readouterr().err
