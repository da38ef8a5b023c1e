"""sb_kernels.decode_attention: one query per head, grouped key/value heads, split over the keys.

Identity: equal to masked softmax attention over keys and values repeated per group (float64 reference),
for any mask with an allowed key per row, including key slices with no allowed key (their log-sum-exp
is -inf and they weigh nothing in the merge). The property runs interpreted (CPU, float32 tiles) and
compiled (``device="cuda"``: half-precision tiles on tensor cores, probabilities rounded to the value
dtype before their product with the values, ``exp`` as ``ex2.approx``), within the same bound, which
allows for those roundings.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import DEVICES, triton_interpreter  # noqa: F401  (autouse fixture)

import sb_kernels.split_kv_attention as da
from sb_kernels import decode_attention, decode_attention_reference


def inputs(batch, kv_heads, groups, keys_len, dim, dtype, seed, device="cpu", visible=0.5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, kv_heads * groups, 1, dim, generator=g).to(dtype).to(device)
    keys = torch.randn(batch, kv_heads, keys_len, dim, generator=g).to(dtype).to(device)
    values = torch.randn(batch, kv_heads, keys_len, dim, generator=g).to(dtype).to(device)
    allowed = torch.rand(batch, 1, keys_len, generator=g) < visible
    allowed[:, :, : keys_len // 2] = False  # whole slices without an allowed key
    allowed[:, :, -1] = True
    return q, keys, values, allowed.to(device)


def assert_close_to_reference(out, q, keys, values, allowed, scale=None):
    """float32: a few ulps; bfloat16/float16: the output's rounding (one unit in its last place) plus the
    probabilities rounded to the value dtype before their product with the values (compiled kernels)."""
    ref = decode_attention_reference(q.double(), keys.double(), values.double(), allowed, scale)
    eps = {torch.float32: 2**-20, torch.bfloat16: 2**-7, torch.float16: 2**-10}[out.dtype]
    tol = eps * (ref.abs() + values.double().abs().amax(dim=(1, 2, 3)).reshape(-1, 1, 1, 1))
    assert out.shape == ref.shape and out.dtype == q.dtype
    assert torch.all((out.double() - ref).abs() <= tol), float(((out.double() - ref).abs() / tol).max())


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 2),
    kv_heads=st.integers(1, 3),
    groups=st.sampled_from([1, 3, 7]),
    keys_len=st.integers(1, 300),
    dim=st.sampled_from([16, 24, 32]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    visible=st.sampled_from([0.05, 0.5, 1.0]),
)
def test_split_attention_equals_softmax_over_repeated_keys(device, seed, batch, kv_heads, groups, keys_len, dim, dtype, visible):
    q, keys, values, allowed = inputs(batch, kv_heads, groups, keys_len, dim, dtype, seed, device=device, visible=visible)
    out = decode_attention(q, keys, values, allowed, backend="triton")
    assert out.device == q.device
    assert_close_to_reference(out, q, keys, values, allowed)
    assert torch.equal(decode_attention(q, keys, values, allowed, backend="torch"), decode_attention_reference(q, keys, values, allowed))


def test_scale_mask_layouts_and_strides():
    q, keys, values, allowed = inputs(2, 2, 4, 150, 16, torch.float32, seed=3)
    out = decode_attention(q, keys, values, allowed.reshape(2, 150), scale=0.3, backend="triton")
    assert_close_to_reference(out, q, keys, values, allowed, scale=0.3)
    # keys as a view of a longer [B, Lk, Hkv, D] buffer (strided along the keys), as a cache may hold them
    wide = torch.randn(2, 150, 2, 16)
    strided = wide.transpose(1, 2)
    out = decode_attention(q, strided, strided, allowed, backend="triton")
    assert_close_to_reference(out, q, strided, strided, allowed)


@pytest.mark.parametrize("visible", [0.05, 1.0])
def test_many_slices_merge_in_chunks(monkeypatch, visible):
    """Short steps and many programs: more slices than the merge reads per load (several chunks, the
    last one partial), many of them without an allowed key."""
    monkeypatch.setattr(da, "BLOCK_N", 16)
    monkeypatch.setattr(da, "MERGE_CHUNK", 4)
    monkeypatch.setattr(da, "INTERPRETER_SMS", 64)
    q, keys, values, allowed = inputs(1, 2, 3, 290, 16, torch.float32, seed=7, visible=visible)
    splits, _ = da._splits(2, 290, torch.device("cpu"))
    assert splits > 4 and splits % 4
    assert_close_to_reference(decode_attention(q, keys, values, allowed, backend="triton"), q, keys, values, allowed)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
def test_a_row_without_an_allowed_key_is_nan_on_both_backends():
    """As softmax over no key: NaN for that batch row's heads only (no host check, a graph can hold it)."""
    q, keys, values, allowed = inputs(2, 2, 3, 140, 16, torch.float32, seed=5)
    allowed[1] = False
    for backend in ("torch", "triton"):
        out = decode_attention(q, keys, values, allowed, backend=backend)
        assert bool(out[1].isnan().all()) and bool(torch.isfinite(out[0]).all())
    assert_close_to_reference(decode_attention(q[:1], keys[:1], values[:1], allowed[:1], backend="triton"),
                              q[:1], keys[:1], values[:1], allowed[:1])


def test_splits_cover_the_keys_in_whole_steps():
    for work, keys_len in ((1, 1), (4, 4096), (4, 100), (64, 5000), (1, 10**6)):
        splits, per_split = da._splits(work, keys_len, torch.device("cpu"))
        assert per_split % da.BLOCK_N == 0 and (splits - 1) * per_split < keys_len <= splits * per_split


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda q, k, v, a: (q.expand(-1, -1, 2, -1), k, v, a), "one query per head"),
        (lambda q, k, v, a: (q, k[:, :1].expand(-1, 3, -1, -1), v[:, :1].expand(-1, 3, -1, -1), a), "must divide"),
        (lambda q, k, v, a: (q, k, v[..., :8], a), "keys and values"),
        (lambda q, k, v, a: (q, k, v, a.float()), "allowed"),
        (lambda q, k, v, a: (q, k, v, a[..., :5]), "allowed"),
        (lambda q, k, v, a: (q.double(), k, v, a), "one dtype"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    args = make(*inputs(1, 2, 2, 10, 16, torch.float32, seed=0))
    with pytest.raises(ValueError, match=match):
        decode_attention(*args, backend="torch")


def test_bad_scale_and_gradients_take_the_reference():
    q, keys, values, allowed = inputs(1, 2, 2, 40, 16, torch.float32, seed=1)
    with pytest.raises(ValueError, match="scale"):
        decode_attention(q, keys, values, allowed, scale=-1.0)
    q.requires_grad_(True)
    out = decode_attention(q, keys, values, allowed, backend="auto")  # forward-only kernel: the reference
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    with pytest.raises(RuntimeError, match="forward only"):
        decode_attention(q, keys, values, allowed, backend="triton")


@pytest.mark.gpu
@pytest.mark.parametrize("keys_len", [1, 1000, 4096, 4097])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_7b_window(keys_len, dtype):
    """SpikingBrain-7B's SWA decode (28 query heads over 4 key/value heads, D = 128), up to a full window;
    captured in a CUDA graph and replayed on new values, it equals the eager call."""
    q, keys, values, allowed = inputs(1, 4, 7, keys_len, 128, dtype, seed=keys_len, device="cuda")
    out = decode_attention(q, keys, values, allowed, backend="triton")
    assert_close_to_reference(out, q, keys, values, allowed)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        decode_attention(q, keys, values, allowed, backend="triton")
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        static = decode_attention(q, keys, values, allowed, backend="triton")
    values.copy_(torch.randn_like(values))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static, decode_attention(q, keys, values, allowed, backend="triton"))
