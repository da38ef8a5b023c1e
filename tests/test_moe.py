"""GLU, MoE (auxiliary loss, load statistics, upcycling identity) and hybrid blocks."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_layers import (
    GLUMLP,
    GatedLinearAttention,
    HybridBlock,
    MoE,
    ParallelMixer,
    SlidingWindowAttention,
    SpikeCoding,
    upcycle,
)


@given(seed=st.integers(0, 1000), experts=st.integers(1, 8), data=st.data(), router=st.sampled_from(["softmax", "sigmoid"]))
def test_upcycled_moe_equals_dense_at_initialization(seed, experts, data, router):
    torch.manual_seed(seed)
    top_k = data.draw(st.integers(1, experts))
    shared = data.draw(st.integers(0, 2))
    dense = GLUMLP(12, 20).double()
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    moe = upcycle(dense, experts, top_k, shared, router=router)
    torch.testing.assert_close(moe(x), dense(x), rtol=1e-12, atol=1e-12)


def test_report_scale_for_one_shared_top1_of_16():
    """The report's alpha = (1 / (S + k/N))^(1/3) = 0.98; our two linear factors carry its cube."""
    dense = GLUMLP(8, 16)
    moe = upcycle(dense, num_experts=16, top_k=1, num_shared=1)
    ratio_up = (moe.experts[0].up_proj.weight / dense.up_proj.weight).detach()
    ratio_down = (moe.experts[0].down_proj.weight / dense.down_proj.weight).detach()
    alpha = (1 / (1 + 1 / 16)) ** (1 / 3)
    assert round(alpha, 2) == 0.98
    torch.testing.assert_close(ratio_up.mean() * ratio_down.mean(), torch.tensor(alpha**3))
    assert torch.equal(moe.experts[0].gate_proj.weight, dense.gate_proj.weight)


def test_aux_loss_and_load_on_a_hand_checked_case():
    moe = MoE(hidden_size=2, intermediate_size=4, num_experts=2, top_k=1)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # token 0 prefers expert 0 strongly, tokens 1 and 2 prefer expert 1
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    moe(x)
    probs = torch.softmax(x @ moe.router.weight.T, -1)
    assert moe.expert_load.tolist() == pytest.approx([1 / 3, 2 / 3])
    expected = 2 * (1 / 3 * probs[:, 0].mean() + 2 / 3 * probs[:, 1].mean())
    assert float(moe.aux_loss.detach()) == pytest.approx(float(expected.detach()))
    assert moe.routing_skew == pytest.approx(4 / 3)


def test_moe_output_is_the_weighted_sum_of_chosen_experts():
    torch.manual_seed(4)
    moe = MoE(6, 10, num_experts=4, top_k=2, num_shared=1, router="sigmoid").double()
    x = torch.randn(7, 6, dtype=torch.float64)
    probs = torch.sigmoid(moe.router(x))
    expected = moe.shared_experts[0](x)
    for t in range(7):
        for e in probs[t].topk(2).indices.tolist():
            expected[t] += probs[t, e] * moe.experts[e](x[t])
    torch.testing.assert_close(moe(x), expected)


def test_aux_loss_is_differentiable_into_the_router():
    moe = MoE(6, 10, num_experts=4, top_k=1)
    moe(torch.randn(9, 6))
    moe.aux_loss.backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


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
    whole, _ = block(x)
    state, outs = None, []
    for a, b in ((0, 4), (4, 5), (5, 11)):
        out, state = block(x[:, a:b], state=state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole)


def test_block_is_pre_norm_residual():
    block = build_block("gla")
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    mixed, _ = block.attn(block.attn_norm(x))
    h = x + mixed
    torch.testing.assert_close(block(x)[0], h + block.mlp(block.mlp_norm(h)))


@pytest.mark.parametrize("kind", ["gla", "swa", "parallel"])
def test_gradients_reach_every_parameter_of_spiking_blocks(kind):
    block = build_block(kind, coding=SpikeCoding(mode="spike", codec="ternary"))
    out, _ = block(torch.randn(2, 5, 16, dtype=torch.float64))
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


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GLUMLP(0, 4), "hidden_size"),
        (lambda: GLUMLP(4, 8)(torch.randn(2, 5)), "hidden_size"),
        (lambda: MoE(4, 8, num_experts=2, top_k=3), "top_k"),
        (lambda: MoE(4, 8, num_experts=2, router="relu"), "router"),
        (lambda: upcycle(torch.nn.Linear(2, 2), 2), "dense_mlp"),
        (lambda: HybridBlock(16, torch.nn.Linear(16, 16), GLUMLP(16, 8)), "mixer"),
        (lambda: ParallelMixer(GatedLinearAttention(16, 2), SlidingWindowAttention(8, 2)), "hidden_size"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
