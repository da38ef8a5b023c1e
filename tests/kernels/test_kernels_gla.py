"""sb_kernels.gla_fla: flash-linear-attention's chunk_gla in our [B, H, L, D] layout.

Identity (GPU, with fla installed): ``gla_fla == sb_kernels.gla_recurrent`` (float64 reference) for the
output and the final state, with and without an initial state, and gradients to within the kernel
precision. On CPU the argument checks run (they precede the CUDA requirement).
"""

import pytest
import torch
from kernel_testing import CUDA, rel_err

from sb_kernels import fla_available, gla_fla
from sb_kernels import gla_recurrent


def inputs(batch=1, heads=2, length=8, dk=4, dv=6, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, heads, length, dk, generator=g) for _ in range(2))
    v = torch.randn(batch, heads, length, dv, generator=g)
    gk = torch.nn.functional.logsigmoid(torch.randn(batch, heads, length, dk, generator=g) + 3)  # decays in (0, 1)
    return tuple(t.to(device, dtype) for t in (q, k, v, gk))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(q=torch.randn(2, 8, 4)), r"q must be a 4-d tensor \[B, H, L, D\]"),
        (dict(v=torch.randn(1, 2, 7, 6)), "v must be"),
        (dict(gk=torch.randn(1, 2, 8, 5)), "q, k and gk"),
        (dict(scale=0.0), "scale"),
        (dict(scale=True), "scale"),
        (dict(initial_state=torch.zeros(1, 2, 6, 4)), "initial_state"),
        (dict(q=torch.arange(64).reshape(1, 2, 8, 4)), "q"),
    ],
)
def test_bad_arguments_name_the_argument(change, match):
    q, k, v, gk = inputs()
    kwargs = dict(q=q, k=k, v=v, gk=gk, scale=0.5)
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        gla_fla(**kwargs)


def test_cpu_tensors_are_refused_with_the_alternative():
    q, k, v, gk = inputs()
    with pytest.raises(RuntimeError, match="gla_chunked"):
        gla_fla(q, k, v, gk, 0.5)
    assert isinstance(fla_available(), bool)


@pytest.mark.gpu
@pytest.mark.skipif(not (CUDA and fla_available()), reason="needs flash-linear-attention and CUDA")
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)])
def test_gpu_equals_the_float64_recurrence(with_state, dtype, tol):
    q, k, v, gk = inputs(2, 4, 300, 64, 64, "cuda", torch.float32, seed=3)
    state = torch.randn(2, 4, 64, 64, device="cuda") if with_state else None
    scale = 64**-0.5
    ref_o, ref_state = gla_recurrent(*(t.double() for t in (q, k, v, gk)), scale, None if state is None else state.double())
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    o, final = gla_fla(*leaves, gk.to(dtype), scale, state)
    assert o.dtype == dtype and o.shape == v.shape and final.shape == (2, 4, 64, 64)
    assert rel_err(o, ref_o) < tol and rel_err(final, ref_state) < tol
    # gradients against autograd through the float64 recurrence (short sequence: the loop is slow)
    short = [t[:, :, :40] for t in (q, k, v, gk)]
    ref_leaves = [t.double().requires_grad_() for t in short[:3]]
    g = torch.randn_like(short[2]).double()
    ref_grads = torch.autograd.grad((gla_recurrent(*ref_leaves, short[3].double(), scale)[0] * g).sum(), ref_leaves)
    leaves = [t.to(dtype).contiguous().requires_grad_() for t in short[:3]]
    out, _ = gla_fla(*leaves, short[3].to(dtype), scale, output_final_state=False)
    grads = torch.autograd.grad((out * g.to(dtype)).sum(), leaves)
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) < tol
