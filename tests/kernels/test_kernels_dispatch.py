"""sb_kernels dispatch rules: ``backend="torch" | "triton" | "auto"`` and the per-device kernel build."""

import pytest
import torch
from kernel_testing import CUDA, triton_interpreter  # noqa: F401  (autouse fixture)

from sb_kernels import BACKENDS, interpreter_enabled, resolve_backend
from sb_kernels.dispatch import LazyKernel, lazy_jit, sm_count

x_cpu = torch.zeros(2)


def test_names_and_unknown_backend():
    assert BACKENDS == ("torch", "triton", "auto")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", x_cpu, op="op")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend(None, x_cpu, op="op")


@pytest.mark.parametrize("value, enabled", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)])
def test_interpreter_flag_is_read_at_each_call(monkeypatch, value, enabled):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreter_enabled() is enabled


def test_cpu_rules(monkeypatch):
    assert resolve_backend("torch", x_cpu, op="op") == "torch"
    assert resolve_backend("auto", x_cpu, op="op") == "torch"  # auto never picks the interpreter
    assert resolve_backend("triton", x_cpu, op="op") == "triton"  # interpreter on (fixture)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="op: backend='triton' on CPU tensors runs only in Triton's interpreter"):
        resolve_backend("triton", x_cpu, op="op")
    assert resolve_backend("auto", x_cpu, op="op") == "torch"


def test_triton_never_falls_back_when_missing(monkeypatch):
    import sb_kernels.dispatch as dispatch

    monkeypatch.setattr(dispatch, "triton_importable", lambda: False)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        resolve_backend("triton", x_cpu, op="op")
    assert resolve_backend("auto", x_cpu, op="op") == "torch"


def test_lazy_kernel_interprets_cpu_launches():
    import triton.language as tl

    @lazy_jit
    def add_one(x_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) + 1, mask=offs < n)

    assert isinstance(add_one, LazyKernel) and add_one.__name__ == "add_one"
    x = torch.arange(5, dtype=torch.float32)
    add_one[(1,)](x, 5, BLOCK=8)
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert add_one._compiled is None  # no compiled build for CPU tensors


@pytest.mark.gpu
def test_cuda_rules():
    x = torch.zeros(2, device="cuda")
    assert resolve_backend("auto", x, op="op") == "triton"
    assert resolve_backend("triton", x, op="op") == "triton"
    assert resolve_backend("torch", x, op="op") == "torch"
    with pytest.raises(RuntimeError, match="needs all tensors on one CUDA device"):
        resolve_backend("triton", x, x_cpu, op="op")
    assert resolve_backend("auto", x, x_cpu, op="op") == "torch"


def test_use_reference_nests_and_leaves_explicit_choices_alone():
    from sb_kernels import use_reference
    from sb_kernels.dispatch import _AUTO_IS_TORCH

    assert not _AUTO_IS_TORCH.get()
    with use_reference():
        with use_reference():
            assert _AUTO_IS_TORCH.get()
        assert _AUTO_IS_TORCH.get()  # the inner block restores the outer one's setting
        assert resolve_backend("triton", x_cpu, op="op") == "triton"  # interpreter on (fixture): as asked
        assert resolve_backend("auto", x_cpu, op="op") == "torch"
    assert not _AUTO_IS_TORCH.get()


@pytest.mark.gpu
def test_use_reference_turns_auto_to_torch_on_cuda():
    from sb_kernels import use_reference

    x = torch.zeros(2, device="cuda")
    assert resolve_backend("auto", x, op="op") == "triton"
    with use_reference():
        assert resolve_backend("auto", x, op="op") == "torch"
        assert resolve_backend("triton", x, op="op") == "triton"
    assert resolve_backend("auto", x, op="op") == "triton"


def test_sm_count_is_the_interpreter_stand_in_on_cpu_and_the_device_count_on_cuda():
    assert sm_count(torch.device("cpu"), 4) == 4
    if CUDA:
        assert sm_count(torch.device("cuda"), 4) == torch.cuda.get_device_properties(0).multi_processor_count
