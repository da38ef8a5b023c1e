"""The vLLM plugin against our transformers model, on the CPU (float32, eager): greedy tokens equal, teacher-
forced log-probabilities within 1e-4; chunked prefill, batches of different lengths, state slots reused, the
multi-process engine, the released layout, a negative control, and checkpoints the plugin refuses.

Each engine runs in a fresh interpreter (``engine_run.py``); the references come from
:class:`sb_layers.models.spikingbrain.SpikingBrainForCausalLM` in this process.
"""

from __future__ import annotations

import pytest
import torch

from sb_layers.models.spikingbrain import save_released_checkpoint
from vllm_testing import hf_reference, logprob_error, run_engine, save_tiny_checkpoint

TOLERANCE = 1e-4
# Four prompts of different lengths, two longer than the window (8) and one longer than the token budget
# of a step (16), so that its prefill is split into chunks and continues from the stored GLA state.
PROMPTS = [list(range(5, 27)), [3, 4, 5], list(range(30, 41)), [40, 41]]
MAX_TOKENS = 12  # decoding runs past the window from every prompt


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-spikingbrain")
    model = save_tiny_checkpoint(directory)
    return directory, model


@pytest.fixture(scope="module")
def reference(checkpoint):
    return hf_reference(checkpoint[1], PROMPTS, MAX_TOKENS)


def assert_matches(calls: list[list[dict]], reference: list[dict], logprobs: bool = True) -> None:
    for number, results in enumerate(calls):
        for index, (got, want) in enumerate(zip(results, reference, strict=True)):
            assert got["tokens"] == want["tokens"], f"call {number}, prompt {index}: {got['tokens']} != {want['tokens']}"
            if logprobs:
                error = logprob_error(got, want)
                assert error <= TOLERANCE, f"call {number}, prompt {index}: log-probabilities differ by {error:.2e}"


def test_batch_chunked_prefill_and_reused_slots_match_transformers(checkpoint, reference, tmp_path):
    """One engine, two calls over the same four prompts (the second in reverse order, on slots the first
    call's requests left behind), 16 tokens per step: the 22-token prompt is prefilled in chunks."""
    out = run_engine(
        tmp_path, model=checkpoint[0], prompts=PROMPTS, max_tokens=MAX_TOKENS, calls=2, prompt_logprobs=True,
        max_num_batched_tokens=16,
    )
    assert len(out["calls"]) == 2
    assert_matches(out["calls"], reference)


def test_negative_control_without_the_carried_gla_state_fails(checkpoint, reference, tmp_path):
    """The same run with GLA layers that drop their state between steps: the comparison above must fail
    (otherwise it could not tell a served model that forgets its context from a correct one)."""
    out = run_engine(
        tmp_path, model=checkpoint[0], prompts=PROMPTS, max_tokens=MAX_TOKENS, prompt_logprobs=True,
        max_num_batched_tokens=16, drop_state=True,
    )
    results = out["calls"][0]
    assert any(got["tokens"] != want["tokens"] for got, want in zip(results, reference))
    # The chunked prompt's log-probabilities after its first chunk depend on the carried state.
    assert logprob_error(results[0], reference[0]) > 100 * TOLERANCE


def test_multiprocess_engine_on_the_released_layout_matches_transformers(checkpoint, reference, tmp_path):
    """vLLM's default engine (engine core in its own process, the plugin loaded there through the entry
    point) on the release's layout: model_type "gla_swa", GLAswaForCausalLM, sharded safetensors."""
    directory, model = checkpoint
    released = tmp_path / "released"
    save_released_checkpoint(model.state_dict(), model.config, released, max_shard_bytes=200_000, dtype=None)
    assert (released / "model.safetensors.index.json").is_file()
    out = run_engine(tmp_path, model=released, prompts=PROMPTS[:2], max_tokens=MAX_TOKENS, multiprocess=True)
    assert_matches(out["calls"], reference[:2], logprobs=False)


@pytest.mark.parametrize(
    "fields, named",
    [(dict(head_dim=16, hidden_size=64), "head_dim=16"), (dict(variant="intra_layer", attn_layers=[]), "variant='intra_layer'")],
)
def test_a_checkpoint_the_plugin_cannot_serve_fails_at_load_naming_the_field(tmp_path, fields, named):
    directory = tmp_path / "checkpoint"
    save_tiny_checkpoint(directory, **fields)
    result = run_engine(tmp_path, check=False, model=directory, prompts=[[3, 4]], max_tokens=1)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "cannot serve this checkpoint" in line]
    assert lines, result.stderr[-4000:]
    assert named in lines[-1], lines[-1]
