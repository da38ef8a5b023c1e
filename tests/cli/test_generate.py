"""``spikingbrain generate`` on tiny checkpoint folders written in the release's layout (bf16 and W8ASpike,
told apart by their keys only: both carry the same config.json) and in ours, with a tokenizer built here
(a word-level vocabulary as large as the model's, saved beside the weights): the streamed text equals
``model.generate``'s greedy continuation of the same prompt, tokens/s and the peak memory are printed, and
each problem a user can fix is a one-line error with exit status 2, found before the model is loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import spikingbrain.generate as generate_module
from sb_layers.models.spikingbrain import (
    SpikingBrainConfig,
    SpikingBrainForCausalLM,
    save_released_checkpoint,
    to_w8aspike,
)
from spikingbrain.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)

VOCAB = 101
PROMPT = "w5 w17 w42 w8 w99"
TINY = dict(  # SpikingBrain-7B's layout at tiny size: GLA and SWA alternating, as released
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=48, sliding_window=6, attn_layers=[1, 3], rope_theta=100.0, initializer_range=0.2,
    bos_token_id=1, eos_token_id=2,
)


def save_tokenizer(folder: Path, size: int = VOCAB) -> None:
    """A word-level tokenizer of ``size`` tokens (``<unk>``, ``<s>``, ``</s>``, then ``w3`` ... ``w{size-1}``,
    ids equal to the numbers), saved as transformers saves a fast tokenizer: tokenizer.json + tokenizer_config.json."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, size)}}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(folder)


def tiny_model(seed: int = 0) -> SpikingBrainForCausalLM:
    torch.manual_seed(seed)
    return SpikingBrainForCausalLM(SpikingBrainConfig(**TINY)).eval()


def write_release_folder(folder: Path, w8aspike: bool = False, tokenizer: bool = True) -> Path:
    """A tiny checkpoint in the release's layout: config.json (model_type "gla_swa", the float config for
    both kinds, as released) and safetensors shards with an index; bf16 weights, or W8ASpike's float32
    weights with ``weight_quantizer.scales`` (group 16) and the merged GLA gate."""
    model = tiny_model()
    dtype = torch.bfloat16
    if w8aspike:
        model, dtype = to_w8aspike(model, group_size=16), None  # float32, as released
    save_released_checkpoint(model.state_dict(), SpikingBrainConfig(**TINY), folder, max_shard_bytes=40_000, dtype=dtype)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gla_swa" and (folder / "model.safetensors.index.json").is_file()
    assert "spiking" not in config or not config["spiking"], "W8ASpike must be told by the weights' names alone"
    if tokenizer:
        save_tokenizer(folder)
    return folder


def expected_text(folder: Path, max_new_tokens: int) -> str:
    """The greedy continuation that model.generate gives for PROMPT, decoded as the streamer prints it."""
    model = SpikingBrainForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids.shape[1]:]
    assert len(new) > 3, "the tiny model should not stop at once"
    return tokenizer.decode(new, skip_special_tokens=True)


def run(capsys, *argv: str) -> tuple[str, str]:
    assert main(["generate", *argv]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def fails(capsys, *argv: str) -> str:
    """The one-line error of a failing ``spikingbrain generate`` (exit status 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *argv])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "", "nothing may be generated before the error"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikingbrain generate: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# --- runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w8aspike", [False, True], ids=["bf16", "w8aspike"])
def test_release_layout_streams_the_greedy_text_of_model_generate(tmp_path, capsys, w8aspike):
    folder = write_release_folder(tmp_path, w8aspike=w8aspike)
    want = expected_text(folder, 12)
    capsys.readouterr()
    out, err = run(capsys, "--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "12", "--device", "cpu", "--dtype", "float32")
    assert out == want + "\n"  # the continuation alone, streamed; the figures go to stderr
    assert "the release's layout (gla_swa)" in err and "as float32 on cpu" in err
    assert ("W8ASpike: int8 weight groups of 16" in err) is w8aspike and ("bf16 layout" in err) is not w8aspike
    figures = err.splitlines()
    assert any("new tokens in" in line and "tokens/s" in line and "first token after" in line for line in figures), err
    assert any(line.startswith("peak memory: peak resident memory of the process") and "GiB" in line for line in figures), err


def test_prompt_from_a_file_or_stdin_and_our_layout(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ours"
    tiny_model().save_pretrained(folder)  # our layout: model_type "spikingbrain", one safetensors file
    save_tokenizer(folder)
    want = expected_text(folder, 6)
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    capsys.readouterr()
    out, err = run(capsys, "--model", str(folder), "--file", str(prompt), "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32")
    assert out == want + "\n" and "our layout (spikingbrain)" in err
    monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(PROMPT))
    out, _ = run(capsys, "--model", str(folder), "--file", "-", "--max-new-tokens", "6", "--device", "cpu", "--dtype", "float32")
    assert out == want + "\n"


@pytest.mark.parametrize("w8aspike", [False, True], ids=["bf16", "w8aspike"])
def test_the_graphed_decode_loop_streams_the_same_text(tmp_path, capsys, w8aspike):
    """The loop that streams a GraphedDecoder's steps on a GPU, run here with the same steps uncaptured:
    the text of model.generate, one timestamp per new token, stopped at max_new_tokens."""
    folder = write_release_folder(tmp_path, w8aspike=w8aspike)
    want = expected_text(folder, 9)
    model = SpikingBrainForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(folder)(PROMPT, return_tensors="pt").input_ids
    capsys.readouterr()
    streamer = generate_module._TimedStreamer(AutoTokenizer.from_pretrained(folder))
    with torch.inference_mode():
        assert generate_module._generate_graphed(model, ids, 9, streamer, use_cuda_graph=False)
    assert capsys.readouterr().out == want + "\n" and len(streamer.times) == 9
    third = int(AutoTokenizer.from_pretrained(folder)(want, return_tensors="pt").input_ids[0, 2])
    model.generation_config.eos_token_id = [third]  # an end-of-sequence token: the loop stops on it
    streamer = generate_module._TimedStreamer(AutoTokenizer.from_pretrained(folder))
    with torch.inference_mode():
        assert generate_module._generate_graphed(model, ids, 9, streamer, use_cuda_graph=False)
    assert capsys.readouterr().out.split() == want.split()[:want.split().index(f"w{third}") + 1]


def test_default_dtype_on_the_cpu_is_bfloat16(tmp_path, capsys):
    folder = write_release_folder(tmp_path)
    out, err = run(capsys, "--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "3", "--device", "cpu")
    assert "as bfloat16 on cpu" in err and out.strip()


def test_weight_bytes_read_from_the_headers(tmp_path):
    """bf16 release: 2 bytes a weight in bf16, 4 in float32; W8ASpike: its float32 scales kept, and on a
    GPU one byte more per spike-coded weight (the int8 codes the Triton path keeps)."""
    folder = write_release_folder(tmp_path / "bf16", tokenizer=False)
    numel = sum(p.numel() for p in tiny_model().parameters())
    assert generate_module.weight_bytes(folder, "bfloat16") == (2 * numel, 0)
    assert generate_module.weight_bytes(folder, "float32") == (4 * numel, 0)
    w8 = write_release_folder(tmp_path / "w8", w8aspike=True, tokenizer=False)
    model = SpikingBrainForCausalLM.from_pretrained(w8, dtype=torch.bfloat16)
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    weights, codes = generate_module.weight_bytes(w8, "bfloat16", "cuda:0")
    assert weights == held
    spiking = [m for m in model.modules() if getattr(m, "weight_quantizer", None) is not None]
    assert codes == sum(m.weight.numel() for m in spiking) > 0
    assert generate_module.weight_bytes(w8, "bfloat16", "cpu") == (held, 0)


# --- one-line errors, exit status 2 ----------------------------------------------------------------


def test_missing_folder(tmp_path, capsys):
    line = fails(capsys, "--model", str(tmp_path / "missing"))
    assert "--model" in line and "no such folder" in line and "missing" in line


def test_folder_without_tokenizer_files(tmp_path, capsys):
    folder = write_release_folder(tmp_path, tokenizer=False)
    line = fails(capsys, "--model", str(folder))
    assert "--model" in line and "no tokenizer files" in line and "tokenizer.json" in line


@pytest.mark.parametrize("missing, words", [("config.json", ["no config.json"]), ("model.safetensors.index.json", ["no safetensors weights"])])
def test_folder_without_config_or_weights(tmp_path, capsys, missing, words):
    folder = write_release_folder(tmp_path)
    (folder / missing).unlink()
    line = fails(capsys, "--model", str(folder))
    assert "--model" in line and all(word in line for word in words)


def test_weights_of_mismatched_shapes(tmp_path, capsys):
    folder = write_release_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = 64  # config.json of another model: the MLP weights are 48 wide
    (folder / "config.json").write_text(json.dumps(config))
    line = fails(capsys, "--model", str(folder), "--device", "cpu")
    assert "size mismatch" in line and "model.layers.0.mlp.gate_proj.weight" in line and "(48, 32)" in line


def test_a_damaged_or_missing_shard(tmp_path, capsys):
    folder = write_release_folder(tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:5])  # truncated inside its header's length
    line = fails(capsys, "--model", str(folder), "--device", "cpu")
    assert "cannot read the weights' shapes" in line and shard.name in line
    shard.unlink()
    assert shard.name in fails(capsys, "--model", str(folder), "--device", "cpu")


def test_a_checkpoint_of_another_model_type(tmp_path, capsys):
    folder = write_release_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    line = fails(capsys, "--model", str(folder), "--device", "cpu")
    assert "not a SpikingBrain checkpoint" in line and "'qwen2'" in line and "'gla_swa'" in line


def test_tokenizer_of_another_model(tmp_path, capsys):
    folder = write_release_folder(tmp_path, tokenizer=False)
    save_tokenizer(folder, size=VOCAB + 50)
    line = fails(capsys, "--model", str(folder), "--device", "cpu")
    assert f"the tokenizer has {VOCAB + 50} tokens" in line and f"vocab_size {VOCAB}" in line


@pytest.mark.parametrize("dtype, hint", [("float32", "--dtype bfloat16"), ("bfloat16", "--device cuda")])
def test_a_device_without_enough_memory(tmp_path, capsys, monkeypatch, dtype, hint):
    folder = write_release_folder(tmp_path)
    asked = []
    monkeypatch.setattr(generate_module, "available_memory", lambda device: asked.append(device) or 1000)
    line = fails(capsys, "--model", str(folder), "--device", "cpu", "--dtype", dtype)
    assert asked == ["cpu"]
    weights = generate_module.weight_bytes(folder, dtype)[0]
    assert "not enough memory on the CPU (cpu)" in line and f"{generate_module.format_bytes(weights)} of {dtype} weights" in line
    assert "1.00 kB are free" in line and hint in line
    monkeypatch.setattr(generate_module, "available_memory", lambda device: None)  # unknown: not refused
    assert main(["generate", "--model", str(folder), "--device", "cpu", "--max-new-tokens", "2"]) == 0


def test_format_bytes():
    assert [generate_module.format_bytes(n) for n in (15_230_000_000, 157_248, 999)] == ["15.23 GB", "157.25 kB", "999 B"]


def test_available_memory_on_this_cpu_is_a_plausible_number():
    free = generate_module.available_memory("cpu")
    assert free is None or 0 < free < 2**50


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_asked_without_a_gpu(tmp_path, capsys):
    folder = write_release_folder(tmp_path)
    line = fails(capsys, "--model", str(folder), "--device", "cuda")
    assert "--device cuda" in line and "no CUDA GPU" in line and "--device cpu" in line


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--device", "gpu"], ["--device", "cpu, cuda or cuda:N"]),
        (["--dtype", "int8"], ["--dtype", "invalid choice"]),
        (["--max-new-tokens", "0"], ["--max-new-tokens", "positive integer"]),
        (["--prompt", "x", "--file", "{tmp}/p.txt"], ["not allowed with argument"]),
        (["--file", "{tmp}/missing.txt"], ["--file", "no such file"]),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path, capsys, argv, words):
    folder = write_release_folder(tmp_path / "model")
    (tmp_path / "p.txt").write_text(PROMPT)
    line = fails(capsys, "--model", str(folder), *[arg.format(tmp=tmp_path) for arg in argv])
    assert all(word in line for word in words), line


def test_an_empty_prompt(tmp_path, capsys):
    folder = write_release_folder(tmp_path / "model")
    (tmp_path / "empty.txt").write_text("  \n")
    assert "the prompt is empty" in fails(capsys, "--model", str(folder), "--file", str(tmp_path / "empty.txt"))


def test_parsing_imports_no_heavy_library(tmp_path):
    """``spikingbrain generate --help`` and its usage errors come without importing torch, transformers or
    the libraries: only the command that runs imports them."""
    heavy = ("torch", "transformers", "numpy", "huggingface_hub", "tokenizers", "sb_neurons", "sb_kernels", "sb_layers", "sb_adapters")
    code = (
        "import sys\nfrom spikingbrain.cli import main\n"
        "for argv in (['generate', '--help'], ['generate', '--model', sys.argv[1]], ['generate', '--model', sys.argv[2]]):\n"
        "    try:\n        main(argv)\n    except SystemExit as exit:\n        print('exit', exit.code)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))\n"
    )
    folder = write_release_folder(tmp_path / "model", tokenizer=False)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing"), str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("exit 2") == 2 and "exit 0" in result.stdout and result.stdout.rstrip().endswith("[]"), result.stdout
    assert "--max-new-tokens" in result.stdout and "no such folder" in result.stderr and "no tokenizer files" in result.stderr


def test_top_level_help_lists_generate(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "generate" in capsys.readouterr().out


# --- on a GPU ----------------------------------------------------------------------------------------


def expected_cuda_text(folder: Path, max_new_tokens: int) -> str:
    model = SpikingBrainForCausalLM.from_pretrained(folder, dtype=torch.float32).cuda().eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids.cuda()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.gpu
@pytest.mark.parametrize("w8aspike", [False, True], ids=["bf16", "w8aspike"])
@pytest.mark.parametrize("graph", [True, False], ids=["cuda-graph", "eager"])
def test_on_a_gpu_the_text_is_model_generates_and_the_peak_is_the_gpus(tmp_path, capsys, w8aspike, graph):
    folder = write_release_folder(tmp_path, w8aspike=w8aspike)
    want = expected_cuda_text(folder, 10)
    capsys.readouterr()
    argv = ["--model", str(folder), "--prompt", PROMPT, "--max-new-tokens", "10", "--device", "cuda", "--dtype", "float32"]
    out, err = run(capsys, *argv, *([] if graph else ["--no-cuda-graph"]))
    assert out == want + "\n", err
    assert "as float32 on cuda:0" in err and ("CUDA graph" in err) is graph and ("eager steps" in err) is not graph
    assert ("+ int8 codes" in err) is w8aspike  # the Triton path keeps the W8ASpike codes on the GPU
    assert any(line.startswith("peak memory: ") and "on cuda:0 (torch.cuda.max_memory_allocated)" in line for line in err.splitlines()), err


@pytest.mark.gpu
def test_on_a_gpu_the_free_memory_is_asked_of_cuda(tmp_path, capsys, monkeypatch):
    folder = write_release_folder(tmp_path)
    free = generate_module.available_memory("cuda:0")
    assert 0 < free <= torch.cuda.get_device_properties(0).total_memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 2000))
    line = fails(capsys, "--model", str(folder), "--device", "cuda")
    assert "not enough memory on the GPU (cuda:0)" in line and "--device cpu" in line
