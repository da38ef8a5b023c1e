"""sb_kernels.gla_decode_step: one GLA token from the projections' raw outputs in one kernel.

Identities: the reference equals :func:`sb_kernels.gla_recurrent` on one token with the feature maps and
the log decay applied first and the key/value heads repeated; the Triton kernel equals the reference;
a masked token leaves the state exactly as it was. The kernel-equals-reference property runs interpreted
(CPU) and compiled (``device="cuda"``); compiled, ``tl.exp`` is ``ex2.approx.f32`` of a rounded product by
``log2(e)`` and ``/`` is ``div.full.f32`` (2 ulps), which the error bound adds for the decay and the
sigmoid feature map (:func:`output_error_bound`).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, rel_err, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import gla_decode_step, gla_decode_step_reference
from sb_kernels import gla_recurrent

FEATURES = {"relu": F.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def inputs(batch, kv_heads, groups, dk, dv, dtype, seed, device="cpu", with_state=True):
    gen = torch.Generator().manual_seed(seed)
    heads = kv_heads * groups
    q = torch.randn(batch, heads, dk, generator=gen).to(dtype).to(device)
    k = torch.randn(batch, kv_heads, dk, generator=gen).to(dtype).to(device)
    v = torch.randn(batch, kv_heads, dv, generator=gen).to(dtype).to(device)
    g = (3 * torch.randn(batch, kv_heads, dk, generator=gen)).to(dtype).to(device)
    state = torch.randn(batch, heads, dk, dv, generator=gen).to(device) if with_state else None
    return q, k, v, g, state


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), kv_heads=st.integers(1, 3), groups=st.sampled_from([1, 2, 7]),
    dk=st.integers(1, 40), dv=st.integers(1, 40), feature=st.sampled_from(sorted(FEATURES)), negate=st.booleans(),
    normalizer=st.sampled_from([1.0, 16.0]), with_state=st.booleans(),
)
def test_reference_is_one_step_of_the_recurrent_gla(seed, batch, kv_heads, groups, dk, dv, feature, negate, normalizer, with_state):
    q, k, v, g, state = (t if t is None else t.double() for t in inputs(batch, kv_heads, groups, dk, dv, torch.float64, seed, with_state=with_state))
    scale = dk**-0.5
    out, new_state = gla_decode_step_reference(
        q, k, v, g, state, scale=scale, feature_map=feature, negate_gate=negate, gate_normalizer=normalizer,
    )
    phi = FEATURES[feature]
    gk = F.logsigmoid(-g if negate else g) / normalizer
    rep = lambda t: t.repeat_interleave(groups, dim=1)[:, :, None]  # noqa: E731  [B, H, 1, D]
    want_out, want_state = gla_recurrent(phi(q)[:, :, None], rep(phi(k)), rep(v), rep(gk), scale, state)
    torch.testing.assert_close(out, want_out[:, :, 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(new_state, want_state, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), kv_heads=st.integers(1, 2), groups=st.sampled_from([1, 3]),
    dk=st.integers(1, 40), dv=st.integers(1, 70), feature=st.sampled_from(sorted(FEATURES)), negate=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), with_state=st.booleans(), masked=st.booleans(),
)
@example(seed=16777215, batch=1, kv_heads=1, groups=3, dk=31, dv=4, feature="relu", negate=False, dtype=torch.float32,
         with_state=True, masked=False)  # an output near 0 from large cancelling terms (issue 19)
def test_kernel_equals_the_reference(device, seed, batch, kv_heads, groups, dk, dv, feature, negate, dtype, with_state, masked):
    q, k, v, g, state = inputs(batch, kv_heads, groups, dk, dv, dtype, seed, device=device, with_state=with_state)
    keep = (torch.arange(batch, device=device) % 2 == 0) if masked else None
    args = dict(scale=dk**-0.5, feature_map=feature, negate_gate=negate, gate_normalizer=4.0, keep=keep)
    out, new_state = gla_decode_step(q, k, v, g, state, backend="triton", **args)
    ref_out, ref_state = gla_decode_step_reference(
        q.double(), k.double(), v.double(), g.double(), None if state is None else state.double(), **args
    )
    assert out.dtype == dtype and new_state.dtype == torch.float32 and out.device == q.device
    assert rel_err(new_state, ref_state) <= 1e-6
    bound = output_error_bound(q, k, v, g, state, ref_out, dtype, compiled=q.is_cuda, **args)
    assert torch.all((out.double() - ref_out).abs() <= bound)
    if masked:  # a padded row's state passes through exactly (zeros without a state)
        for b in range(1, batch, 2):  # keep is False on the odd rows
            assert torch.equal(new_state[b], state[b] if state is not None else torch.zeros_like(new_state[b]))


def output_error_bound(q, k, v, g, state, ref_out, dtype, *, scale, feature_map="relu", negate_gate=False, gate_normalizer=1.0,
                       keep=None, compiled=False):
    """What float32 arithmetic and one rounding to ``dtype`` may move each output element by.

    ``out_j = scale * sum_i phi(q_i) (decay_i S_ij + phi(k_i) v_j)``: the float32 sum of ``dk`` terms, each
    built from a few roundings (the decay's exp among them), is off by at most ``(dk + 4) u32`` times the
    sum of the terms' magnitudes (not of the result, which cancellation may make arbitrarily small);
    rounding to ``dtype`` adds half an ulp of the result (float16: of its smallest normal at least).

    ``compiled`` (CUDA): ``exp`` is ``ex2.approx.f32`` (2^-22.5 relative) of ``x * log2(e)`` rounded (an
    error of ``|x| u32`` in the result) and ``/`` is ``div.full.f32`` (2 ulps = 4 u32). The log decay
    ``gk = (min(g, 0) - log(1 + exp(-|g|))) / normalizer`` then errs by ``5 |gk| u32`` plus ``6 u32 /
    normalizer`` absolutely, and ``decay = exp(gk)`` by ``(6 |gk| + 8) u32`` relatively (with margin); a
    sigmoid feature ``1 / (1 + exp(-x))`` by ``(8 + |x|) u32``. Each term's part that carries such a factor
    gets that much more.
    """
    groups = q.shape[1] // k.shape[1]
    qf = _feature(q.double(), feature_map).abs() * scale
    kf = _feature(k.double(), feature_map).abs().repeat_interleave(groups, dim=1)
    vf = v.double().abs().repeat_interleave(groups, dim=1)
    g = g.double()
    decay = (F.logsigmoid(-g if negate_gate else g) / gate_normalizer).exp().repeat_interleave(groups, dim=1)
    old = torch.zeros(*q.shape, v.shape[-1], dtype=torch.float64, device=q.device) if state is None else state.double().abs()
    if keep is not None:
        row = keep.double()[:, None, None]
        vf, decay = vf * row, torch.where(row.bool(), decay, 1.0)
    magnitude = torch.einsum("bhk,bhkv->bhv", qf, old * decay[..., None] + kf[..., None] * vf[..., None, :])
    u32 = 2.0**-24
    float32_error = (q.shape[-1] + 4) * u32 * magnitude
    if compiled:
        gk = (F.logsigmoid(-g if negate_gate else g) / gate_normalizer).abs().repeat_interleave(groups, dim=1)
        if keep is not None:
            gk = gk * keep.double()[:, None, None]
        sigmoid = feature_map == "sigmoid"
        e_q = 8 + q.double().abs() if sigmoid else torch.zeros_like(qf)
        e_k = (8 + k.double().abs()).repeat_interleave(groups, dim=1) if sigmoid else torch.zeros_like(kf)
        e_decay = 6 * gk + 8
        extra = torch.einsum(
            "bhk,bhkv->bhv", qf, old * (decay * (e_q + e_decay))[..., None] + (kf * (e_q + e_k))[..., None] * vf[..., None, :]
        )
        float32_error = float32_error + u32 * extra
    if dtype == torch.float32:
        return float32_error
    u = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[dtype]
    tiniest = {torch.bfloat16: 0.0, torch.float16: 2.0**-25}[dtype]  # half float16's smallest subnormal
    return u * ref_out.abs() + (1 + u) * float32_error + tiniest


def _feature(x, name):
    return FEATURES[name](x)


def test_a_masked_token_leaves_the_state_exactly_as_it_was():
    q, k, v, g, state = inputs(2, 2, 2, 16, 24, torch.float32, seed=3)
    keep = torch.tensor([False, True])
    for backend in ("torch", "triton"):
        out, new_state = gla_decode_step(q, k, v, g, state, scale=0.25, keep=keep, backend=backend)
        assert torch.equal(new_state[0], state[0])
        assert not torch.equal(new_state[1], state[1])
        torch.testing.assert_close(out[0], torch.einsum("hk,hkv->hv", F.relu(q[0]) * 0.25, state[0]), rtol=1e-5, atol=1e-5)


def test_the_input_state_is_not_modified():
    q, k, v, g, state = inputs(1, 2, 2, 16, 16, torch.float32, seed=4)
    before = state.clone()
    gla_decode_step(q, k, v, g, state, scale=0.25, backend="triton")
    assert torch.equal(state, before)


def test_strided_projection_views_are_read_in_place():
    # The layer passes views of [B, 1, H * D] projection outputs; a batch stride larger than H * D too.
    gen = torch.Generator().manual_seed(5)
    wide = torch.randn(2, 3 * 4 * 16, generator=gen)
    q = wide[:, : 4 * 16].view(2, 4, 16)
    k, g = wide[:, 64:96].view(2, 2, 16), wide[:, 96:128].view(2, 2, 16)
    v = torch.randn(2, 2, 16, generator=gen)
    out, new_state = gla_decode_step(q, k, v, g, None, scale=0.25, backend="triton")
    ref_out, ref_state = gla_decode_step_reference(q.double(), k.double(), v.double(), g.double(), None, scale=0.25)
    assert rel_err(out, ref_out) <= 1e-6 and rel_err(new_state, ref_state) <= 1e-6


def test_rejects_bad_arguments():
    q, k, v, g, state = inputs(2, 2, 2, 16, 8, torch.float32, seed=6)
    ok = dict(scale=0.25)
    cases = [
        ((q[0], k, v, g, state), ok, "q must be a floating-point \\[B, heads, D\\]"),
        ((q, k[:, :, :8], v, g, state), ok, "k and g must be \\[B, Hkv, Dk\\]"),
        ((q, k, v, g[:1], state), ok, "k and g must be"),
        ((q[:, :3], k, v, g, None), ok, "must divide the query heads"),
        ((q, k, v[:1], g, state), ok, "v must be \\[B, Hkv, Dv\\]"),
        ((q, k, v.double(), g, state), ok, "share one dtype"),
        ((q, k, v, g, state[:, :, :, :4]), ok, "state must be a floating-point tensor of shape"),
        ((q, k, v, g, state), dict(scale=0.0), "scale must be a finite number > 0"),
        ((q, k, v, g, state), dict(scale=math.inf), "scale must be"),
        ((q, k, v, g, state), dict(scale=0.25, feature_map="tanh"), "feature_map must be one of"),
        ((q, k, v, g, state), dict(scale=0.25, gate_normalizer=-1.0), "gate_normalizer must be"),
        ((q, k, v, g, state), dict(scale=0.25, keep=torch.ones(2)), "keep must be a bool tensor of shape \\(2,\\)"),
        ((q, k, v, g, state), dict(scale=0.25, backend="cuda"), "backend must be one of"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            gla_decode_step(*args, **kwargs)
    with pytest.raises(RuntimeError, match="keeps the state in float32"):
        gla_decode_step(q, k, v, g, state.double(), scale=0.25, backend="triton")
    with pytest.raises(RuntimeError, match="forward only"):
        gla_decode_step(q.requires_grad_(), k, v, g, state, scale=0.25, backend="triton")
    # "auto" on CPU tensors is the reference, and it is differentiable.
    out, _ = gla_decode_step(q, k, v, g, state, scale=0.25)
    out.sum().backward()
    assert q.grad is not None


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
def test_7b_shapes_on_the_gpu_against_float64(dtype, batch):
    # SpikingBrain-7B's GLA layers: 28 query heads over 4 key/value heads of 128.
    q, k, v, g, state = inputs(batch, 4, 7, 128, 128, dtype, seed=7, device="cuda")
    keep = torch.tensor([True, False, True][:batch], device="cuda")
    args = dict(scale=128**-0.5, feature_map="relu", negate_gate=True, keep=keep)
    out, new_state = gla_decode_step(q, k, v, g, state, backend="triton", **args)
    ref_out, ref_state = gla_decode_step_reference(q.double(), k.double(), v.double(), g.double(), state.double(), **args)
    assert rel_err(new_state, ref_state) <= 1e-6
    assert torch.all((out.double() - ref_out).abs() <= output_error_bound(q, k, v, g, state, ref_out, dtype, **args))
    # Captured in a CUDA graph and replayed: the same numbers.
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got_out, got_state = gla_decode_step(q, k, v, g, state, backend="triton", **args)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(got_out, out) and torch.equal(got_state, new_state)
