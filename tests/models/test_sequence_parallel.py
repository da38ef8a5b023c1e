"""Sequence-parallel prefill (issue 21) on the CPU: gloo process groups of 2 and 3 spawned processes.

Every case runs inside one spawned group (spawning is the slow part): float64 tiny models of the
bf16-release architecture and their W8ASpike conversion, sequence lengths not divisible by the ranks,
shards shorter than the window (the halo spans several ranks), left padding that covers whole shards.
Each rank checks that the logits and every cache tensor equal those of a single-process prefill of the
whole sequence (float64 rounding), and that greedy generation continued from the gathered cache equals
``model.generate`` of the whole prompt.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainForCausalLM, to_w8aspike
from sb_layers.models.spikingbrain.sequence_parallel import sequence_parallel_prefill, shard_bounds
from sb_layers.gla_state import GLAState
from sb_layers.kv_cache import RollingKVCache
from model_testing import tiny_spikingbrain

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")

WINDOW, VOCAB, TOL = 5, 64, dict(rtol=1e-9, atol=1e-11)


def _model(w8aspike: bool, **overrides) -> SpikingBrainForCausalLM:
    fields = dict(vocab_size=VOCAB, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, intermediate_size=24, sliding_window=WINDOW)
    model = tiny_spikingbrain(perturb=True, **{**fields, **overrides})
    return to_w8aspike(model, group_size=8) if w8aspike else model


def _assert_same_cache(mine: SpikingBrainCache, ref: SpikingBrainCache) -> None:
    assert mine.seen_tokens == ref.seen_tokens
    assert torch.equal(mine.real_tokens, ref.real_tokens)
    for index, (a, b) in enumerate(zip(mine.states, ref.states)):
        assert type(a) is type(b), index
        if isinstance(b, GLAState):
            assert a.recurrent.dtype == b.recurrent.dtype
            torch.testing.assert_close(a.recurrent, b.recurrent, **TOL)
            continue
        assert isinstance(b, RollingKVCache)
        for name in ("keys", "values"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), **TOL)
        for name in ("key_mask", "key_index", "seen_tokens"):
            assert torch.equal(getattr(a, name), getattr(b, name)), (index, name)
        assert (a.length, a.window, a.maybe_masked, a.sink_keys) == (b.length, b.window, b.maybe_masked, b.sink_keys)


def _greedy(model, cache, last_logits, mask, steps: int) -> torch.Tensor:
    tokens, logits = [], last_logits
    for _ in range(steps):
        token = logits[:, -1:].argmax(-1)
        tokens.append(token)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        logits = model(token, attention_mask=mask, cache=cache, use_cache=True).logits
    return torch.cat(tokens, dim=1)


def _cases(world: int):
    """(name, model kind, length, left padding of row 1, model overrides): lengths not divisible by
    ``world``; with 3 ranks the shards (3, 2, 2 positions) are shorter than the window (5)."""
    if world == 2:
        return [
            ("bf16-arch", False, 13, 0, {}),
            ("bf16-arch padded", False, 13, 8, {}),  # row 1: the whole first shard and more is padding
            ("w8aspike padded", True, 11, 3, {}),
            ("windowed swa path", False, 13, 0, dict(swa_query_chunk_size=2)),
        ]
    return [
        ("bf16-arch short shards", False, 7, 0, {}),
        ("bf16-arch short shards padded", False, 8, 4, {}),
        ("w8aspike short shards", True, 7, 2, {}),
        ("spike mode gla", False, 8, 1, dict(spike_qk=True)),
    ]


def _worker(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, w8, length, pad, overrides in _cases(world):
            model = _model(w8, **overrides)
            gen = torch.Generator().manual_seed(length + pad)
            ids = torch.randint(3, VOCAB, (2, length), generator=gen)
            mask = None
            if pad:
                mask = torch.ones(2, length, dtype=torch.long)
                mask[1, :pad] = 0
                ids[1, :pad] = 0
            with torch.no_grad():
                ref_cache = SpikingBrainCache(model.config.num_hidden_layers)
                ref = model(ids, attention_mask=mask, cache=ref_cache, use_cache=True).logits
            logits, cache = sequence_parallel_prefill(model, ids, mask, logits="all")
            real = slice(None) if mask is None else mask.bool()
            torch.testing.assert_close(logits[real], ref[real], **TOL, msg=lambda m: f"{name}: {m}")
            _assert_same_cache(cache, ref_cache)

            last, cache0 = sequence_parallel_prefill(model, ids, mask, cache_on="rank0")
            torch.testing.assert_close(last, ref[:, -1:], **TOL)
            assert (cache0 is None) == (rank != 0), name
            if rank == 0:
                _assert_same_cache(cache0, ref_cache)
                with torch.no_grad():
                    continued = _greedy(model, cache0, last, mask, 4)
                    expected = model.generate(
                        ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0,
                    )[:, length:]
                assert torch.equal(continued, expected), name
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_sequence_parallel_prefill_equals_single_process(world, tmp_path):
    mp.spawn(_worker, args=(world, str(tmp_path / "init")), nprocs=world, join=True)


def test_shard_bounds_and_argument_checks():
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(8, 1) == [(0, 8)]
    with pytest.raises(ValueError, match="at least one position per rank"):
        shard_bounds(2, 3)
    with pytest.raises(ValueError, match="world_size"):
        shard_bounds(4, 0)
    model = _model(False)
    with pytest.raises(RuntimeError, match="init_process_group"):
        sequence_parallel_prefill(model, torch.randint(0, VOCAB, (1, 4)))
    with pytest.raises(ValueError, match="logits"):
        sequence_parallel_prefill(model, torch.randint(0, VOCAB, (1, 4)), logits="first")
    with pytest.raises(ValueError, match="eval mode"):
        sequence_parallel_prefill(model.train(), torch.randint(0, VOCAB, (1, 4)))


def test_one_rank_group_equals_the_model(tmp_path):
    """world size 1 (the default group of this process): the plain prefill."""
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        model = _model(False)
        ids = torch.randint(3, VOCAB, (2, 9))
        with torch.no_grad():
            ref_cache = SpikingBrainCache(4)
            ref = model(ids, cache=ref_cache, use_cache=True).logits
        logits, cache = sequence_parallel_prefill(model, ids)
        torch.testing.assert_close(logits, ref[:, -1:], **TOL)
        _assert_same_cache(cache, ref_cache)
    finally:
        dist.destroy_process_group()
