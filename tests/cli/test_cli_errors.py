"""What a new user trips over on the command line (issue 24): unusable paths are one-line usage errors
found before any work, the defaults work on every built-in model, errors name the flag that fixes them,
``--help`` describes each command with its defaults and choices, ``report`` lists what was injected and
what was kept dense, and ``python -m sb_adapters`` is an alias of ``spikingbrain``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb_adapters.config import SpikingConfig
from sb_layers import SpikeCoding
from sb_adapters.tiny import TINY_ARCHS, tiny_model
from sb_neurons import CODEC_NAMES
from spikingbrain.cli import main
from spikingbrain.inject_run import fitting_group_size


def spikingbrain(*argv: str, env: dict[str, str] | None = None, module: str = "spikingbrain.cli") -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=300, env=environment)


def assert_usage_error(stderr: str, *words: str) -> None:
    """One line ``spikingbrain COMMAND: error: ...`` naming ``words``, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("spikingbrain") and ": error: " in lines[0], stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, stderr)


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


# --- 1. paths are checked before any work --------------------------------------------------------


def test_the_issues_four_bad_paths_fail_at_once_in_one_line(tmp_path, a_file):
    cases = [
        (["report", "--model", "/nonexistent/dir"], ["--model", "/nonexistent/dir"]),
        (["report", "--tiny", "gpt2", "--config", "/nonexistent"], ["--config", "/nonexistent"]),
        (["report", "--tiny", "gpt2", "--json", str(a_file / "x.json")], ["--json", "is a file"]),
        (["demo", "--out", str(a_file / "x"), "--no-model"], ["--out", "is a file"]),
    ]
    if Path("/proc/self").is_dir():  # Linux: nothing can be created in /proc, not even by root
        cases.append((["demo", "--out", "/proc/x", "--no-model"], ["--out", "/proc"]))
    for argv, words in cases:
        result = spikingbrain(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stdout == "", f"{argv}: work was done before the error"  # no table, no report
        assert_usage_error(result.stderr, *words)
    assert not (a_file.parent / "x").exists()


def test_python_m_sb_adapters_is_an_alias_with_the_same_errors_and_help():
    alias = spikingbrain("report", "--model", "./no/such/model", module="sb_adapters")
    direct = spikingbrain("report", "--model", "./no/such/model")
    assert alias.returncode == direct.returncode == 2 and alias.stderr == direct.stderr
    assert_usage_error(alias.stderr, "--model")
    assert spikingbrain("--help", module="sb_adapters").stdout == spikingbrain("--help").stdout


def test_a_hub_id_is_read_from_the_local_cache_only(tmp_path):
    """--model ORG/NAME: the cached snapshot is loaded; an id not in the cache fails at once (no network)."""
    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    tiny_model("llama").save_pretrained(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    result = spikingbrain("report", "--model", "someone/tiny-llama", "--batches", "1", "--length", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert "model.layers.0.self_attn.q_proj: Linear -> SpikingLinear" in result.stdout
    missing = spikingbrain("report", "--model", "someone/not-cached", env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert_usage_error(missing.stderr, "--model", "someone/not-cached", "local cache", "hf download")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["report", "--model", "a/b/c"], ["--model", "no such folder", "hub id"]),
        (["report", "--model", "{file}"], ["--model", "must be a model folder"]),
        (["report", "--model", "{tmp}"], ["--model", "config.json"]),
        (["report", "--tiny", "gpt2", "--config", "{tmp}"], ["--config", "spiking_config.json"]),
        (["report", "--tiny", "gpt2", "--config", "{file}"], ["--config", "not a valid SpikingConfig"]),
        (["report", "--tiny", "gpt2", "--json", "{tmp}"], ["--json", "folder"]),
        (["report", "--tiny", "gpt2", "--json", ""], ["--json", "empty"]),
        (["sweep-k", "--tiny", "opt", "--out", "{file}"], ["--out", "must be a folder"]),
        (["sweep-k", "--tiny", "opt", "--out", "{file}/sub"], ["--out", "is a file"]),
        (["sweep-k", "--tiny", "opt", "--k", "1", "1"], ["--k", "repeat"]),
        (["demo", "--out", "{file}"], ["--out", "must be a folder"]),
        (["estimate", "--run", "{tmp}/missing.json"], ["--run", "no such file"]),
        (["estimate", "--run", "{tmp}"], ["--run", "must be a file"]),
        (["estimate", "--spike-stats", "{tmp}/missing.json"], ["--spike-stats", "no such file"]),
        (["estimate", "--config", "{tmp}"], ["--config", "config.json"]),
        (["estimate", "--config", "{tmp}/missing.json"], ["--config", "no such file"]),
        (["estimate", "--json", "{file}/rows.json"], ["--json", "is a file"]),
        (["estimate", "--run", "{file}", "--phase", "decode"], ["--phase", "prefill"]),
    ],
)
def test_every_path_argument_is_checked_before_the_work(argv, words, tmp_path, a_file, capsys):
    argv = [arg.format(tmp=tmp_path, file=a_file) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "", "nothing may run before the arguments are checked"
    assert_usage_error(captured.err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "a failed command must not leave files"


def test_output_folders_are_created_for_json_files(tmp_path, capsys):
    target = tmp_path / "new" / "folder" / "report.json"
    assert main(["report", "--tiny", "opt", "--batches", "1", "--length", "4", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["total"]["num_channels"] > 0
    rows = tmp_path / "other" / "rows.json"
    assert main(["estimate", "--context", "4k", "--json", str(rows)]) == 0
    assert [r["context"] for r in json.loads(rows.read_text())["rows"]] == [4096]


# --- 2. defaults that fit every built-in model, errors that name the fixing flag --------------------


def test_fitting_group_size_is_the_largest_power_of_two_dividing_all():
    assert fitting_group_size([4096, 11008]) == 128  # SpikingBrain-7B / Qwen2.5-7B widths: as released
    assert fitting_group_size([32, 128]) == 32  # the tiny gpt2
    assert fitting_group_size([96, 64]) == 32
    assert fitting_group_size([7, 64]) == 1


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_weight_bits_works_with_the_default_group_size_on_every_tiny_model(arch, tmp_path, capsys):
    path = tmp_path / "report.json"
    assert main(["report", "--tiny", arch, "--weight-bits", "8", "--batches", "1", "--length", "4", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "int8 weights, group 32" in out  # the tiny models' in_features are 32 and 64 or 128
    layers = json.loads(path.read_text())["layers"]
    assert layers and all(layer["in_features"] % 32 == 0 for layer in layers.values())


def test_a_group_size_that_does_not_fit_names_the_flag_and_the_value_that_fits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--tiny", "gpt2", "--weight-bits", "8", "--group-size", "128"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_usage_error(captured.err, "--group-size 128", "in_features=32", "--group-size auto", "32")
    for group, shown in (("16", "group 16"), ("none", "group None")):
        assert main(["report", "--tiny", "gpt2", "--weight-bits", "8", "--group-size", group, "--batches", "1", "--length", "4"]) == 0
        assert shown in capsys.readouterr().out


def test_a_config_files_group_size_that_does_not_fit_names_the_file(tmp_path, capsys):
    SpikingConfig(coding=SpikeCoding(weight_bits=8, group_size=64)).save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep-k", "--tiny", "gpt2", "--config", str(tmp_path), "--k", "3", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert_usage_error(capsys.readouterr().err, "group_size=64", "--config", "32")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--weight-bits", "9"], ["--weight-bits", "[2, 8]"]),
        (["--group-size", "0"], ["--group-size", "auto"]),
        (["--codec", "morse"], ["--codec", "codec", "bitwise_bidirectional"]),
        (["--dense-layers", "-1"], ["--dense-layers"]),
        (["--target-modules", "("], ["--target-modules", "regular expression"]),
        (["--target-modules", ".*"], ["target module", "exclude_modules"]),  # a non-linear module selected
    ],
)
def test_bad_spiking_options_are_usage_errors(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--tiny", "gpt2", "--batches", "1", "--length", "4", *argv])
    assert exit_info.value.code == 2
    assert_usage_error(capsys.readouterr().err, *words)


# --- 3. help texts and what report prints ----------------------------------------------------------


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_report_and_sweep_help_describe_the_command_its_defaults_and_choices(capsys):
    report = help_text(capsys, "report")
    assert "which modules were spike-coded and which were kept dense" in report
    assert "spikingbrain report --tiny gpt2 --weight-bits 8" in report  # an example
    for text in ("--k K threshold divisor", "(default: 3.0)", "(default: auto)", "(default: bitwise_bidirectional)",
                 "(default: 4)", "(default: 16)", "(default: 0)", "local cache", "nothing is downloaded"):
        assert text in report, text
    for codec in CODEC_NAMES:
        assert codec in report
    for arch in TINY_ARCHS:
        assert arch in report
    sweep = help_text(capsys, "sweep-k")
    assert "accuracy / energy trade-off of k" in sweep and "recommend the cheapest k" in sweep
    assert "(default: sweep-k)" in sweep and "(default: [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0])" in sweep
    demo = help_text(capsys, "demo")
    assert "(default: spikingbrain-demo)" in demo and "(default: [1.0, 3.0, 8.0])" in demo
    top = help_text(capsys)
    for command in ("demo", "estimate", "report", "sweep-k", "python -m sb_adapters"):
        assert command in top


def test_report_lists_the_injected_and_the_dense_modules_before_the_table(capsys):
    argv = ["report", "--tiny", "llama", "--target-modules", "q_proj,v_proj", "--dense-layers", "1", "--batches", "1", "--length", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary, table = out.split("\nlayer ", 1)
    assert "spiking: 2 modules spike-coded" in summary
    for projection in ("q_proj", "v_proj"):
        assert f"model.layers.0.self_attn.{projection}: Linear -> SpikingLinear" in summary
        assert f"model.layers.1.self_attn.{projection}: Linear, dense_layers (layer 1)" in summary
    assert "model.layers.0.self_attn.k_proj: Linear, not targeted" in summary
    assert "lm_head: Linear, output head" in summary
    dense = summary.split("kept dense: ", 1)[1]
    assert dense.startswith("13 linear modules")  # 2 layers x 7 projections + head - 2 injected
    rows = [line.split()[0] for line in table.splitlines()[2:] if line.startswith("model.")]
    assert rows == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
