"""``spikingbrain report`` / ``sweep-k`` as new users ran them (issue "What new users tripped over"):

1. a folder saved from an injected model is reported as saved (its spiking_config.json and
   spiking_state.safetensors), ``sweep-k`` starts from it, and a flag that contradicts it overrides it
   with a warning naming both;
3. ``--text`` on a folder without tokenizer files is a one-line usage error, found before the model loads;
5. ``report --choose-dense-layers`` prints sb_adapters.choose_dense_layers' table and reports the model
   with those layers dense; ``--dense-layers`` naming no layer is a one-line usage error;
8. the flags are named as the API's keywords (``--codec``, ``--min-top1-agreement``, ...).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from sb_adapters import (
    KSweep,
    SpikingConfig,
    choose_dense_layers,
    from_pretrained_spiking,
    inject_spiking,
    spiking_layers,
    sweep_k,
)
from safetensors.torch import load_file

from sb_layers import record_spikes
from sb_adapters.tiny import tiny_batches, tiny_model
from spikingbrain.cli import build_parser, main
from spikingbrain.inject import SPIKING_FLAGS
from spikingbrain.inject_run import has_tokenizer_files

SAVED = SpikingConfig(k=4.0, codec="ternary", dense_layers=[1], weight_bits=8, group_size=32)
"""The issue's model: ternary, k=4, layer 1 dense (int8 weights, so that a spiking state is saved)."""


def one_line_error(capsys, argv: list[str], *words: str) -> None:
    """``main(argv)`` exits with status 2 and one line on stderr naming ``words``; nothing on stdout."""
    capsys.readouterr()  # what the test's own setup printed (progress bars of save_pretrained)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikingbrain") and ": error: " in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny Llama injected with :data:`SAVED`, its weight scales changed (as calibration would), saved
    with ``model.save_pretrained``: the dense weights, spiking_config.json and spiking_state.safetensors."""
    folder = tmp_path_factory.mktemp("saved-spiking-model")
    model = inject_spiking(tiny_model("llama"), SAVED)
    with torch.no_grad():
        for layer in spiking_layers(model).values():
            layer.weight_quantizer.scales.mul_(1.5)  # not the max-abs scales a fresh injection computes
    model.save_pretrained(folder)
    assert {"spiking_config.json", "spiking_state.safetensors", "config.json"} <= {p.name for p in folder.iterdir()}
    return folder


def dense_checkpoint(folder: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def report_json(capsys, argv: list[str], path: Path) -> tuple[dict, str, str]:
    capsys.readouterr()
    assert main([*argv, "--batches", "1", "--length", "6", "--json", str(path)]) == 0
    captured = capsys.readouterr()
    return json.loads(path.read_text()), captured.out, captured.err


# --- 1. a saved spiking model reports as saved -------------------------------------------------------


def test_report_of_a_saved_spiking_model_uses_its_config_and_state(saved_model, tmp_path, capsys):
    data, out, err = report_json(capsys, ["report", "--model", str(saved_model)], tmp_path / "r.json")
    assert err == "" or "warning" not in err  # nothing contradicts the saved configuration
    assert "as saved (spiking_config.json, spiking_state.safetensors)" in out
    assert "k=4, ternary" in out and "int8 weights, group 32" in out
    assert "model.layers.1.self_attn.q_proj: Linear, dense_layers (layer 1)" in out
    assert set(data["layers"]) == {name for name in data["layers"] if name.startswith("model.layers.0.")}
    # the same report as the library's model loaded from that folder (config and saved scales) ...
    expected, _ = record_spikes(from_pretrained_spiking(saved_model), tiny_batches(1, length=6))
    assert data == json.loads(json.dumps(expected.as_dict()))
    # ... which the saved scales change: a fresh injection with the same config (max-abs scales) differs
    fresh, _ = record_spikes(inject_spiking(tiny_model("llama"), SAVED), tiny_batches(1, length=6))
    assert data != json.loads(json.dumps(fresh.as_dict()))


def test_a_flag_that_contradicts_the_saved_config_overrides_it_and_says_so(saved_model, tmp_path, capsys):
    argv = ["report", "--model", str(saved_model), "--k", "5", "--codec", "binary", "--weight-bits", "8"]
    data, out, err = report_json(capsys, argv, tmp_path / "r.json")
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 2, err  # --weight-bits 8 is the saved value: no warning
    assert f"--k 5 overrides k=4 of the spiking_config.json saved with --model {str(saved_model)!r}" in warnings[0]
    assert "--codec binary overrides codec=ternary" in warnings[1]
    assert "k=5, binary" in out and "model.layers.1.mlp.up_proj: Linear, dense_layers (layer 1)" in out
    assert "7 of 7 spiking tensors restored from spiking_state.safetensors" in out  # same weight quantization
    # what the library gives: the dense checkpoint injected with the overridden config, the saved scales restored
    model = inject_spiking(dense_checkpoint(saved_model), SpikingConfig(k=5.0, codec="binary", dense_layers=[1], weight_bits=8, group_size=32))
    with torch.no_grad():
        for key, value in load_file(saved_model / "spiking_state.safetensors").items():
            model.get_buffer(key).copy_(value)
    expected, _ = record_spikes(model, tiny_batches(1, length=6))
    assert data == json.loads(json.dumps(expected.as_dict()))

    _, out, err = report_json(capsys, ["report", "--model", str(saved_model), "--weight-bits", "4", "--dense-layers", "0"], tmp_path / "s.json")
    assert "--weight-bits 4 overrides weight_bits=8" in err and "--dense-layers 0 overrides dense_layers=1" in err
    assert "spiking_state.safetensors not restored" in out and "int4 weights" in out
    assert "model.layers.0.self_attn.q_proj: Linear, dense_layers (layer 0)" in out


def test_a_config_file_replaces_the_saved_config_with_a_warning(saved_model, tmp_path, capsys):
    SpikingConfig(target_modules=["q_proj"], k=2.0).save_pretrained(tmp_path / "other")
    data, out, err = report_json(capsys, ["report", "--model", str(saved_model), "--config", str(tmp_path / "other")], tmp_path / "r.json")
    assert "--config" in err and "replaces the spiking_config.json saved with --model" in err
    assert set(data["layers"]) == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}


def test_sweep_k_starts_from_the_saved_config(saved_model, tmp_path, capsys):
    assert main(["sweep-k", "--model", str(saved_model), "--k", "1", "8", "--batches", "1", "--length", "6", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep-k from the spiking configuration of --model" in out and "its k = 4" in out
    points = json.loads((tmp_path / "sweep_k.json").read_text())["points"]
    expected = sweep_k(dense_checkpoint(saved_model), tiny_batches(1, length=6), ks=[1.0, 8.0], config=SAVED, progress=False)
    assert [p["relative_error"] for p in points] == pytest.approx([p.relative_error for p in expected.points])
    assert [p["firing_rate"] for p in points] == pytest.approx([p.firing_rate for p in expected.points])
    # by default the swept values include the saved k
    folder = tmp_path / "k5-model"
    inject_spiking(tiny_model("llama"), SpikingConfig(k=5.0)).save_pretrained(folder)
    assert main(["sweep-k", "--model", str(folder), "--batches", "1", "--length", "4", "--out", str(tmp_path / "k5")]) == 0
    assert 5.0 in [p["k"] for p in json.loads((tmp_path / "k5" / "sweep_k.json").read_text())["points"]]


def test_a_bad_saved_config_is_a_usage_error(tmp_path, capsys):
    tiny_model("llama").save_pretrained(tmp_path)
    (tmp_path / "spiking_config.json").write_text('{"k": 4}')  # an old flat layout
    one_line_error(capsys, ["report", "--model", str(tmp_path)], "--model", "spiking_config.json", "coding.k")


# --- 3. --text needs the tokenizer's files ----------------------------------------------------------


def save_word_tokenizer(folder: Path, size: int = 64) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>").save_pretrained(folder)


@pytest.mark.parametrize("command", ["report", "sweep-k"])
@pytest.mark.parametrize("arch", ["qwen2", "opt", "llama"])  # transformers builds an empty tokenizer for the first two
def test_text_on_a_folder_without_tokenizer_files_is_one_line(arch, command, tmp_path, capsys):
    tiny_model(arch).save_pretrained(tmp_path / "model")
    assert not has_tokenizer_files(tmp_path / "model")
    argv = [command, "--model", str(tmp_path / "model"), "--text", "Hello"]
    if command == "sweep-k":
        argv += ["--out", str(tmp_path / "out")]
    one_line_error(capsys, argv, "--text", "tokenizer", "no tokenizer files", "tokenizer.save_pretrained")
    assert not (tmp_path / "out").exists()


def test_text_with_the_tokenizer_saved_beside_the_model(tmp_path, capsys):
    tiny_model("llama").save_pretrained(tmp_path)
    save_word_tokenizer(tmp_path)
    assert has_tokenizer_files(tmp_path)
    texts = ["w5 w17 w42", "w8"]
    assert main(["report", "--model", str(tmp_path), "--text", texts[0], "--text", texts[1], "--json", str(tmp_path / "r.json")]) == 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    expected, _ = record_spikes(inject_spiking(dense_checkpoint(tmp_path), SpikingConfig()), [dict(tokenizer(t, return_tensors="pt")) for t in texts])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(expected.as_dict()))
    assert expected.total.num_channels > 0
    one_line_error(capsys, ["report", "--model", str(tmp_path), "--text", ""], "--text ''", "no token")


def test_a_tokenizer_that_gives_no_token_is_one_line(tmp_path, capsys):
    """transformers reads a qwen2 folder's tokenizer as Qwen2Tokenizer (vocab.json + merges.txt): a
    tokenizer.json alone gives it an empty vocabulary, and every text no token."""
    tiny_model("qwen2").save_pretrained(tmp_path)
    save_word_tokenizer(tmp_path)
    one_line_error(capsys, ["report", "--model", str(tmp_path), "--text", "w5 w17"], "--text 'w5 w17'", "no token")


# --- 5. --choose-dense-layers, --dense-layers out of range ------------------------------------------


def test_choose_dense_layers_prints_the_table_then_reports_with_those_layers_dense(tmp_path, capsys):
    bound = 0.05
    choice = choose_dense_layers(tiny_model("llama"), tiny_batches(1, length=4), SpikingConfig(), max_relative_error=bound, progress=False)
    assert choice.dense_layers == (0,)  # precondition: the bound keeps one of the two layers dense
    argv = ["report", "--tiny", "llama", "--batches", "1", "--length", "4", "--choose-dense-layers", "--max-relative-error", str(bound)]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    table, report = out.split("\n\n", 1)
    assert table == choice.format()
    assert "layer    rel.err   top-1  kept dense" in table and "model with layers [0] dense" in table
    assert "model.layers.0.self_attn.q_proj: Linear, dense_layers (layer 0)" in report
    assert "model.layers.1.self_attn.q_proj: Linear -> SpikingLinear" in report
    assert all(name.startswith("model.layers.1.") for name in json.loads((tmp_path / "r.json").read_text())["layers"])


def test_choose_dense_layers_with_a_top1_bound_and_when_nothing_can_stay_spiking(capsys):
    base = ["report", "--tiny", "gpt2", "--batches", "1", "--length", "4", "--choose-dense-layers"]
    assert main([*base, "--min-top1-agreement", "0.5"]) == 0
    assert "kept dense" in capsys.readouterr().out
    assert main([*base, "--max-relative-error", "0"]) == 1  # every layer would have to stay dense
    captured = capsys.readouterr()
    assert "kept dense" in captured.out and "no layer can stay spike-coded" in captured.err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--choose-dense-layers"], ["--choose-dense-layers", "--max-relative-error", "--min-top1-agreement"]),
        (["--max-relative-error", "0.1"], ["--choose-dense-layers"]),
        (["--min-top1-agreement", "0.9"], ["--choose-dense-layers"]),
        (["--min-top1-agreement", "2"], ["--min-top1-agreement", "[0, 1]"]),
    ],
)
def test_choose_dense_layers_needs_its_bound(argv, words, capsys):
    one_line_error(capsys, ["report", "--tiny", "llama", *argv], *words)


@pytest.mark.parametrize("command", [["report"], ["sweep-k", "--k", "1"]])
def test_dense_layers_out_of_range_is_one_line(command, tmp_path, capsys):
    argv = [*command, "--tiny", "llama", "--batches", "1", "--length", "4", "--dense-layers", "9"]
    if command[0] == "sweep-k":
        argv += ["--out", str(tmp_path / "out")]
    one_line_error(capsys, argv, "--dense-layers 9", "names no layer", "0..1")


# --- 8. one name per thing: the flags are the API's keywords -----------------------------------------


def _options(command: str) -> dict[str, str]:
    """``--flag -> dest`` of a subcommand's options."""
    sub = next(action for action in build_parser()._actions if action.dest == "command").choices[command]
    return {max(action.option_strings, key=len): action.dest for action in sub._actions if action.option_strings}


@pytest.mark.parametrize("command", ["report", "sweep-k"])
def test_flag_names_are_the_api_keyword_names(command):
    options = _options(command)
    for flag, dest in options.items():
        assert flag == "--" + dest.replace("_", "-") or dest == "help", (flag, dest)  # one spelling: the flag is its keyword
    config_keywords = set(inspect.signature(SpikingConfig).parameters)
    assert set(SPIKING_FLAGS) <= config_keywords and set(SPIKING_FLAGS.values()) <= set(options)
    assert "--codec" in options and "--coding" not in options  # SpikingConfig(codec=...); coding= is the SpikeCoding
    bounds = {"max_relative_error", "min_top1_agreement"}
    assert bounds <= set(inspect.signature(KSweep.recommend).parameters)
    assert bounds <= set(inspect.signature(choose_dense_layers).parameters)
    assert {"--max-relative-error", "--min-top1-agreement"} <= set(options) and "--min-top1" not in options


def test_the_old_codec_flag_is_gone(tmp_path, capsys):
    one_line_error(capsys, ["sweep-k", "--tiny", "opt", "--out", str(tmp_path), "--coding", "ternary"], "unrecognized arguments: --coding")
