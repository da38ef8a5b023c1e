"""Helpers of the vLLM tests: tiny checkpoints, a word-level tokenizer, running an engine in a fresh process,
and the HF model's reference outputs. Importable by the test modules (tests/vllm_plugin is on their path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from model_testing import tiny_spikingbrain

HERE = Path(__file__).resolve().parent
VOCAB = 128
# head_dim 32 (the CPU attention backend's smallest), window 8, 4 layers (GLA, SWA, GLA, SWA).
TINY_VLLM = dict(
    vocab_size=VOCAB, sliding_window=8, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256,
)
ENGINE_TIMEOUT = 300


def save_tiny_checkpoint(directory: Path, **fields) -> torch.nn.Module:
    """Save a seeded tiny float32 SpikingBrain model (ours: ``SpikingBrainForCausalLM``) with a tokenizer
    into ``directory``; returns the HF model (eval mode)."""
    model = tiny_spikingbrain(dtype=torch.float32, perturb=True, **{**TINY_VLLM, **fields})
    model.save_pretrained(directory)
    save_word_tokenizer(directory)
    return model


def save_word_tokenizer(directory: Path) -> None:
    """A word-level tokenizer: ``"t17"`` is token 17 (words split on whitespace, no special tokens added)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", pad_token="t0", bos_token="t1", eos_token="t2")
    fast.save_pretrained(directory)


def run_engine(tmp_path: Path, check: bool = True, **spec) -> subprocess.CompletedProcess | dict:
    """Run ``engine_run.py`` with ``spec`` in a fresh interpreter; its JSON results (``check``), or the
    completed process (``check=False``: the caller inspects a failure)."""
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps({**spec, "model": str(spec["model"])}))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(HERE / "engine_run.py"), str(spec_path), str(out_path)],
        capture_output=True, text=True, timeout=ENGINE_TIMEOUT, env=env,
    )
    if not check:
        return result
    assert result.returncode == 0, f"vLLM engine failed:\n{result.stderr[-6000:]}"
    return json.loads(out_path.read_text())


@torch.no_grad()
def hf_reference(model: torch.nn.Module, prompts: list[list[int]], max_tokens: int) -> list[dict]:
    """Per prompt: the HF model's greedy tokens (``generate``, one prompt at a time) and the teacher-forced
    log-probabilities of the prompt's tokens 1.. (float32)."""
    results = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        tokens = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)[:-1].gather(1, ids[0, 1:, None])[:, 0]
        results.append({"tokens": tokens[0, len(prompt):].tolist(), "prompt_logprobs": logprobs})
    return results


def logprob_error(engine: dict, reference: dict) -> float:
    """Largest |difference| between an engine's prompt log-probabilities and the reference's."""
    got = torch.tensor(engine["prompt_logprobs"], dtype=torch.float32)
    assert got.shape == reference["prompt_logprobs"].shape, (got.shape, reference["prompt_logprobs"].shape)
    return (got - reference["prompt_logprobs"]).abs().max().item()
