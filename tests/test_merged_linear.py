"""sb_layers._merged: several nn.Linear on one input as one GEMM (decode steps on CUDA), equal to the
layers one by one, never stale after a weight change, and out of the way of hooks, autograd and
spiking or wrapped layers."""

import pytest
import torch
from torch import nn

from sb_layers import SpikingLinear
from sb_layers._merged import MAX_ROWS, merged_linear_outputs


def layers(bias=(True, True), seed=0):
    torch.manual_seed(seed)
    owner = nn.Module()
    owner.k_proj, owner.v_proj = nn.Linear(16, 8, bias=bias[0]), nn.Linear(16, 12, bias=bias[1])
    return owner


def merged(owner, x, **kw):
    return merged_linear_outputs(x, (owner.k_proj, owner.v_proj), owner, "kv", cuda_only=False, **kw)


@pytest.mark.parametrize("bias", [(True, True), (True, False), (False, False)])
def test_outputs_equal_the_layers_one_by_one(bias):
    owner = layers(bias)
    x = torch.randn(2, 3, 16)
    with torch.no_grad():
        k, v = merged(owner, x)
        torch.testing.assert_close(k, owner.k_proj(x))
        torch.testing.assert_close(v, owner.v_proj(x))
    assert k.shape == (2, 3, 8) and v.shape == (2, 3, 12)
    assert not any("merged" in key for key in owner.state_dict())


def test_a_changed_weight_is_seen():
    owner = layers()
    x = torch.randn(1, 1, 16)
    with torch.no_grad():
        merged(owner, x)
        owner.k_proj.weight.mul_(2.0)  # in place: the version counter moves
        torch.testing.assert_close(merged(owner, x)[0], owner.k_proj(x))
        owner.v_proj.bias = nn.Parameter(torch.randn(12))  # another storage
        torch.testing.assert_close(merged(owner, x)[1], owner.v_proj(x))
        owner.load_state_dict(layers(seed=1).state_dict())
        torch.testing.assert_close(merged(owner, x)[0], owner.k_proj(x))


def test_declines_where_merging_could_change_what_a_user_sees():
    owner = layers()
    x = torch.randn(1, 1, 16)
    assert merged(owner, x) is None  # autograd on
    with torch.no_grad():
        assert merged_linear_outputs(x, (owner.k_proj, owner.v_proj), owner, "kv") is None  # CPU input
        assert merged(owner, torch.randn(MAX_ROWS + 1, 16)) is None  # a prefill
        handle = owner.k_proj.register_forward_hook(lambda *args: None)
        assert merged(owner, x) is None
        handle.remove()
        handle = nn.modules.module.register_module_forward_pre_hook(lambda *args: None)
        assert merged(owner, x) is None
        handle.remove()
        owner.v_proj = SpikingLinear(16, 12)
        assert merged(owner, x) is None
        assert merged(layers(), x.double()) is None  # dtype differs from the weights


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_spikingbrain_7b_key_value_projections_on_the_gpu():
    torch.manual_seed(0)
    owner = nn.Module()
    owner.k_proj, owner.v_proj = nn.Linear(3584, 512), nn.Linear(3584, 512)
    owner = owner.to("cuda", torch.bfloat16)
    x = torch.randn(1, 1, 3584, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        k, v = merged_linear_outputs(x, (owner.k_proj, owner.v_proj), owner, "kv")
        want_k, want_v = owner.k_proj(x).float(), owner.v_proj(x).float()
    # Same dot products; cuBLAS may sum them in another order: bf16 rounding of the outputs.
    torch.testing.assert_close(k.float(), want_k, rtol=2e-2, atol=2e-2 * float(want_k.abs().max()))
    torch.testing.assert_close(v.float(), want_v, rtol=2e-2, atol=2e-2 * float(want_v.abs().max()))
