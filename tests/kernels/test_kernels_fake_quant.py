"""sb_kernels' per-vector fake quantization (W8ASpike attention) against its PyTorch rules.

Identities: ``int8_fake_quantize`` equals its reference bit for bit on the CPU (``max`` is exact in any
order; on CUDA PyTorch's scalar division multiplies by a rounded reciprocal);
``spike_fake_quantize`` equals ``round(x / s) * s`` cast to the dtype bit for bit for the scale ``s`` the
kernel used, and that scale is PyTorch's ``v_th`` up to the last bits of float32 (another summation
order); rows holding NaN or Inf come out NaN on both backends, other rows untouched; an int8 row on its
grid is a fixed point and ``|y - x| <= s / 2``. CPU tests run the kernel in Triton's interpreter; ``gpu``
tests compile it at the 7B's head width, and the property tests run compiled too (``device="cuda"``): there
the int8 output equals the rule for the kernel's scale, which is the correctly rounded ``max|x| / 127``, and
PyTorch's own scale is within its last bit (equal outputs wherever it is the same).
"""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, heavy_tailed, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import int8_fake_quantize, int8_fake_quantize_reference, spike_fake_quantize, spike_fake_quantize_reference
from sb_kernels import fake_quant
from sb_neurons import adaptive_threshold, spike_quantize

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def sample(rows, width, seed, dtype, device="cpu"):
    """Heavy-tailed rows (counts far past 127) with some rows scaled into the clamps of the scale."""
    x = heavy_tailed((rows, width), seed, dtype=torch.float64)
    x[0] *= 1e-9  # scale clamped at 1e-5
    if rows > 2 and dtype != torch.float16:  # float16 ends at 65504: such rows would hold inf
        x[2] *= 1e7  # scale clamped at 1e4 (int8: counts saturate)
    return x.to(dtype).to(device)


def own_scale_rule(x, scales, int8):
    """``round(x / s) * s`` in float32 with the kernel's scales, cast to ``x.dtype`` (PyTorch ops)."""
    s = scales.reshape(*x.shape[:-1], 1)
    r = torch.round(x.float() / s)
    if int8:
        r = r.clamp(-128, 127)
    return (r * s).to(x.dtype)


def next_up(t):
    return torch.nextafter(t, torch.full_like(t, float("inf")))


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 12), width=st.sampled_from([1, 7, 64, 128, 200]),
       dtype=st.sampled_from(DTYPES))
def test_int8_equals_reference_bit_for_bit(device, seed, rows, width, dtype):
    x = sample(rows, width, seed, dtype, device)
    got = int8_fake_quantize(x, backend="triton")
    assert got.dtype == dtype and got.shape == x.shape and got.device == x.device
    again, scales = fake_quant._launch(x, 0.0, int8=True)
    assert torch.equal(again, got) and torch.equal(got, own_scale_rule(x, scales, int8=True))
    # The kernel's scale is the correctly rounded max|x| / 127 (float64 quotient of float32 operands,
    # rounded once more to float32: exact), then clamped.
    exact_scale = (x.double().abs().amax(-1) / 127).float().clamp(1e-5, 1e4).reshape(-1)
    assert torch.equal(scales, exact_scale)
    want = int8_fake_quantize_reference(x)
    if device == "cpu":  # PyTorch divides exactly too
        assert torch.equal(got, want)
        return
    # CUDA: PyTorch divides by the Python scalar 127 as a product with RN(1 / 127), so its scale is
    # within one ulp of the kernel's, and every row whose scale is the same equals the reference's.
    torch_scale = (x.float().abs().amax(-1) / 127).clamp(1e-5, 1e4).reshape(-1)
    assert bool(((torch_scale - scales).abs() <= next_up(scales) - scales).all())
    same = (torch_scale == scales).reshape(*x.shape[:-1], 1).expand_as(x)
    assert torch.equal(got[same], want[same])


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 12), width=st.sampled_from([1, 7, 64, 128, 200]),
       dtype=st.sampled_from(DTYPES), k=st.sampled_from([1.0, 3.0, 7.5]))
@example(seed=0, rows=3, width=1, dtype=torch.bfloat16, k=7.5)  # a one-element row: x / v_th is exactly -k, a tie
def test_spike_equals_the_rule_for_its_scale(device, seed, rows, width, dtype, k):
    # The same identities compiled (CUDA) and interpreted: the kernel divides correctly rounded on both;
    # on CUDA PyTorch's v_th (mean / k, a product with RN(1 / k)) may differ in one more last bit, which
    # the 4e-7 bound covers (as the gpu test below), and where it is the same the outputs are equal.
    x = sample(rows, width, seed, dtype, device)
    got, scales = fake_quant._launch(x, k, int8=False)
    assert torch.equal(got, own_scale_rule(x, scales, int8=False))
    # The kernel's scale against the exact one: a float32 sum of |x| (any order) and two divisions.
    exact_v_th = (x.double().abs().mean(-1) / k).clamp(1e-5, 1e4)
    assert bool(((scales.double() - exact_v_th).abs() <= exact_v_th * (width + 2) * 2**-24).all())
    reference_v_th = adaptive_threshold(x, k).reshape(-1)
    torch.testing.assert_close(scales, reference_v_th, rtol=4e-7, atol=0)
    same_scale = scales == reference_v_th
    want = spike_fake_quantize_reference(x, k)
    assert torch.equal(got[same_scale], want[same_scale])
    assert torch.equal(spike_fake_quantize(x, k, backend="triton"), got)


def test_spike_reference_is_sb_neurons_rule():
    x = sample(9, 96, 3, torch.float32)
    torch.testing.assert_close(spike_fake_quantize_reference(x, 3.0), spike_quantize(x, 3.0), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_int8_grid_is_fixed_and_error_is_half_a_step(backend):
    g = torch.Generator().manual_seed(0)
    n = torch.randint(-127, 128, (6, 128), generator=g).double()
    n[:, 0] = 127  # max |n| = 127: the scale the rule derives is the grid's own
    step = 2.0 ** torch.randint(-12, 6, (6, 1), generator=g).double()  # 127 * step / 127 == step exactly
    grid = (n * step).float()
    assert torch.equal(int8_fake_quantize(grid, backend=backend), grid)
    x = sample(6, 128, 1, torch.float32)
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(1e-5, 1e4)
    err = (int8_fake_quantize(x, backend=backend).double() - x.double()).abs()
    # Within half a step wherever the count is not saturated by the clamped scale (row 2: 1e4).
    inside = (x.double() / scale.double()).abs() <= 127.5
    assert bool((err[inside] <= scale.double().expand_as(err)[inside] / 2 * (1 + 1e-6)).all())


@pytest.mark.parametrize("op", [spike_fake_quantize, int8_fake_quantize])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rows_become_nan_on_both_backends(op, bad):
    x = sample(5, 64, 2, torch.float32)
    x[1, 3] = bad
    outs = [op(x, backend=b) for b in ("torch", "triton")]
    for out in outs:
        assert bool(out[1].isnan().all()) and not bool(out[[0, 2, 3, 4]].isnan().any())
    finite_rows = [0, 2, 3, 4]
    # The other rows are untouched: the rule for the kernel's own scales (the reference's, for int8).
    _, scales = fake_quant._launch(x, 3.0, int8=op is int8_fake_quantize)
    want = own_scale_rule(x, scales, int8=op is int8_fake_quantize)
    assert torch.equal(outs[1][finite_rows], want[finite_rows])
    if op is int8_fake_quantize:
        assert torch.equal(outs[0][finite_rows], outs[1][finite_rows])


@pytest.mark.parametrize("op", [spike_fake_quantize, int8_fake_quantize])
def test_gradient_is_straight_through_and_auto_takes_torch(op):
    x = sample(4, 32, 5, torch.float32).requires_grad_(True)
    y = op(x)  # "auto" under autograd: the PyTorch path
    (y * torch.arange(32.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(32.0).expand(4, 32))
    with pytest.raises(RuntimeError, match="forward only"):
        op(x, backend="triton")


def test_arguments_are_checked():
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="k"):
        spike_fake_quantize(x, 0.0)
    with pytest.raises(TypeError, match="x"):
        int8_fake_quantize(torch.ones(3, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[\.\.\., D\]"):
        int8_fake_quantize(torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="wider than"):
        int8_fake_quantize(torch.randn(2, fake_quant.MAX_TRITON_WIDTH + 1), backend="triton")
    wide = torch.randn(2, fake_quant.MAX_TRITON_WIDTH + 1)
    assert torch.equal(int8_fake_quantize(wide), int8_fake_quantize_reference(wide))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_head_vectors_of_the_7b(dtype):
    # On CUDA, PyTorch divides by a Python scalar as a product with its rounded reciprocal, so the
    # reference's scales may differ from the correctly rounded ones in the last bit: outputs are checked
    # against the rule for the kernel's own scales, and the scales against PyTorch's within that bit.
    x = sample(28 * 2048, 128, 7, dtype, device="cuda").reshape(1, 28, 2048, 128)
    x[0, 3, 5, 9] = float("nan")
    got = int8_fake_quantize(x, backend="triton")
    assert torch.equal(got.isnan(), int8_fake_quantize_reference(x).isnan())
    x[0, 3, 5, 9] = 1.0
    for int8, want_scale in ((True, (x.float().abs().amax(-1) / 127).clamp(1e-5, 1e4)), (False, adaptive_threshold(x, 3.0))):
        got, scales = fake_quant._launch(x, 3.0, int8=int8)
        assert torch.equal(got, own_scale_rule(x, scales, int8=int8))
        torch.testing.assert_close(scales, want_scale.reshape(-1), rtol=4e-7, atol=0)
