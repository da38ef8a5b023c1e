"""sb_kernels' one-pass elementwise kernels against their PyTorch rules: RMSNorm (with the fused
residual add), the GLU activation ``silu(gate) * up`` and rotary embedding.

Identities: rotary equals PyTorch's three-kernel evaluation bit for bit (same roundings, each correctly
rounded); ``add_rms_norm``'s sum equals ``x + residual`` bit for bit; RMSNorm and the GLU activation are
within their dtype's rounding of a float64 evaluation of the same rule (two roundings to the dtype, plus
float32 noise), the bound PyTorch's own evaluation satisfies too. CPU tests run the kernels in Triton's
interpreter; ``gpu`` tests compile them at SpikingBrain-7B's widths, and the property tests run compiled
too (``device="cuda"``, the same identities: rotary is compiled without fma and casts round to nearest
as PyTorch's; the bounds allow for ``rsqrt`` and ``exp`` to the last bits of float32).
"""

import copy

import pytest
import torch
import triton.language as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, triton_interpreter, widths  # noqa: F401  (autouse fixture)

from sb_kernels import (
    add_rms_norm,
    apply_rotary,
    apply_rotary_reference,
    rms_norm,
    rms_norm_reference,
    silu_mul,
    silu_mul_reference,
)
from sb_kernels.device import round_to
from sb_kernels.dispatch import lazy_jit

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# silu of gates below -88 in float32: exp(-g) overflows to inf on purpose (silu -> -0), and the
# non-finite input tests multiply NaN and Inf on purpose: numpy warns in Triton's interpreter.
pytestmark = [
    pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]
DEVICE = "cuda" if CUDA else "cpu"


def randn(shape, seed, dtype, device="cpu", scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)


def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def subnormal_step(dtype):
    """Spacing of the dtype's subnormals: a rounding there errs by up to half of it, whatever the value."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def assert_rms_norm_bound(y, x, weight, eps):
    """``|y - exact| <= (2 u + 4e-7) |exact|`` (two roundings to the dtype plus float32 statistics), with
    the absolute error of those two roundings where they fall among subnormals."""
    x64, w64 = x.double(), weight.double()
    h64 = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + eps)
    exact = w64 * h64
    bound = (2 * unit_roundoff(x.dtype) + 4e-7) * exact.abs() + (1 + w64.abs()) * subnormal_step(x.dtype)
    excess = ((y.double() - exact).abs() - bound).max()
    assert excess <= 0, f"RMSNorm off its rounding bound by {float(excess):.3g}"


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=10)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 9),
       dtype=st.sampled_from(DTYPES), eps=st.sampled_from([1e-6, 1e-2]), scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_rms_norm_within_rounding_of_the_rule(device, data, seed, rows, dtype, eps, scale):
    width = data.draw(widths(device, 1, 80, (1, 7, 16, 33, 80)), label="width")  # the BLOCK: few on CUDA
    x = randn((rows, width), seed, dtype, device, scale=scale)
    weight = randn((width,), seed + 1, dtype, device)
    y = rms_norm(x, weight, eps, backend="triton")
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous() and y.device == x.device
    assert_rms_norm_bound(y, x, weight, eps)
    assert_rms_norm_bound(rms_norm_reference(x, weight, eps), x, weight, eps)  # the same bound holds for PyTorch


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=8)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 7), dtype=st.sampled_from(DTYPES))
def test_add_rms_norm_sum_is_exact_and_normed_is_rms_norm_of_it(device, data, seed, rows, dtype):
    width = data.draw(widths(device, 1, 70, (1, 7, 16, 33, 70)), label="width")  # the BLOCK: few on CUDA
    x, residual = randn((2, rows, width), seed, dtype, device), randn((2, rows, width), seed + 1, dtype, device, scale=4.0)
    weight = randn((width,), seed + 2, dtype, device)
    normed, summed = add_rms_norm(x, residual, weight, 1e-6, backend="triton")
    assert torch.equal(summed, x + residual)
    assert_rms_norm_bound(normed, summed, weight, 1e-6)


def test_rms_norm_reads_strided_rows_and_many_rows_per_program():
    # Rows of 16 (64 rows per program), a transposed input (a copy to unit stride) and a row-strided view.
    x = randn((5, 40, 16), 3, torch.bfloat16).transpose(0, 1)
    weight = randn((16,), 4, torch.bfloat16)
    assert_rms_norm_bound(rms_norm(x, weight, backend="triton"), x, weight, 1e-6)
    wide = randn((6, 50), 5, torch.float32)[:, 2:34]
    w32 = randn((64,), 6, torch.float32)[::2]  # a strided weight too
    assert_rms_norm_bound(rms_norm(wide, w32, backend="triton"), wide, w32, 1e-6)


def assert_silu_mul_bound(y, gate, up):
    g64, u64 = gate.double(), up.double()
    exact = g64 * torch.sigmoid(g64) * u64
    bound = (2 * unit_roundoff(gate.dtype) + 4e-7) * exact.abs() + (1 + u64.abs()) * subnormal_step(gate.dtype)
    # Evaluated in float32, exp(-g) overflows for g < -88.7: silu (below 3e-37 there) flushes to zero.
    bound = torch.where(g64 < -88.7, bound + exact.abs(), bound)
    excess = ((y.double() - exact).abs() - bound).max()
    assert excess <= 0, f"silu_mul off its rounding bound by {float(excess):.3g}"


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5000), dtype=st.sampled_from(DTYPES), scale=st.sampled_from([0.1, 3.0, 40.0]))
@example(seed=20414666, n=587, dtype=torch.bfloat16, scale=40.0)  # silu(-86.5) * 3.9e-4: a bfloat16 subnormal
def test_silu_mul_within_rounding_of_the_rule(device, seed, n, dtype, scale):
    # BLOCK is fixed: n changes no compile but Triton's specialization of n (1, divisible by 16, other).
    gate, up = randn((n,), seed, dtype, device, scale=scale), randn((n,), seed + 1, dtype, device)
    y = silu_mul(gate, up, backend="triton")
    assert y.dtype == dtype and y.shape == gate.shape and y.device == gate.device
    assert_silu_mul_bound(y, gate, up)
    assert_silu_mul_bound(silu_mul_reference(gate, up), gate, up)


def rotary_inputs(batch, heads, length, dim, seed, dtype, device="cpu", head_major=False):
    """``x [B, H, L, D]`` (a head-transposed view of ``[B, L, H, D]`` unless ``head_major``) and ``cos, sin``."""
    if head_major:
        x = randn((batch, heads, length, dim), seed, dtype, device)
    else:
        x = randn((batch, length, heads, dim), seed, dtype, device).transpose(1, 2)
    angle_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    angles = randn((batch, length, dim // 2), seed + 1, angle_dtype, device, scale=100.0).repeat(1, 1, 2)
    return x, angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=10)
@given(data=st.data(), seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 2), heads=st.integers(1, 3),
       length=st.integers(1, 40), dtype=st.sampled_from(DTYPES), head_major=st.booleans())
def test_rotary_equals_pytorch_bit_for_bit(device, data, seed, batch, heads, length, dtype, head_major):
    half = data.draw(widths(device, 1, 20, (1, 3, 8, 20)), label="half")  # BLOCK_HALF: few on CUDA
    x, cos, sin = rotary_inputs(batch, heads, length, 2 * half, seed, dtype, device, head_major=head_major)
    out = apply_rotary(x, cos, sin, backend="triton")
    assert out.stride() == x.stride()  # the layout is kept (a head-transposed view stays one)
    assert torch.equal(out, apply_rotary_reference(x, cos, sin))


def test_rotary_is_a_rotation():
    # In float64 the reference rotates each pair (i, i + D/2) by its angle: norms are kept.
    x, cos, sin = rotary_inputs(2, 3, 7, 8, 0, torch.float64, head_major=True)
    out = apply_rotary(x, cos, sin, backend="torch")
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)


def test_gradients_take_pytorch_under_auto_and_triton_refuses():
    x = torch.randn(3, 8, requires_grad=True)
    weight = torch.ones(8, requires_grad=True)
    rms_norm(x, weight, backend="auto").sum().backward()
    assert x.grad is not None and weight.grad is not None
    with pytest.raises(RuntimeError, match="rms_norm: backend='triton' cannot run here: .*forward only"):
        rms_norm(x, weight, backend="triton")
    with pytest.raises(RuntimeError, match="silu_mul: backend='triton' cannot run here: .*forward only"):
        silu_mul(x, x, backend="triton")
    with torch.no_grad():  # no gradient needed: the kernel runs
        assert_rms_norm_bound(rms_norm(x, weight, backend="triton"), x.detach(), weight.detach(), 1e-6)


def test_dtypes_the_kernels_refuse():
    x64 = torch.randn(2, 8, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="one dtype among float16, bfloat16, float32"):
        rms_norm(x64, torch.ones(8, dtype=torch.float64), backend="triton")
    with pytest.raises(RuntimeError, match="one dtype among"):
        silu_mul(torch.randn(4), torch.randn(4, dtype=torch.bfloat16), backend="triton")
    x, cos, sin = rotary_inputs(1, 2, 3, 4, 0, torch.bfloat16)
    with pytest.raises(RuntimeError, match="apply_rotary: .*one dtype among"):
        apply_rotary(x, cos.float(), sin.float(), backend="triton")
    # float64 on "auto": the PyTorch rule.
    w64 = torch.ones(8, dtype=torch.float64)
    torch.testing.assert_close(rms_norm(x64, w64), rms_norm_reference(x64, w64, 1e-6))


def test_bad_arguments_are_named():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        rms_norm(x, torch.ones(7))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        rms_norm(x, torch.ones(8), 0.0)
    with pytest.raises(ValueError, match="residual must have x's shape"):
        add_rms_norm(x, x[:1], torch.ones(8))
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        rms_norm(x.long(), torch.ones(8))
    with pytest.raises(ValueError, match="gate and up must have one shape"):
        silu_mul(x, x[0])
    with pytest.raises(ValueError, match="D even"):
        apply_rotary(torch.randn(1, 1, 2, 3), torch.randn(1, 2, 3), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match=r"cos must have shape \[B, L, D\]"):
        apply_rotary(torch.randn(1, 1, 2, 4), torch.randn(1, 3, 4), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        silu_mul(x, x, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_at_model_widths(dtype):
    with torch.inference_mode():
        for width, rows in ((3584, 4099), (128, 70001)):  # the residual stream; g_norm per head
            x, residual = randn((rows, width), 0, dtype, DEVICE), randn((rows, width), 1, dtype, DEVICE, 3.0)
            weight = randn((width,), 2, dtype, DEVICE)
            normed, summed = add_rms_norm(x, residual, weight, 1e-6, backend="triton")
            assert torch.equal(summed, x + residual)
            assert_rms_norm_bound(normed.cpu(), summed.cpu(), weight.cpu(), 1e-6)
        gate, up = randn((1025, 18944), 3, dtype, DEVICE, 3.0), randn((1025, 18944), 4, dtype, DEVICE)
        assert_silu_mul_bound(silu_mul(gate, up, backend="triton").cpu(), gate.cpu(), up.cpu())
        for heads in (28, 4):
            x, cos, sin = rotary_inputs(1, heads, 4097, 128, 5, dtype, DEVICE)
            out = apply_rotary(x, cos, sin, backend="triton")
            assert out.stride() == x.stride() and torch.equal(out, apply_rotary_reference(x, cos, sin))


def attention_part(batch, heads, rows, dim, seed, dtype, device="cpu"):
    """``(o, lse)`` as an attention kernel returns them: ``o`` a head-transposed view, ``lse`` float32."""
    o = randn((batch, rows, heads, dim), seed, dtype, device).transpose(1, 2)
    lse = randn((batch, heads, rows), seed + 1, torch.float32, device, scale=3.0)
    return o, lse


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 40), dim=st.sampled_from([4, 12, 16]), dtype=st.sampled_from(DTYPES),
       with_b=st.booleans(), rows_c=st.integers(-1, 40), reverse_c=st.booleans())
def test_merge_attention_equals_the_lse_weighted_sum(device, seed, rows, dim, dtype, with_b, rows_c, reverse_c):
    from sb_kernels import merge_attention_into

    rows_c = min(rows_c, rows)
    a = attention_part(2, 3, rows, dim, seed, dtype, device)
    b = attention_part(2, 3, rows, dim, seed + 2, dtype, device) if with_b else None
    c = attention_part(2, 3, rows_c, dim, seed + 4, dtype, device) if rows_c >= 0 else None
    out = torch.full((2, rows, 3, dim), float("nan"), dtype=dtype, device=device).transpose(1, 2)
    merge_attention_into(out, a, b, c, reverse_c=reverse_c, backend="triton")
    # float64 evaluation: query q sees row (rows_c - 1 - q) of c when reversed, row q otherwise.
    parts = [a] + ([b] if b is not None else [])
    weights = [lse.double() for _, lse in parts]
    values = [o.double() for o, _ in parts]
    if c is not None and rows_c > 0:
        index = [rows_c - 1 - q if reverse_c else q for q in range(rows)]
        seen = torch.tensor([0 <= i < rows_c for i in index], device=device)
        gather = torch.tensor([i if 0 <= i < rows_c else 0 for i in index], device=device)
        weights.append(torch.where(seen, c[1].double()[:, :, gather], float("-inf")))
        values.append(c[0].double()[:, :, gather])
    total = torch.logsumexp(torch.stack(weights), dim=0)
    exact = sum((w - total).exp().unsqueeze(-1) * v for w, v in zip(weights, values, strict=True))
    scale = torch.stack([v.abs().amax(-1) for v in values]).amax(0).unsqueeze(-1)
    bound = (unit_roundoff(dtype) + 1e-6) * scale + subnormal_step(dtype)
    assert not out.isnan().any()
    assert ((out.double() - exact).abs() <= bound).all()
    reference = torch.empty_like(out)
    merge_attention_into(reference, a, b, c, reverse_c=reverse_c, backend="torch")
    assert ((reference.double() - exact).abs() <= bound).all()


def test_merge_attention_checks_shapes():
    from sb_kernels import merge_attention_into

    a = attention_part(1, 2, 5, 4, 0, torch.float32)
    out = torch.empty(1, 2, 5, 4)
    with pytest.raises(ValueError, match="b must be"):
        merge_attention_into(out, a, attention_part(1, 2, 4, 4, 1, torch.float32))
    with pytest.raises(ValueError, match="c must be"):
        merge_attention_into(out, a, c=attention_part(1, 2, 6, 4, 1, torch.float32))
    with pytest.raises(ValueError, match="out must be"):
        merge_attention_into(out[0], a)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kernel", ["flash", "cudnn"])
@pytest.mark.parametrize("layout", [(8, 2, 64, 384), (28, 4, 128, 512)], ids=["small", "7B-heads"])
def test_gpu_windowed_attention_with_merge_kernel_matches_float64(dtype, kernel, layout):
    """The SWA prefill path these kernels serve (fused attention pieces merged on the GPU) against a float64
    band, on each fused kernel the pieces can take (cuDNN is the default on Hopper)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sb_layers import attention as swa

    if kernel == "cudnn" and torch.cuda.get_device_capability() < swa.CUDNN_MIN_CAPABILITY:
        pytest.skip("the windowed path takes cuDNN only on Hopper and newer")
    heads, kv_heads, dim, window = layout
    cached, q_len = 256, 1000
    q = randn((1, heads, q_len, dim), 0, dtype, DEVICE)
    keys, values = randn((1, kv_heads, cached + q_len, dim), 1, dtype, DEVICE), randn((1, kv_heads, cached + q_len, dim), 2, dtype, DEVICE)
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[kernel]
    with torch.inference_mode(), sdpa_kernel([backend]):
        out = swa.windowed_attention(q, keys, values, window).double().cpu()
    if kernel == "cudnn":
        assert swa._KERNEL_WORKS["cudnn"], "cuDNN's attention failed and the pieces fell back to flash"
    k64 = keys.double().cpu().repeat_interleave(heads // kv_heads, dim=1)
    v64 = values.double().cpu().repeat_interleave(heads // kv_heads, dim=1)
    scores = q.double().cpu() @ k64.transpose(-1, -2) * dim**-0.5
    query_pos = torch.arange(cached, cached + q_len)[:, None]
    key_pos = torch.arange(cached + q_len)[None, :]
    band = (key_pos <= query_pos) & (key_pos > query_pos - window)
    exact = scores.masked_fill(~band, float("-inf")).softmax(-1) @ v64
    assert float((out - exact).norm() / exact.norm()) < 8 * unit_roundoff(dtype)


@pytest.mark.gpu
def test_gpu_windowed_attention_falls_back_to_flash_when_cudnn_fails(monkeypatch):
    """A build or GPU whose cuDNN attention raises: the pieces run on flash (same result as with flash
    chosen), and cuDNN is not tried again in the process."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sb_layers import attention as swa

    if torch.cuda.get_device_capability() < swa.CUDNN_MIN_CAPABILITY:
        pytest.skip("the windowed path takes cuDNN only on Hopper and newer")
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args[0].shape)
        raise RuntimeError("no cuDNN attention here (test)")

    heads, kv_heads, dim, window = 8, 2, 64, 256
    q = randn((1, heads, 700, dim), 0, torch.bfloat16, DEVICE)
    keys, values = randn((1, kv_heads, 700, dim), 1, torch.bfloat16, DEVICE), randn((1, kv_heads, 700, dim), 2, torch.bfloat16, DEVICE)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        want = swa.windowed_attention(q, keys, values, window)
    monkeypatch.setattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention", refuse)
    monkeypatch.setitem(swa._KERNEL_WORKS, "cudnn", True)
    monkeypatch.setitem(swa._KERNEL_WORKS, "cudnn_grouped", True)
    with torch.inference_mode():
        got = swa.windowed_attention(q, keys, values, window)
        assert calls and not swa._KERNEL_WORKS["cudnn"]
        tried = len(calls)
        swa.windowed_attention(q, keys, values, window)
    assert len(calls) == tried  # not tried again
    assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_windowed_attention_and_the_layer_train_with_exact_gradients(dtype):
    """The fused kernels' log-sum-exp has no gradient: with inputs that need one, ``windowed_attention``
    computes differentiably and the SWA layer takes its masked blocks, so gradients equal float64's."""
    from sb_layers import MixerCache, SlidingWindowAttention
    from sb_layers import attention as swa

    heads, kv_heads, dim, window, length = 4, 2, 32, 48, 130
    tensors = [randn((1, h, length, dim), seed, dtype, DEVICE).requires_grad_() for seed, h in ((0, heads), (1, kv_heads), (2, kv_heads))]
    weight = randn((1, heads, length, dim), 3, torch.float32, DEVICE)
    (swa.windowed_attention(*tensors, window).float() * weight).sum().backward()
    exact = [t.detach().double().cpu().requires_grad_() for t in tensors]
    (swa.windowed_attention(*exact, window) * weight.double().cpu()).sum().backward()
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    for got, want in zip(tensors, exact):
        assert float((got.grad.double().cpu() - want.grad).norm() / want.grad.norm()) < tolerance

    torch.manual_seed(0)
    layer = SlidingWindowAttention(64, heads, kv_heads, window=window, query_chunk_size=32, device=DEVICE)
    reference = copy.deepcopy(layer).double().cpu()
    x = randn((2, length, 64), 4, torch.float32, DEVICE).requires_grad_()
    x64 = x.detach().double().cpu().requires_grad_()
    layer(x, None, MixerCache(1)).square().sum().backward()
    reference(x64, None, MixerCache(1)).square().sum().backward()
    for got, want in ((x.grad, x64.grad), (layer.q_proj.weight.grad, reference.q_proj.weight.grad)):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-6)


@lazy_jit
def round_bf16(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(y_ptr + offs, round_to(x, tl.bfloat16), mask=offs < n)


def test_round_to_bfloat16_rounds_to_nearest_even_and_keeps_nan_and_inf():
    # NVIDIA's NaN (0x7FFFFFFF) and a negative NaN, infinities, ties, the largest float32, subnormals.
    bits = torch.tensor([0x7FFFFFFF, -1, 0x7F800000, -8388608, 0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x00008000, 1], dtype=torch.int32)
    x = torch.cat([bits.view(torch.float32), torch.randn(300, dtype=torch.float64).mul(1e3).float()])
    y = torch.empty_like(x)
    round_bf16[(1,)](x, y, x.numel(), BLOCK=512)
    expected = x.to(torch.bfloat16).float()  # PyTorch: round to nearest even
    assert torch.equal(y.isnan(), expected.isnan()) and y[:2].isnan().all()
    assert torch.equal(y[~y.isnan()], expected[~expected.isnan()])


def assert_nan_and_inf_propagate_as_in_pytorch(device):
    """Non-finite inputs give the non-finite outputs PyTorch gives (no NaN rounded into a number)."""
    x = randn((3, 64), 7, torch.bfloat16, device)
    x[0, 5], x[1, 9] = float("nan"), float("inf")
    weight = randn((64,), 8, torch.bfloat16, device)
    pairs = [
        (rms_norm(x, weight, backend="triton"), rms_norm_reference(x, weight, 1e-6)),
        (silu_mul(x, x.flip(0), backend="triton"), silu_mul_reference(x, x.flip(0))),
    ]
    q, cos, sin = rotary_inputs(1, 2, 3, 64, 9, torch.bfloat16, device)
    q[0, 1, 2, 3] = float("nan")
    pairs.append((apply_rotary(q, cos, sin, backend="triton"), apply_rotary_reference(q, cos, sin)))
    for out, ref in pairs:
        assert torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.isinf(), ref.isinf())
        assert ref.isnan().any()


def test_nan_and_inf_propagate_as_in_pytorch():
    assert_nan_and_inf_propagate_as_in_pytorch("cpu")


@pytest.mark.gpu
def test_gpu_nan_and_inf_propagate_as_in_pytorch():
    with torch.inference_mode():
        assert_nan_and_inf_propagate_as_in_pytorch(DEVICE)
