"""``spikingbrain estimate``: the command line of the cost model (spikingbrain.estimate) on
sb_layers.models.spikingbrain.cost_model (the model itself: tests/models/test_cost_model.py)."""

from __future__ import annotations

import json

import pytest

from cost_model_testing import fixture_run, run_file  # noqa: F401  (fixture)
from sb_layers.models.spikingbrain.cost_model import ModelShape, estimate
from spikingbrain.cli import main


# --- the command ---------------------------------------------------------------------------------


def test_cli_prints_the_theory_table(capsys, tmp_path):
    out_json = tmp_path / "rows.json"
    assert main(["estimate", "--context", "4k", "128k", "--sparsity", "0.6915", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "R = alpha * (m/n) + (1 - alpha) * a * (k/M)" in out
    assert "128k" in out and "4k" in out
    rows = json.loads(out_json.read_text())["rows"]
    assert [r["context"] for r in rows] == [4096, 131072]
    assert rows[1]["speedup"] == pytest.approx(estimate(ModelShape(), 131072, active=1 - 0.6915).speedup)
    assert f"{rows[1]['speedup']:.2f}x" in out


def test_cli_compares_with_a_run(capsys, run_file):
    assert main(["estimate", "--run", str(run_file)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out
    for context in ("4k", "32k", "128k", "512k"):
        assert context in out
    assert f"{9372.0 / 2343.0:.2f}x" in out  # measured bf16 at 128k
    assert f"{estimate(ModelShape(), 131072).speedup:.2f}x" in out  # theory beside it


def test_cli_reads_a_model_config(capsys, tmp_path):
    from sb_layers.models.spikingbrain import SpikingBrainConfig

    SpikingBrainConfig(num_hidden_layers=4, attn_layers=[1], sliding_window=64).save_pretrained(tmp_path)
    assert main(["estimate", "--config", str(tmp_path / "config.json"), "--context", "1k"]) == 0
    out = capsys.readouterr().out
    assert "4 layers (GLA 3, SWA 1 with window 64, full 0)" in out


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_cli_estimates_the_spikingbrain_model_converted_from_a_transformer_folder(arch, capsys, tmp_path):
    """The issue: `estimate --config <a Qwen2 or Llama folder>` ended in a traceback ('Qwen2Config' object
    has no attribute 'variant'); it estimates the SpikingBrain model converted from that Transformer."""
    from sb_adapters.tiny import tiny_model

    tiny_model(arch).save_pretrained(tmp_path)  # 2 layers, width 32, 4 heads of 8, 2 kv heads, FFN 64
    capsys.readouterr()
    assert main(["estimate", "--config", str(tmp_path), "--context", "1k", "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert f"is a {arch} Transformer: the shape is that of the SpikingBrain model converted from it" in out
    assert "2 layers (GLA 1, SWA 1 with window 4096, full 0), hidden 32, heads 4/2 x 8, FFN 64" in out
    data = json.loads((tmp_path / "rows.json").read_text())
    assert data["shape"]["gla_layers"] == data["shape"]["swa_layers"] == 1 and len(data["rows"]) == 1


def test_cli_config_of_another_model_and_bad_json_are_one_line_naming_the_file(capsys, tmp_path):
    from sb_adapters.tiny import tiny_model

    def one_line(argv, *words):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["estimate", *argv])
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("spikingbrain estimate: error: ") and captured.out == "", captured.err
        for word in words:
            assert word in lines[0], (word, lines[0])

    tiny_model("gpt2").save_pretrained(tmp_path / "gpt2")
    one_line(["--config", str(tmp_path / "gpt2")], str(tmp_path / "gpt2" / "config.json"), "GPT2Config", "qwen2, llama, mistral")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    one_line(["--config", str(bad)], f"--config {str(bad)!r}", "not valid JSON")  # the file given, not its folder's config.json
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{not json")
    one_line(["--config", str(tmp_path / "folder")], str(tmp_path / "folder" / "config.json"), "not valid JSON")
    (tmp_path / "typeless.json").write_text('{"hidden_size": 32}')
    one_line(["--config", str(tmp_path / "typeless.json")], "typeless.json", "model_type")
    one_line(["--run", str(bad)], str(bad), "not valid JSON")
    (tmp_path / "schema.json").write_text('{"date": "today"}')
    one_line(["--run", str(tmp_path / "schema.json")], f"--run {str(tmp_path / 'schema.json')!r}", "'device'")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--alpha", "1.5"], ["--alpha", "[0, 1]"]),
        (["--sparsity", "-0.2"], ["--sparsity", "[0, 1]"]),
        (["--context", "zero"], ["--context"]),
        (["--expert-fraction", "0"], ["--expert-fraction", "(0, 1]"]),
        (["--gla-layers", "40"], ["gla_layers", "num_layers=28"]),
        (["--sparsity", "0.5", "--active-fraction", "0.5"], ["not allowed with"]),
    ],
)
def test_cli_rejects_bad_inputs_with_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_cli_run_rejects_decode_and_unknown_contexts(capsys, run_file):
    for argv, word in ((["--phase", "decode"], "prefill"), (["--context", "8k"], "matches no context")):
        with pytest.raises(SystemExit):
            main(["estimate", "--run", str(run_file), *argv])
        assert word in capsys.readouterr().err


def test_cli_takes_the_sparsity_from_a_spike_statistics_file(capsys, tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"total": {"silent_channel_fraction": 0.75}}))
    assert main(["estimate", "--spike-stats", str(path), "--context", "32k", "--json", str(tmp_path / "rows.json")]) == 0
    row = json.loads((tmp_path / "rows.json").read_text())["rows"][0]
    assert row["active_fraction"] == pytest.approx(0.25) and row["sources"]["active_fraction"] == "given"
    assert row["speedup"] == pytest.approx(estimate(ModelShape(), 32768, active=0.25).speedup)


def test_cli_takes_a_smaller_runs_head_layout_from_flags(tmp_path, capsys):
    run = fixture_run()
    run["config"].update(num_layers=4, gla_layers=2, swa_layers=[1, 3], window=64, hidden_size=128)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(run))
    with pytest.raises(SystemExit):
        main(["estimate", "--run", str(path)])
    assert "--num-heads" in capsys.readouterr().err
    flags = ["--num-heads", "4", "--num-kv-heads", "2", "--head-dim", "32", "--intermediate-size", "256"]
    assert main(["estimate", "--run", str(path), *flags]) == 0
    assert "4 layers (GLA 2, SWA 2 with window 64, full 0), hidden 128, heads 4/2 x 32, FFN 256" in capsys.readouterr().out


def _option_types(parser, command: str) -> dict[str, object]:
    sub = next(action for action in parser._actions if action.dest == "command").choices[command]
    return {action.option_strings[0]: action.type for action in sub._actions if action.option_strings}


def test_value_flags_share_the_argparse_types_of_spikingbrain_arguments():
    from spikingbrain.arguments import fraction, nonnegative_float
    from spikingbrain.cli import build_parser

    parser = build_parser()
    estimate_types, sweep_types = _option_types(parser, "estimate"), _option_types(parser, "sweep-k")
    for flag in ("--alpha", "--sparsity", "--active-fraction", "--expert-fraction"):
        assert estimate_types[flag] is fraction
    assert estimate_types["--attended-fraction"] is nonnegative_float
    assert sweep_types["--min-top1-agreement"] is fraction and sweep_types["--max-relative-error"] is nonnegative_float


@pytest.mark.parametrize(
    "type_name, text, message",
    [
        ("fraction", "x", "must be a number in [0, 1], got x"),
        ("fraction", "1.5", "must be in [0, 1], got 1.5"),
        ("fraction", "nan", "must be in [0, 1], got nan"),
        ("nonnegative_float", "y", "must be a number >= 0, got y"),
        ("nonnegative_float", "-1", "must be a finite number >= 0, got -1"),
        ("nonnegative_float", "inf", "must be a finite number >= 0, got inf"),
    ],
)
def test_shared_value_types_name_the_value_and_the_range(type_name, text, message):
    import argparse

    import spikingbrain.arguments

    check = getattr(spikingbrain.arguments, type_name)
    with pytest.raises(argparse.ArgumentTypeError) as error:
        check(text)
    assert str(error.value) == message
    assert check("0") == 0.0 and check("1") == 1.0
