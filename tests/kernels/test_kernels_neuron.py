"""sb_kernels.multistep_neuron: the one-launch IF/LIF kernel against sb_neurons.multistep_neuron_forward.

Identities: on float32 input the kernel's spikes and ``v_last`` equal the float32 reference exactly
(same operations, same order, no fused multiply-add); its input gradient (surrogate backward with the
state recomputed in registers) equals autograd through the reference within float32 rounding, and the
float64 reference's wherever the float64 spikes agree. Half-precision input runs in float32 inside: it
equals the reference on the upcast input. The property runs interpreted (CPU) and compiled
(``device="cuda"``) with the same identities: the compiled kernels are built without fp fusion, and
PyTorch's CUDA reference runs each product and sum as its own correctly rounded kernel.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_testing import CUDA, DEVICES, rel_err, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import multistep_neuron
from sb_kernels import neuron as kn
from sb_neurons import ATan, Sigmoid

CONFIGS = st.fixed_dictionaries(
    {
        "decay": st.sampled_from([1.0, 0.5, 0.9]),
        "reset": st.sampled_from(["soft", "hard"]),
        "v_reset": st.sampled_from([0.0, -0.25]),
        "signed": st.booleans(),
        "rounding": st.booleans(),
        "surrogate": st.sampled_from(["atan", "sigmoid"]),
        "surrogate_alpha": st.sampled_from([None, 4.0]),
        "detach_reset": st.booleans(),
    }
)


def run_both(x, v_th, v_init, cfg, grad_out, grad_v=None):
    """(spikes, v_last, grad_x, grad_v_init) from the kernel and from autograd through the reference."""
    results = []
    for backend, dtype in (("triton", x.dtype), ("torch", torch.float32), ("torch", torch.float64)):
        xi = x.detach().to(dtype).requires_grad_()
        vi = v_init.detach().to(dtype).requires_grad_() if isinstance(v_init, torch.Tensor) else v_init
        th = v_th.to(dtype) if isinstance(v_th, torch.Tensor) else v_th
        s, v_last = multistep_neuron(xi, th, vi, backend=backend, **cfg)
        loss = (s.to(dtype) * grad_out.to(dtype)).sum()
        if grad_v is not None:
            loss = loss + (v_last * grad_v.to(dtype)).sum()
        inputs = [xi] + ([vi] if isinstance(vi, torch.Tensor) else [])
        grads = torch.autograd.grad(loss, inputs)
        results.append((s.detach(), v_last.detach(), grads[0], grads[1] if len(grads) > 1 else None))
    return results


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=15)
@given(cfg=CONFIGS, seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 6), neurons=st.integers(1, 150),
       tensor_th=st.booleans(), tensor_init=st.booleans(), with_grad_v=st.booleans())
def test_kernel_equals_reference(device, cfg, seed, steps, neurons, tensor_th, tensor_init, with_grad_v):
    # N is not specialized and BLOCK is fixed: compiles vary only with T and the configuration's flags.
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, neurons, generator=g).to(device)
    v_th = (torch.rand(neurons, generator=g) + 0.3).to(device) if tensor_th else 0.8
    v_init = (torch.randn(neurons, generator=g) * 0.3).to(device) if tensor_init else 0.1
    grad_out = torch.randn(steps, neurons, generator=g).to(device)
    grad_v = torch.randn(neurons, generator=g).to(device) if with_grad_v else None
    (s, v, gx, gv), (s32, v32, gx32, gv32), (s64, v64, gx64, gv64) = run_both(x, v_th, v_init, cfg, grad_out, grad_v)
    assert torch.equal(s, s32) and torch.equal(v, v32)  # bit-exact forward
    assert rel_err(gx, gx32) < 1e-5 or torch.allclose(gx, gx32, rtol=1e-5, atol=1e-6)
    if gv is not None:
        assert torch.allclose(gv, gv32, rtol=1e-5, atol=1e-6)
    if torch.equal(s.double(), s64):
        assert torch.allclose(gx.double(), gx64, rtol=1e-4, atol=1e-5)
        assert torch.allclose(v.double(), v64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [16, 17, 35])
def test_several_register_tiles_of_steps(steps):
    # Steps travel in tiles of kn.CHUNK_STEPS: full, partial and several tiles, forward and backward.
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(steps, 70, generator=g)
    cfg = dict(decay=0.8, reset="soft", signed=True, surrogate="atan")
    (s, v, gx, gv), (s32, v32, gx32, gv32), _ = run_both(x, 0.9, torch.zeros(70), cfg, torch.randn(steps, 70, generator=g))
    assert torch.equal(s, s32) and torch.equal(v, v32)
    assert torch.allclose(gx, gx32, rtol=1e-5, atol=1e-6) and torch.allclose(gv, gv32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_in_float32(dtype):
    torch.manual_seed(0)
    x = torch.randn(5, 2, 40).to(dtype)
    s, v = multistep_neuron(x, 0.7, decay=0.5, backend="triton")
    s_ref, v_ref = multistep_neuron(x.float(), 0.7, decay=0.5, backend="torch")
    assert s.dtype == dtype and v.dtype == dtype
    assert torch.equal(s.float(), s_ref)
    # v_last: the float32 state cast once (one unit in the last place: Triton's interpreter casts to
    # bfloat16 by truncation; compiled kernels round to nearest).
    ulp = v_ref.abs() * torch.finfo(dtype).eps
    assert torch.all((v.float() - v_ref).abs() <= ulp)


@pytest.mark.parametrize("spike_dtype", [torch.float16, torch.bfloat16])
def test_narrow_spikes_hold_the_same_values(spike_dtype):
    x = torch.randn(4, 3, 33, requires_grad=True)
    s, v = multistep_neuron(x, 1.0, signed=True, spike_dtype=spike_dtype, backend="triton")
    wide, _ = multistep_neuron(x, 1.0, signed=True, backend="triton")
    assert s.dtype == spike_dtype and torch.equal(s.float(), wide)
    g = torch.randn_like(s)
    (gx,) = torch.autograd.grad((s * g).sum(), x)
    (gx_wide,) = torch.autograd.grad((wide * g.float()).sum(), x)
    assert torch.allclose(gx, gx_wide, rtol=1e-6, atol=1e-7)


def test_broadcast_threshold_and_instances():
    x = torch.randn(3, 4, 10)
    v_th = torch.rand(4, 1) + 0.5  # one threshold per row, broadcast over the last dimension
    s, v = multistep_neuron(x, v_th, decay=0.9, surrogate=Sigmoid(2.0), backend="triton")
    s_ref, v_ref = multistep_neuron(x, v_th, decay=0.9, surrogate=Sigmoid(2.0), backend="torch")
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    s2, _ = multistep_neuron(x, v_th, surrogate=ATan(3.0), backend="triton")
    assert torch.equal(s2, multistep_neuron(x, v_th, surrogate=ATan(3.0), backend="torch").spikes)


def test_kernel_limits_fall_back_or_refuse():
    x = torch.randn(kn.MAX_STEPS + 1, 8)
    with pytest.raises(ValueError, match="T = 65"):
        multistep_neuron(x, 1.0, backend="triton")
    custom = lambda z: (z >= 0).to(z.dtype)  # noqa: E731
    with pytest.raises(ValueError, match="custom surrogate"):
        multistep_neuron(x[:3], 1.0, surrogate=custom, backend="triton")
    learnable = torch.ones(8, requires_grad=True)
    with pytest.raises(ValueError, match="requires grad"):
        multistep_neuron(x[:3], learnable, backend="triton")
    # auto on CPU (and any kernel limit) runs the reference
    s, _ = multistep_neuron(x[:3], learnable, backend="auto")
    assert s.requires_grad


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        multistep_neuron(torch.randn(2, 4), 1.0, backend="triton")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter meets NaN on purpose
def test_non_finite_input_checked_unless_asked_not_to():
    x = torch.randn(5, 2, 30)
    x[3, 1, 7] = float("nan")
    x[1, 0, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        multistep_neuron(x, 1.0, backend="triton")
    # Unchecked: no error and no host read; every neuron that saw only finite input is exact.
    s, v = multistep_neuron(x, 1.0, decay=0.5, check_finite=False, backend="triton")
    finite = torch.isfinite(x).all(0)
    s_ref, v_ref = multistep_neuron(torch.where(finite, x, 0.0), 1.0, decay=0.5, backend="torch")
    assert torch.equal(s[:, finite], s_ref[:, finite]) and torch.equal(v[finite], v_ref[finite])
    # The unchecked forward is still differentiable, with the checked forward's gradient.
    xf = torch.randn(5, 2, 30, requires_grad=True)
    g = torch.randn(5, 2, 30)
    grads = [torch.autograd.grad((multistep_neuron(xf, 1.0, check_finite=c, backend="triton").spikes * g).sum(), xf)[0]
             for c in (True, False)]
    assert torch.equal(grads[0], grads[1])


def test_unused_outputs_get_no_gradient_work():
    # v_last alone in the loss, spikes alone, and neither: the same gradients as the reference.
    x = torch.randn(6, 40, requires_grad=True)
    s, v = multistep_neuron(x, 0.8, decay=0.7, backend="triton")
    s_ref, v_ref = multistep_neuron(x, 0.8, decay=0.7, backend="torch")
    (gv,) = torch.autograd.grad(v.sum(), x, retain_graph=True)
    (gv_ref,) = torch.autograd.grad(v_ref.sum(), x, retain_graph=True)
    assert torch.allclose(gv, gv_ref, rtol=1e-5, atol=1e-6)
    (gs,) = torch.autograd.grad(s.sum(), x)
    (gs_ref,) = torch.autograd.grad(s_ref.sum(), x)
    assert torch.allclose(gs, gs_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match, error",
    [
        (dict(x_seq=torch.randn(2, 4), v_th=0.0), "v_th", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=-torch.ones(4)), "v_th", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, decay=0.0), "decay", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, reset="zero"), "reset", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, v_reset=float("nan")), "v_reset", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, spike_dtype=torch.int8), "spike_dtype", TypeError),
        (dict(x_seq=torch.randn(2, 4), v_th=torch.ones(3)), "v_th", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=torch.ones(2, 4)), "v_th", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, v_init="0"), "v_init", TypeError),
        (dict(x_seq=torch.randn(0, 4), v_th=1.0), "T >= 1", ValueError),
        (dict(x_seq=torch.tensor([[float("nan")]]), v_th=1.0), "x_seq", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, backend="cupy"), "backend", ValueError),
        (dict(x_seq=torch.randn(2, 4), v_th=1.0, check_finite=1), "check_finite", TypeError),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match, error):
    with pytest.raises(error, match=match):
        multistep_neuron(backend=kwargs.pop("backend", "triton"), **kwargs)


# T = 64 (MAX_STEPS) is marked slow: its kernels, 64 unrolled steps each selecting rows of [64, BLOCK]
# register tiles, compile for more than a minute each on the H100 machine (benchmarks/run_gpu.sh runs
# "gpu and not slow" unless told otherwise).
@pytest.mark.gpu
@pytest.mark.parametrize(
    "steps, neurons, reset, signed",
    [(4, 1 << 20, "soft", False), (4, 1 << 20, "hard", True), (16, 4 << 20, "soft", False), (16, 4 << 20, "hard", True),
     (32, 1 << 20, "soft", False), (32, 1 << 20, "hard", True),
     pytest.param(64, 1000, "soft", False, marks=pytest.mark.slow), pytest.param(64, 1000, "hard", True, marks=pytest.mark.slow)],
)
def test_gpu_full_size(steps, neurons, reset, signed):
    torch.manual_seed(steps)
    cfg = dict(decay=0.5, reset=reset, signed=signed, surrogate="sigmoid", surrogate_alpha=4.0)
    x = torch.randn(steps, neurons, device="cuda") * 0.7
    grad_out = torch.randn(steps, neurons, device="cuda")
    grad_v = torch.randn(neurons, device="cuda")
    (s, v, gx, _), (s32, v32, gx32, _), (s64, v64, gx64, _) = run_both(x, 1.0, 0.0, cfg, grad_out, grad_v)
    assert torch.equal(s, s32) and torch.equal(v, v32)
    assert rel_err(gx, gx32) < 1e-5
    agree = (s.double() == s64).all(0)  # neurons whose float64 spikes agree at every step
    assert float(agree.float().mean()) > 0.99
    assert torch.allclose(gx.double()[:, agree], gx64[:, agree], rtol=1e-4, atol=1e-5)
    half, _ = multistep_neuron(x, 1.0, spike_dtype=torch.float16, backend="triton", **cfg)
    assert torch.equal(half.float(), s)


@pytest.mark.gpu
def test_gpu_launch_configurations_and_unchecked_calls_agree():
    # Every launch configuration the benchmark sweeps gives the same bits; unchecked calls too.
    torch.manual_seed(3)
    x = torch.randn(16, (1 << 20) + 77, device="cuda") * 0.7
    cfg = kn._Config(decay=0.5, reset_hard=False, v_reset=0.0, signed=False, rounding=False, surrogate_id=1,
                     alpha=4.0, detach_reset=False, v_init_value=0.0, v_th_value=1.0, spike_dtype=torch.float16,
                     check_finite=False)
    g = torch.randn(16, x.shape[1], device="cuda", dtype=torch.float16)
    s0, v0 = kn._launch_forward(x, None, None, cfg)
    gx0, _ = kn._launch_backward(x, g, None, None, None, cfg, False)
    for block, warps in ((256, 4), (128, 2), (64, 2)):
        s1, v1 = kn._launch_forward(x, None, None, cfg, block, warps)
        gx1, _ = kn._launch_backward(x, g, None, None, None, cfg, False, block, warps)
        assert torch.equal(s0, s1) and torch.equal(v0, v1) and torch.equal(gx0, gx1)
    checked = multistep_neuron(x, 1.0, decay=0.5, surrogate="sigmoid", surrogate_alpha=4.0, spike_dtype=torch.float16,
                               backend="triton")
    assert torch.equal(checked.spikes, s0)
    x[5, 1234] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        multistep_neuron(x, 1.0, backend="triton")
    assert multistep_neuron(x, 1.0, check_finite=False, backend="triton").spikes.shape == x.shape
