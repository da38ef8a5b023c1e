"""sb_layers._merged: several nn.Linear on one input as one GEMM (decode steps on CUDA), equal to the
layers one by one, never stale after a weight change, and out of the way of hooks, autograd and
spiking or wrapped layers."""

import pytest
import torch
from torch import nn

from sb_layers import SpikeCoding, SpikingLinear
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


def spiking_layers(k=3.0, clamp=None, group_size=32, sizes=(64, 96)):
    torch.manual_seed(0)
    owner = nn.Module()
    coding = lambda kk: SpikeCoding(k=kk, clamp=clamp, weight_bits=8, group_size=group_size, backend="triton")  # noqa: E731
    owner.k_proj = SpikingLinear(64, sizes[0], coding=coding(k))
    owner.v_proj = SpikingLinear(64, sizes[1], coding=coding(3.0))
    return owner


def test_spiking_layers_coding_alike_share_one_w8aspike_call(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the W8ASpike kernel in Triton's interpreter
    pytest.importorskip("triton")
    owner = spiking_layers()
    x = torch.randn(2, 1, 64)
    calls = []
    import sb_kernels

    original = sb_kernels.w8aspike_linear
    monkeypatch.setattr(sb_kernels, "w8aspike_linear", lambda *a, **kw: calls.append(a[1].shape) or original(*a, **kw))
    with torch.no_grad():
        k, v = merged(owner, x)
        assert calls == [(160, 64)]  # one call over the stacked int8 weights
        want_k, want_v = owner.k_proj(x), owner.v_proj(x)
    # The same integer products and scales per output; split-K may group the float32 partials otherwise.
    torch.testing.assert_close(k, want_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, want_v, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert merged(spiking_layers(k=2.0), x) is None  # codings differ: two different inputs
        assert merged(spiking_layers(group_size=None), x) is not None  # per-channel scales stack too
        recording = spiking_layers()
        recording.v_proj.record_stats = True
        assert merged(recording, x) is None  # statistics are recorded per layer


def test_merged_spiking_layers_keep_their_codes_past_int8(monkeypatch):
    """Scales below max|w| / 127 (as the release's): each layer's codes past int8 travel with the stacked
    int8 weights (their residuals offset by the rows above) and the merged call equals the layers' own
    torch path, the release's formula with no clamp."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    owner = spiking_layers()
    with torch.no_grad():
        owner.k_proj.weight_quantizer.scales.mul_(0.6)  # the largest codes of every group pass 127
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        k, v = merged(owner, x)
        torch_k = owner.k_proj.weight_quantizer.fake_quantize(owner.k_proj.weight)  # no clamp: round(w / s) * s
        for layer in (owner.k_proj, owner.v_proj):
            layer.coding = SpikeCoding(**{**layer.coding.to_dict(), "backend": "torch"})
        want_k, want_v = owner.k_proj(x), owner.v_proj(x)
    assert owner.k_proj.int8_codes()[1] is not None and owner.v_proj.int8_codes()[1] is None
    assert float((torch_k - owner.k_proj.weight).abs().max()) <= float(owner.k_proj.weight_quantizer.scales.max()) / 2
    torch.testing.assert_close(k, want_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, want_v, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "spiking, tolerance",
    # bf16: the same dot products, which cuBLAS may sum in another order (bf16 rounding of the outputs);
    # W8ASpike: one spike quantization and the int8 kernel's float32 partials grouped otherwise.
    [(False, 2e-2), (True, 1e-2)],
    ids=["bf16", "w8aspike"],
)
def test_spikingbrain_7b_key_value_projections_on_the_gpu(spiking, tolerance):
    torch.manual_seed(1 if spiking else 0)
    owner = nn.Module()
    factory = dict(device="cuda", dtype=torch.bfloat16)
    if spiking:
        # bf16 weights, float32 group scales (as to_w8aspike builds them; .to(bfloat16) would cast the scales)
        coding = SpikeCoding(weight_bits=8, group_size=128, backend="auto")
        make = lambda: SpikingLinear(3584, 512, coding=coding, **factory)  # noqa: E731
    else:
        make = lambda: nn.Linear(3584, 512, **factory)  # noqa: E731
    owner.k_proj, owner.v_proj = make(), make()
    x = torch.randn(1, 1, 3584, **factory)
    with torch.no_grad():
        k, v = merged_linear_outputs(x, (owner.k_proj, owner.v_proj), owner, "kv")
        want_k, want_v = owner.k_proj(x).float(), owner.v_proj(x).float()
    assert "_merged_kv" in owner.__dict__  # the merged path ran
    torch.testing.assert_close(k.float(), want_k, rtol=tolerance, atol=tolerance * float(want_k.abs().max()))
    torch.testing.assert_close(v.float(), want_v, rtol=tolerance, atol=tolerance * float(want_v.abs().max()))
