"""Hybrid blocks: inter-layer (GLA or SWA per block) and intra-layer parallel mixers, streaming, gradients."""

import pytest
import torch

from sb_layers import (
    GLAState,
    GLUMLP,
    GatedLinearAttention,
    HybridBlock,
    MixerCache,
    ParallelMixer,
    SlidingWindowAttention,
    SpikeCoding,
    upcycle,
)
from strategies import mixer_with_state, names


def build_block(kind, coding=None):
    torch.manual_seed(5)
    gla = GatedLinearAttention(16, 4, 2, coding=coding, chunk_size=3)
    swa = SlidingWindowAttention(16, 4, 2, window=3, coding=coding)
    mixer = {"gla": gla, "swa": swa, "parallel": ParallelMixer(gla, swa)}[kind]
    mlp = upcycle(GLUMLP(16, 24, coding=coding), 4, 1, 1) if kind == "parallel" else GLUMLP(16, 24, coding=coding)
    return HybridBlock(16, mixer, mlp).double()


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
def test_block_in_pieces_equals_one_call(kind):
    block = build_block(kind)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    whole = block(x, None, MixerCache(1))
    cache = MixerCache(1)
    outs = [block(x[:, a:b], None, cache) for a, b in ((0, 4), (4, 5), (5, 11))]
    torch.testing.assert_close(torch.cat(outs, 1), whole)


def test_block_is_pre_norm_residual():
    block = build_block("gla")
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    mixed = block.attn(block.attn_norm(x), None, MixerCache(1))
    h = x + mixed
    torch.testing.assert_close(block(x, None, MixerCache(1)), h + block.mlp(block.mlp_norm(h)))


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
def test_gradients_reach_every_parameter_of_spiking_blocks(kind):
    block = build_block(kind, coding=SpikeCoding(mode="spike", codec="ternary"))
    out = block(torch.randn(2, 5, 16, dtype=torch.float64), None, MixerCache(1))
    out.pow(2).sum().backward()
    idle = set()
    if kind == "parallel":
        # an expert no token was routed to rightly gets no gradient; a zero router's top-1 may too
        idle = {f"mlp.experts.{i}." for i, load in enumerate(block.mlp.expert_load.tolist()) if load == 0}
        idle.add("mlp.router.")
    for name, p in block.named_parameters():
        if any(name.startswith(prefix) for prefix in idle):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parallel_mixer_sums_the_normalized_outputs():
    block = build_block("parallel")
    mixer = block.attn
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    linear = mixer.linear_attn(x, None, MixerCache(1))
    softmax = mixer.softmax_attn(x, None, MixerCache(1))
    out = mixer(x, None, MixerCache(1))
    torch.testing.assert_close(out, mixer.linear_norm(linear) + mixer.softmax_norm(softmax))


def test_block_parameter_names_follow_the_release():
    names = {name.split(".")[0] for name, _ in build_block("swa").named_parameters()}
    assert names == {"attn_norm", "attn", "mlp_norm", "mlp"}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: HybridBlock(16, torch.nn.Linear(16, 16), GLUMLP(16, 8)), "mixer"),
        (lambda: HybridBlock(8, GatedLinearAttention(16, 2), GLUMLP(16, 8)), "hidden_size"),
        (lambda: ParallelMixer(GatedLinearAttention(16, 2), SlidingWindowAttention(8, 2)), "hidden_size"),
        (lambda: mixer_with_state(build_block("gla"), torch.randn(1, 3, 16, dtype=torch.float64), state=torch.zeros(1, 4, 3, 3)), "state"),
        (lambda: mixer_with_state(build_block("gla"), torch.randn(1, 3, 16, dtype=torch.float64), state=GLAState(torch.zeros(1, 4, 3, 3))), "GLA state"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=names(match)):
        call()
