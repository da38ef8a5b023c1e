"""Int8SpikingLinear (int8 codes, no float weight) and the CPU integer path of SpikingLinear.

Identities: a packed layer holds exactly the codes, residual, scales and bias of the SpikingLinear it was
made from, and computes its function: the same output to the bit on the CPU integer path (both call
``w8aspike_linear_cpu`` with the same codes) and on the ``"torch"`` path (the same dequantized weight,
``round(w / s) * s`` of the release); the integer path equals the exact integer form within float32
scaling. ``"auto"`` takes the integer path on CPU tensors when no gradient is needed, and the PyTorch
path inside ``use_reference()``.
"""

import pytest
import torch
from torch import nn

from sb_kernels import use_reference, w8aspike_linear_cpu, w8aspike_linear_reference
from sb_layers import Int8SpikingLinear, SpikeCoding, SpikingLinear, resolve_linear_backend
from sb_kernels.w8aspike.residual import weight_codes

pytestmark = pytest.mark.usefixtures("single_thread")


def quantized_layer(n=24, k=64, group=16, shrink=0.8, bias=True, dtype=torch.float32, backend="auto", seed=0):
    """A weight-quantized SpikingLinear whose scales are shrunk so that some codes lie past int8 (as in the
    released checkpoint), hence a residual."""
    torch.manual_seed(seed)
    layer = SpikingLinear(k, n, bias=bias, coding=SpikeCoding(weight_bits=8, group_size=group, backend=backend), dtype=dtype)
    with torch.no_grad():
        layer.weight_quantizer.scales.mul_(shrink)
    return layer


def test_packed_layer_holds_the_codes_and_no_float_weight():
    layer = quantized_layer()
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    base, residual = layer.int8_codes()
    assert residual is not None and residual.nnz > 0
    got_base, got_residual = packed.int8_codes()
    assert torch.equal(got_base, base)
    assert torch.equal(weight_codes(got_base, got_residual), weight_codes(base, residual))
    assert torch.equal(packed.weight_quantizer.scales, layer.weight_quantizer.scales)
    assert torch.equal(packed.bias, layer.bias) and not packed.bias.requires_grad
    assert not hasattr(packed, "weight")
    assert [name for name, _ in packed.named_parameters()] == ["bias"]
    dtypes = {name: t.dtype for name, t in packed.state_dict().items()}
    assert dtypes["weight_int8"] == torch.int8 and dtypes["residual_values"] == torch.int8
    assert dtypes["weight_quantizer.scales"] == torch.float32
    assert packed.weight_code_stats() == layer.weight_code_stats()
    assert "int8 weights" in repr(packed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_packed_layer_computes_the_source_layers_function(dtype):
    layer = quantized_layer(dtype=dtype)
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    x = torch.randn(3, 5, 64, dtype=dtype) * 2
    with torch.no_grad():
        assert resolve_linear_backend(layer.coding, x, layer) == "cpu"
        assert resolve_linear_backend(packed.coding, x, packed) == "cpu"
        fast = packed(x)
        assert torch.equal(fast, layer(x))  # both: w8aspike_linear_cpu on the same codes
        base, residual = layer.int8_codes()
        assert torch.equal(fast, w8aspike_linear_cpu(x, base, layer.weight_quantizer.scales, layer.bias, residual=residual))
        with use_reference():
            assert resolve_linear_backend(packed.coding, x, packed) == "torch"
            slow = packed(x)
            assert torch.equal(slow, layer(x))  # the release's fake quantization, the same dequantized weight
    reference = w8aspike_linear_reference(x.double(), base, layer.weight_quantizer.scales, layer.bias.double(), residual=residual)
    scale = reference.abs().max()
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-5, torch.bfloat16: 2e-2}[dtype]
    assert (fast.double() - reference).abs().max() <= tolerance * scale
    assert (slow.double() - reference).abs().max() <= tolerance * scale


def test_auto_needs_no_gradient_and_torch_forces_the_reference():
    layer = quantized_layer()
    x = torch.randn(2, 64)
    assert resolve_linear_backend(layer.coding, x, layer) == "torch"  # the weight requires grad
    assert resolve_linear_backend(layer.coding, x.requires_grad_(), Int8SpikingLinear.from_spiking_linear(layer)) == "torch"
    with torch.no_grad():
        torch_layer = quantized_layer(backend="torch")
        assert resolve_linear_backend(torch_layer.coding, x, torch_layer) == "torch"
        spike_mode = SpikingLinear(64, 4, coding=SpikeCoding(weight_bits=8, group_size=16, mode="spike", backend="auto"))
        assert resolve_linear_backend(spike_mode.coding, x, spike_mode) == "torch"
        float_weights = SpikingLinear(64, 4, coding=SpikeCoding(backend="auto"))
        assert resolve_linear_backend(float_weights.coding, x, float_weights) == "torch"
    # Training through a packed layer is refused at the gradient, not silently wrong: only the bias could learn.
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    out = packed(torch.randn(2, 64, requires_grad=True))
    assert out.requires_grad


def test_spike_mode_packed_layer_runs_the_event_driven_form():
    torch.manual_seed(1)
    layer = SpikingLinear(32, 6, coding=SpikeCoding(weight_bits=8, group_size=16, mode="spike", codec="bitwise_bidirectional"))
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert torch.allclose(packed(x), layer(x), rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_takes_the_residual_size():
    layer = quantized_layer(seed=2)
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    fresh = Int8SpikingLinear(64, 24, coding=layer.coding)
    assert fresh.residual_values.numel() == 0
    fresh.load_state_dict(packed.state_dict())
    assert fresh.residual_values.numel() == packed.residual_values.numel() > 0
    x = torch.randn(3, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), packed(x))


def test_module_to_and_meta_packing():
    layer = quantized_layer(bias=False)
    packed = Int8SpikingLinear.from_spiking_linear(layer)
    assert packed.weight_dtype == torch.float32
    assert packed.weight_out_in().dtype == torch.float32
    meta = SpikingLinear(64, 24, bias=False, coding=layer.coding, device="meta")
    packed_meta = Int8SpikingLinear.from_spiking_linear(meta)
    assert packed_meta.weight_int8.is_meta and packed_meta.weight_int8.shape == (24, 64)
    assert packed_meta.residual_values.numel() == 0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: Int8SpikingLinear(8, 4), ValueError, "weight_bits"),
        (lambda: Int8SpikingLinear(8, 4, coding=SpikeCoding()), ValueError, "weight_bits"),
        (lambda: Int8SpikingLinear(8, 4, coding=SpikeCoding(weight_bits=8, group_size=4), dtype=torch.int8), TypeError, "dtype"),
        (lambda: Int8SpikingLinear.from_spiking_linear(nn.Linear(8, 4)), TypeError, "layer"),
        (lambda: Int8SpikingLinear.from_spiking_linear(SpikingLinear(8, 4)), ValueError, "weight quantization"),
        (lambda: Int8SpikingLinear.from_spiking_linear(Int8SpikingLinear.from_spiking_linear(quantized_layer())), TypeError, "already"),
        (lambda: Int8SpikingLinear.from_spiking_linear(quantized_layer()).calibrate_weight_scales(), RuntimeError, "scales"),
        (lambda: Int8SpikingLinear.from_spiking_linear(quantized_layer()).set_residual("codes"), TypeError, "residual"),
        (lambda: Int8SpikingLinear.from_spiking_linear(quantized_layer())(torch.randn(2, 63)), ValueError, "in_features"),
    ],
)
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_set_residual_checks_it_against_the_codes():
    packed = Int8SpikingLinear.from_spiking_linear(quantized_layer())
    _, other = quantized_layer(seed=5).int8_codes()
    with pytest.raises(ValueError, match="residual"):
        packed.set_residual(other)
    packed.set_residual(None)
    assert packed.int8_codes()[1] is None
