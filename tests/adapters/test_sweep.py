"""sweep_k (accuracy / energy against k), the tiny model builders and the ``spikingbrain report | sweep-k``
commands (``python -m sb_adapters`` is their alias)."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import sys

import pytest
import torch
from torch import nn

from sb_adapters import SpikingConfig, get_spiking_config, inject_spiking, record_spikes, sweep_k, unload_spiking
from sb_adapters.sweep import output_tensor
from sb_adapters.tiny import CAUSAL_ARCHS, TINY_ARCHS, TINY_VOCAB, tiny_batches, tiny_model
from sb_layers import SpikeCoding
from spikingbrain.cli import main
from spikingbrain.inject import add_parsers
from spikingbrain.inject_run import run_command


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def test_tiny_models_are_reproducible_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a, b = tiny_model("llama", seed=1), tiny_model("llama", seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.lm_head.weight, tiny_model("llama", seed=2).lm_head.weight)
    assert set(CAUSAL_ARCHS) < set(TINY_ARCHS)
    ids = tiny_batches(1, batch=3, length=5)[0]["input_ids"]
    assert ids.shape == (3, 5) and int(ids.max()) < TINY_VOCAB
    with pytest.raises(ValueError, match="arch"):
        tiny_model("t5")
    with pytest.raises(ValueError, match="length"):
        tiny_batches(length=0)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_sweep_measures_each_k_against_the_dense_model_and_leaves_it_dense(arch):
    model = tiny_model(arch).train()
    before = state(model)
    modules = dict(model.named_modules())
    batches = tiny_batches(2, length=8)
    result = sweep_k(model, batches, ks=(64.0, 1.0, 4.0), progress=False)
    # model untouched: dense, same objects, same tensors, training mode kept
    assert get_spiking_config(model) is None and model.training
    assert all(module is modules[name] for name, module in model.named_modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert result.ks == [1.0, 4.0, 64.0] and result.output_name == "logits"
    errors = [p.relative_error for p in result.points]
    energy = [p.energy_pj_per_mac for p in result.points]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02  # finer coding as k grows...
    assert energy[0] < energy[1] < energy[2]  # ...paid in spikes
    assert result.points[2].top1_agreement >= result.points[0].top1_agreement
    # each point is what injecting at that k and comparing gives
    model.eval()
    with torch.no_grad():
        dense = [model(**batch).logits for batch in batches]
    inject_spiking(model, SpikingConfig(coding=SpikeCoding(k=4.0)))
    with torch.no_grad():
        spiking = [model(**batch).logits for batch in batches]
    point = result.points[1]
    diff = torch.cat([(s - d).flatten() for s, d in zip(spiking, dense, strict=True)]).double()
    reference = torch.cat([d.flatten() for d in dense]).double()
    assert point.max_abs_error == pytest.approx(float(diff.abs().max()))
    assert point.relative_error == pytest.approx(float(diff.norm() / reference.norm()))
    agree = sum(int((s.argmax(-1) == d.argmax(-1)).sum()) for s, d in zip(spiking, dense, strict=True))
    assert point.top1_agreement == pytest.approx(agree / sum(d[..., 0].numel() for d in dense))
    # its spike figures merge the per-batch reports exactly (integer sums)
    reports = [record_spikes(model, [batch]).report.total for batch in batches]
    spikes, channels = sum(r.total_spikes for r in reports), sum(r.num_channels for r in reports)
    assert point.mean_spikes_per_channel == pytest.approx(spikes / channels, rel=1e-12)
    unload_spiking(model)


def test_sweep_of_a_plain_module_compares_its_output_without_top1():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    result = sweep_k(model, [torch.randn(4, 16)], ks=[2.0, 20.0], progress=False)
    assert result.output_name == "output" and all(p.top1_agreement is None for p in result.points)
    assert all(0.0 < p.cosine_similarity <= 1.0 + 1e-12 for p in result.points)
    with pytest.raises(ValueError, match="needs logits"):
        result.recommend(min_top1_agreement=0.9)


def test_recommend_picks_the_cheapest_k_within_the_bounds():
    result = sweep_k(tiny_model("llama"), tiny_batches(2, length=8), ks=(1.0, 3.0, 10.0, 100.0), progress=False)
    bound = result.points[2].relative_error * 1.0001
    best = result.recommend(max_relative_error=bound)
    admissible = [p for p in result.points if p.relative_error <= bound]
    assert best in admissible and best.energy_pj_per_mac == min(p.energy_pj_per_mac for p in admissible)
    assert result.recommend(min_top1_agreement=0.0) == min(result.points, key=lambda p: p.energy_pj_per_mac)
    with pytest.raises(ValueError, match="no k"):
        result.recommend(max_relative_error=0.0)
    with pytest.raises(ValueError, match="max_relative_error and/or"):
        result.recommend()
    with pytest.raises(ValueError, match="min_top1_agreement"):
        result.recommend(min_top1_agreement=1.5)


def test_sweep_result_serializes_and_plots(tmp_path):
    result = sweep_k(tiny_model("qwen2"), tiny_batches(1, length=8), ks=(2.0, 8.0), config=SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=16)), progress=False)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["config"]["coding"]["weight_bits"] == 8 and [p["k"] for p in data["points"]] == [2.0, 8.0]
    text = str(result)
    assert "top-1" in text and "pJ/MAC" in text and text.count("\n") == 4
    figure = result.plot(tmp_path / "sweep.png")
    assert len(figure.axes) == 3  # error and energy panels, plus the top-1 twin axis
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rejects_bad_arguments():
    model = tiny_model("gpt2")
    batches = tiny_batches(1, length=4)
    for ks, match in (([], "at least one"), ([0.0], "> 0"), ([2.0, 2.0], "repeat"), ([float("nan")], "finite")):
        with pytest.raises(ValueError, match=match):
            sweep_k(model, batches, ks=ks, progress=False)
    with pytest.raises(ValueError, match="empty"):
        sweep_k(model, [], progress=False)
    with pytest.raises(TypeError, match="SpikingConfig"):
        sweep_k(model, batches, config={"k": 3}, progress=False)
    with pytest.raises(ValueError, match="no module to spike-code"):
        sweep_k(model, batches, ks=[3.0], config=SpikingConfig(target_modules=["q_proj"]), progress=False)
    assert get_spiking_config(model) is None  # a failing injection leaves the model dense
    inject_spiking(model, SpikingConfig())
    with pytest.raises(ValueError, match="dense model"):
        sweep_k(model, batches, progress=False)
    with pytest.raises(TypeError, match="output tensor"):
        output_tensor({"loss": 1.0})


def test_command_line_sweep_writes_table_json_and_plot(tmp_path, capsys):
    code = main(["sweep-k", "--tiny", "opt", "--k", "1", "16", "--batches", "1", "--length", "8", "--out", str(tmp_path), "--min-top1-agreement", "0.0"])
    out = capsys.readouterr().out
    assert code == 0 and "k sweep" in out and "recommended k = 1" in out
    data = json.loads((tmp_path / "sweep_k.json").read_text())
    assert [p["k"] for p in data["points"]] == [1.0, 16.0]
    assert (tmp_path / "sweep_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["sweep-k", "--tiny", "opt", "--k", "1", "--batches", "1", "--length", "4", "--out", str(tmp_path), "--max-relative-error", "0"]) == 1


def test_command_line_report_on_a_saved_model_and_config(tmp_path, capsys, monkeypatch):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    SpikingConfig(target_modules=["q_proj", "v_proj"], coding=SpikeCoding(k=5.0)).save_pretrained(tmp_path / "spiking")
    monkeypatch.setattr(sys, "argv", ["sb_adapters", "report", "--model", str(tmp_path / "model"), "--config", str(tmp_path / "spiking"),
                                      "--batches", "2", "--length", "6", "--json", str(tmp_path / "report.json")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("sb_adapters", run_name="__main__")  # python -m sb_adapters
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "model.layers.0.self_attn.q_proj" in out and "FP16" in out
    assert "model.layers.0.self_attn.k_proj: Linear, not targeted" in out  # listed as kept dense, not in the table
    assert not re.search(r"^\S*k_proj\s+[\d.]", out, re.M)
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["layers"]) == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    assert data["total"]["num_channels"] == 2 * 2 * 6 * 32 * 4  # batches x batch x length x width x layers


def test_command_line_rejects_bad_options(capsys):
    for argv, match in ((["sweep-k", "--tiny", "gpt2", "--k", "0"], "must be > 0"), (["report", "--tiny", "gpt2", "--text", "hi"], "--text"),
                        (["report"], "--tiny"), (["report", "--tiny", "t5"], "invalid choice"),
                        (["report", "--tiny", "gpt2", "--batches", "1", "--codec", "morse"], "codec")):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2 and match in capsys.readouterr().err


def test_subcommands_can_be_hosted_by_another_command_line(capsys):
    host = argparse.ArgumentParser(prog="spikingbrain")
    sub = host.add_subparsers(dest="command", required=True)
    sub.add_parser("demo")
    add_parsers(sub)
    args = host.parse_args(["report", "--tiny", "mistral", "--k", "2", "--batches", "1", "--length", "4", "--target-modules", "q_proj,o_proj"])
    assert run_command(args) == 0
    out = capsys.readouterr().out
    assert "model.layers.1.self_attn.o_proj" in out
    assert "self_attn.v_proj: Linear, not targeted" in out and not re.search(r"^\S*v_proj\s+[\d.]", out, re.M)
