"""sb_kernels.rotate_and_write_ring: a sliding-window decode step's rotary rotation and ring-buffer write.

Identity: the Triton kernel equals the PyTorch reference in every output and every buffer it writes, for
any ring order of the window's indices, any padding and long-context positions: bit for bit on the GPU,
and up to the last bit of a cosine in Triton's CPU interpreter. The property runs interpreted (CPU) and
compiled (``device="cuda"``, where it is bit for bit). With the W8ASpike coding, the int8 keys and values
equal :mod:`sb_kernels.fake_quant`'s Triton coding of the uncoded run's bit for bit on both (maxima are
exact in any order, both divide correctly rounded), and everything is within a step of the reference's
coding (PyTorch's scales may differ in the last bit: another summation order, and on CUDA a product with a
rounded reciprocal).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import int8_fake_quantize, rotate_and_write_ring, spike_fake_quantize


def ring_state(batch, heads, kv_heads, window, dim, dtype, seed, *, max_seen=200_000, masked=True, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, dim, generator=gen).to(dtype)
    k = torch.randn(batch, kv_heads, dim, generator=gen).to(dtype)
    v = torch.randn(batch, kv_heads, dim, generator=gen).to(dtype)
    keys = torch.randn(batch, kv_heads, window, dim, generator=gen).to(dtype)
    values = torch.randn(batch, kv_heads, window, dim, generator=gen).to(dtype)
    key_mask = torch.rand(batch, window, generator=gen) < (0.7 if masked else 2.0)
    start = int(torch.randint(-window, max_seen, (1,), generator=gen))
    # A contiguous run of indices in ring order: rotated by a random number of writes.
    key_index = torch.roll(torch.arange(start, start + window), int(torch.randint(0, window, (1,), generator=gen)))
    seen = torch.randint(0, max_seen, (batch,), generator=gen)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    tensors = (q, k, v, keys, values, key_mask, key_index, seen, inv_freq)
    return tuple(t.to(device) for t in tensors)


def run(backend, tensors, keep, spike_query_k=None):
    copies = [t.clone() for t in tensors]
    out = rotate_and_write_ring(*copies, keep=keep, spike_query_k=spike_query_k, backend=backend)
    return out, copies


def assert_coded_within_a_step(a, b, spike_query_k):
    """The W8ASpike coding: the query, keys and values of two runs within one quantization step of their
    row (a scale may differ in its last bit, and a value at a rounding tie take the next count); every
    other output and buffer equal."""
    (out_a, buf_a), (out_b, buf_b) = a, b
    steps = {
        0: out_b[0].double().abs().mean(-1, keepdim=True) / spike_query_k,  # q_rot
        6: buf_b[3].double().abs().amax(-1, keepdim=True) / 127,  # keys
        7: buf_b[4].double().abs().amax(-1, keepdim=True) / 127,  # values
    }
    for position, (x, y) in enumerate(zip((*out_a, *buf_a), (*out_b, *buf_b))):
        if position in steps:
            assert bool(((x.double() - y.double()).abs() <= 1.01 * steps[position] + 1e-6).all())
        else:
            assert torch.equal(x, y)


ULP = {torch.float32: 2**-23, torch.bfloat16: 2**-8, torch.float16: 2**-11}


def assert_same(a, b, cosine_ulps=0):
    """Every output and buffer equal; the rotated query and keys within ``cosine_ulps`` of a cosine/sine
    rounding difference (Triton's interpreter takes NumPy's float32 cosine, which may differ from
    PyTorch's CPU one in the last bit; compiled kernels and PyTorch on CUDA share CUDA's)."""
    (out_a, buf_a), (out_b, buf_b) = a, b
    for position, (x, y) in enumerate(zip((*out_a, *buf_a), (*out_b, *buf_b))):
        assert x.dtype == y.dtype and x.shape == y.shape
        if cosine_ulps and position in (0, 6):  # q_rot, keys
            bound = cosine_ulps * ULP[x.dtype] * 2 * float(y.double().abs().amax())
            assert float((x.double() - y.double()).abs().max()) <= bound
        else:
            assert torch.equal(x, y), float((x.double() - y.double()).abs().max())


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), kv_heads=st.integers(1, 3), groups=st.sampled_from([1, 2, 7]),
    window=st.sampled_from([1, 5, 64, 1100, 4200]), dim=st.sampled_from([2, 16, 40]),  # 4200: two search steps
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), padded=st.booleans(),
)
def test_kernel_equals_the_reference(device, seed, batch, kv_heads, groups, window, dim, dtype, padded):
    tensors = ring_state(batch, kv_heads * groups, kv_heads, window, dim, dtype, seed, device=device)
    keep = (torch.arange(batch, device=device) % 2 == 1) if padded else None
    # Compiled: libdevice's cos/sin as PyTorch's CUDA kernels, no fma: bit for bit.
    plain = run("triton", tensors, keep)
    assert_same(plain, run("torch", tensors, keep), cosine_ulps=2 if device == "cpu" else 0)
    if dim > 2:  # the W8ASpike attention's coding of the rotated query, key and value
        coded = run("triton", tensors, keep, 3.0)
        assert_coded_within_a_step(coded, run("torch", tensors, keep, 3.0), 3.0)
        (_, plain_buffers), (_, coded_buffers) = plain, coded
        slot = int(plain_buffers[6].argmax())  # the slot now holds the largest index
        want_keys, want_values = tensors[3].clone(), tensors[4].clone()
        want_keys[:, :, slot] = int8_fake_quantize(plain_buffers[3][:, :, slot], backend="triton")
        want_values[:, :, slot] = int8_fake_quantize(tensors[2], backend="triton")
        assert torch.equal(coded_buffers[3], want_keys) and torch.equal(coded_buffers[4], want_values)


def test_the_oldest_entry_is_replaced_and_the_new_one_is_always_attended():
    q, k, v, keys, values, key_mask, key_index, seen, inv_freq = ring_state(2, 4, 2, 6, 8, torch.float32, seed=1)
    key_index.copy_(torch.tensor([13, 14, 15, 10, 11, 12]))
    for backend in ("torch", "triton"):
        ks, vs, km, ki = keys.clone(), values.clone(), key_mask.clone(), key_index.clone()
        keep = torch.tensor([True, False])
        q_rot, allowed, next_seen = rotate_and_write_ring(q, k, v, ks, vs, km, ki, seen, inv_freq, keep=keep, backend=backend)
        assert ki.tolist() == [13, 14, 15, 16, 11, 12]
        assert torch.equal(vs[:, :, 3], v) and torch.equal(vs[:, :, :3], values[:, :, :3])
        assert km[:, 3].tolist() == [True, False] and torch.equal(km[:, 4:], key_mask[:, 4:])
        assert allowed[:, 3].all() and torch.equal(allowed[:, :3], key_mask[:, :3])
        assert torch.equal(next_seen, seen + torch.tensor([1, 0]))
        assert q_rot.shape == (2, 4, 1, 8)
        # A rotation keeps each half-pair's norm.
        pair = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
        torch.testing.assert_close(pair(q_rot[:, :, 0]), pair(q), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pair(ks[:, :, 3]), pair(k), rtol=1e-5, atol=1e-5)


def test_position_zero_leaves_the_query_and_key_unrotated():
    q, k, v, keys, values, key_mask, key_index, seen, inv_freq = ring_state(1, 2, 1, 4, 8, torch.float32, seed=2)
    seen.zero_()
    q_rot, allowed, _ = rotate_and_write_ring(q, k, v, keys, values, key_mask, key_index, seen, inv_freq, backend="triton")
    assert allowed is key_mask and bool(key_mask[0, int(key_index.argmax())])  # no padding: the mask itself
    assert torch.equal(q_rot[:, :, 0], q)
    assert torch.equal(keys[:, :, int(key_index.argmax())], k)


def test_rejects_bad_arguments():
    q, k, v, keys, values, key_mask, key_index, seen, inv_freq = ring_state(2, 4, 2, 6, 8, torch.float32, seed=3)
    good = [q, k, v, keys, values, key_mask, key_index, seen, inv_freq]
    cases = [
        (0, q[0], "q must be a floating-point \\[B, heads, D\\]"),
        (0, q[..., :7], "must be even"),
        (1, k[:, :, :4], "k and v must be \\[B, Hkv, D\\]"),
        (3, keys[:, :1], "keys must be a \\[B, Hkv, W, D\\] ring buffer"),
        (4, values[:, :, :5], "values must have the shape of keys"),
        (2, v.double(), "k and v must be|share one dtype"),
        (5, key_mask.long(), "key_mask must be a bool tensor of shape \\(2, 6\\)"),
        (6, key_index.int(), "key_index must be an int64 tensor of shape \\(6,\\)"),
        (7, seen[:1], "seen_tokens must be an int64 tensor of shape \\(2,\\)"),
        (8, inv_freq[:3], "inv_freq must be a floating-point tensor of shape \\(4,\\)"),
    ]
    for position, bad, message in cases:
        args = list(good)
        args[position] = bad
        with pytest.raises(ValueError, match=message):
            rotate_and_write_ring(*args)
    with pytest.raises(ValueError, match="keep must be a bool tensor of shape \\(2,\\)"):
        rotate_and_write_ring(*good, keep=torch.ones(2))
    for bad_k, error in ((0.0, ValueError), (-1.0, ValueError), (float("inf"), ValueError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="spike_query_k must be a"):
            rotate_and_write_ring(*good, spike_query_k=bad_k)
    with pytest.raises(RuntimeError, match="float32 inv_freq"):
        rotate_and_write_ring(*good[:8], inv_freq.double(), backend="triton")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch", [1, 3])
def test_7b_window_on_the_gpu_equals_the_reference_and_replays(dtype, batch):
    # SpikingBrain-7B's SWA layers: 28 query heads, 4 key/value heads of 128, a 4,096-token window,
    # positions past 128k (the angles' range reduction matters there).
    tensors = ring_state(batch, 28, 4, 4096, 128, dtype, seed=4, max_seen=600_000, device="cuda")
    keep = torch.tensor([True, False, True][:batch], device="cuda")
    assert_same(run("triton", tensors, keep), run("torch", tensors, keep))
    copies = [t.clone() for t in tensors]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = rotate_and_write_ring(*copies, keep=keep, backend="triton")
    graph.replay()
    torch.cuda.synchronize()
    assert_same((outs, copies), run("torch", tensors, keep))
    # The W8ASpike coding against the unfused path the layer took before (the rotated query, key and
    # value coded by sb_kernels.fake_quant's Triton kernels, which divide as this kernel does; PyTorch on
    # CUDA multiplies by a rounded reciprocal instead): int8 keys and values bit-equal (maxima are exact
    # in any order); the spiking query within a step of its row, with the same counts almost everywhere
    # (its scale sums the row's halves in another order, so it may differ in the last bit).
    (plain, plain_buffers), (got, got_buffers) = run("triton", tensors, keep), run("triton", tensors, keep, 3.0)
    slot = int(plain_buffers[6].argmax())
    q, k, v, keys, values = tensors[:5]
    want_keys, want_values = keys.clone(), values.clone()
    want_keys[:, :, slot] = int8_fake_quantize(plain_buffers[3][:, :, slot], backend="triton")
    want_values[:, :, slot] = int8_fake_quantize(v, backend="triton")
    assert torch.equal(got_buffers[3], want_keys) and torch.equal(got_buffers[4], want_values)
    want_q = spike_fake_quantize(plain[0], 3.0, backend="triton")
    assert_coded_within_a_step((got, got_buffers), ((want_q, *plain[1:]), got_buffers), 3.0)
    step = plain[0].double().abs().mean(-1, keepdim=True) / 3.0
    counts = lambda t: torch.round(t.double() / step)  # noqa: E731
    assert float((counts(got[0]) == counts(want_q)).float().mean()) >= 0.99
