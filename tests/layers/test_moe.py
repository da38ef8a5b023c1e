"""GLU and MoE: upcycling identity at initialization, auxiliary loss and load statistics, routing."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sb_layers import GLUMLP, MoE, SpikeCoding, upcycle
from strategies import names


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


def test_report_scaling_spreads_alpha_over_three_matrices():
    """scaling='report': every matrix times alpha = (1/(S + k/N))^(1/3); equal to dense only approximately."""
    torch.manual_seed(6)
    dense = GLUMLP(8, 16).double()
    moe = upcycle(dense, num_experts=16, top_k=1, num_shared=1, scaling="report")
    alpha = (1 / (1 + 1 / 16)) ** (1 / 3)
    for name in ("gate_proj", "up_proj", "down_proj"):
        torch.testing.assert_close(getattr(moe.experts[3], name).weight, alpha * getattr(dense, name).weight)
    x = torch.randn(6, 8, dtype=torch.float64)
    relative = float((moe(x) - dense(x)).detach().norm() / dense(x).detach().norm())
    assert 0 < relative < 0.05


@pytest.mark.parametrize("weight_bits", [None, 8])
def test_upcycle_keeps_spike_coding_and_identity(weight_bits):
    """Quantized experts get scales recalibrated to their rescaled weights, so the identity survives."""
    torch.manual_seed(7)
    dense = GLUMLP(8, 16, coding=SpikeCoding(k=4.0, weight_bits=weight_bits, group_size=8)).double()
    moe = upcycle(dense, num_experts=4, top_k=2, num_shared=1)
    assert moe.experts[0].gate_proj.coding == dense.gate_proj.coding
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(moe(x), dense(x))


@pytest.mark.parametrize("router", ["softmax", "sigmoid"])
def test_gradients_reach_every_parameter_of_a_spiking_moe(router):
    """Spike-mode experts (straight-through) and the router: with top_k = N every expert serves every token."""
    torch.manual_seed(8)
    moe = MoE(8, 12, num_experts=3, top_k=3, num_shared=1, router=router,
              coding=SpikeCoding(mode="spike", codec="ternary", weight_bits=8, group_size=4)).double()
    out = moe(torch.randn(5, 8, dtype=torch.float64))
    (out.pow(2).sum() + moe.aux_loss).backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: GLUMLP(0, 4), "hidden_size"),
        (lambda: GLUMLP(4, 8)(torch.randn(2, 5)), "hidden_size"),
        (lambda: MoE(4, 8, num_experts=0), "num_experts"),
        (lambda: MoE(4, 8, num_experts=2, top_k=3), "top_k"),
        (lambda: MoE(4, 8, num_experts=2, num_shared=-1), "num_shared"),
        (lambda: MoE(4, 8, num_experts=2, router="relu"), "router"),
        (lambda: MoE(4, 8, num_experts=2)(torch.randn(3, 5)), "hidden_size"),
        (lambda: MoE(4, 8, num_experts=2).routing_skew, "forward"),
        (lambda: MoE(4, 8, num_experts=2)([[0.0] * 4]), "x"),
        (lambda: GLUMLP(4, 8)([[0.0] * 4]), "x"),
        (lambda: upcycle(torch.nn.Linear(2, 2), 2), "dense_mlp"),
        (lambda: upcycle(GLUMLP(4, 8), 2, scaling="cube"), "scaling"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError, RuntimeError), match=names(match)):
        call()
