"""A W8ASpike SpikingBrain model packed to int8 codes (``pack_int8``) and the byte count ``resident_bytes``.

Identities: the packed model runs the same function as the W8ASpike model it was packed from (to the bit
on the reference path, whose dequantized weights are the same; to float32 scaling on the integer CPU
path, prefill and cached decode alike), holds one byte per weight of its spiking projections and no
float copy of them, and ``resident_bytes`` counts each parameter and buffer storage once (tied weights
too), the same on the meta device as in memory.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sb_kernels import use_reference
from sb_layers import Int8SpikingLinear, SpikingLinear, spiking_layers
from sb_layers.models.spikingbrain import SpikingBrainConfig, SpikingBrainForCausalLM, pack_int8, resident_bytes, to_w8aspike
from sb_layers.models.spikingbrain.w8aspike import w8aspike_config

VOCAB = 97
pytestmark = pytest.mark.usefixtures("single_thread")


def config(**overrides) -> SpikingBrainConfig:
    sizes = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=96, sliding_window=8, gla_chunk_size=4, initializer_range=0.2,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return SpikingBrainConfig(**{**sizes, **overrides})


@pytest.fixture(scope="module")
def w8() -> SpikingBrainForCausalLM:
    torch.manual_seed(0)
    model = to_w8aspike(SpikingBrainForCausalLM(config()).float().eval(), group_size=32)
    with torch.no_grad():
        for layer in spiking_layers(model).values():
            layer.weight_quantizer.scales.mul_(0.8)  # codes past int8, as in the released checkpoint
    return model


@pytest.fixture(scope="module")
def packed(w8) -> SpikingBrainForCausalLM:
    return pack_int8(copy.deepcopy(w8))


def test_every_spiking_projection_is_packed_without_its_float_weight(w8, packed):
    layers = spiking_layers(packed)
    assert layers and all(isinstance(layer, Int8SpikingLinear) for layer in layers.values())
    assert set(layers) == set(spiking_layers(w8))
    assert all(layer.coding.backend == "auto" for layer in layers.values())
    assert packed.config.coding.backend == "auto"
    state = packed.state_dict()
    assert not any(f"{name}.weight" in state for name in layers)
    assert sum(layer.residual_values.numel() for layer in layers.values()) > 0
    for name, layer in layers.items():
        source = spiking_layers(w8)[name]
        base, residual = source.int8_codes()
        assert torch.equal(layer.weight_int8, base)
        assert layer.weight_code_stats() == source.weight_code_stats()
    # The unspiked parts keep their float weights.
    assert isinstance(packed.model.layers[0].mlp.down_proj, nn.Linear)
    assert not isinstance(packed.model.layers[0].mlp.down_proj, SpikingLinear)


def test_packed_model_computes_the_w8aspike_function(w8, packed):
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        released = w8(ids).logits  # backend "torch": the release's fake quantization
        fast = packed(ids).logits  # the integer CPU path
        with use_reference():
            slow = packed(ids).logits
    assert torch.equal(slow, released)
    assert (fast - released).abs().max() <= 1e-4 * released.abs().max()


def test_cached_decode_step_matches(w8, packed):
    ids = torch.randint(3, VOCAB, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        steps = {}
        for name, model in (("w8", w8), ("packed", packed)):
            cache = model(ids[:, :8], use_cache=True).past_key_values
            steps[name] = model(ids[:, 8:], past_key_values=cache, use_cache=True).logits
        whole = packed(ids).logits[:, -1:]
    assert (steps["packed"] - steps["w8"]).abs().max() <= 1e-4 * steps["w8"].abs().max()
    assert (steps["packed"] - whole).abs().max() <= 1e-4 * whole.abs().max()


def test_resident_bytes_counts_int8_codes_and_no_float_weight(w8, packed):
    before, after = resident_bytes(w8), resident_bytes(packed)
    layers = spiking_layers(packed).values()
    codes = sum(layer.out_features * layer.in_features for layer in layers)
    entries = sum(layer.residual_values.numel() for layer in layers)
    assert after["int8"] == codes + entries
    assert after["int32"] == sum(4 * (layer.out_features + 1 + layer.residual_columns.numel()) for layer in layers)
    assert after["float32"] == before["float32"] - 4 * codes
    assert after["total"] == sum(v for k, v in after.items() if k != "total")
    assert after["total"] < before["total"]


def test_resident_bytes_counts_tied_and_meta_tensors():
    linear = nn.Linear(8, 4)
    tied = nn.Sequential(linear, nn.Linear(4, 8))
    tied[1].weight = linear.weight  # the same Parameter twice (as tied embeddings): counted once
    assert resident_bytes(tied) == {"float32": 4 * (32 + 4 + 8), "total": 4 * (32 + 4 + 8)}
    real = SpikingBrainForCausalLM(config(tie_word_embeddings=True))
    meta = SpikingBrainForCausalLM.build(config(tie_word_embeddings=True), device="meta", dtype=torch.float32)
    assert resident_bytes(meta) == resident_bytes(real)
    assert resident_bytes(real)["total"] == 4 * sum(p.numel() for p in real.parameters()) + sum(
        b.numel() * b.element_size() for b in real.buffers())


def test_meta_7b_shape_packs_to_int8():
    """SpikingBrain-7B's shape, on the meta device: the spiking projections become one byte per weight."""
    shape = dict(vocab_size=152064, hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                 intermediate_size=18944)
    model = SpikingBrainForCausalLM.build(w8aspike_config(SpikingBrainConfig(**shape)), device="meta", dtype=torch.bfloat16)
    before = resident_bytes(model)
    codes = sum(layer.out_features * layer.in_features for layer in spiking_layers(model).values())
    after = resident_bytes(pack_int8(model))
    assert after["int8"] == codes
    assert before["bfloat16"] - after["bfloat16"] == 2 * codes
    assert 10e9 < after["total"] < 11e9 < 15e9 < before["total"]  # 10.8 GB against 15.4 GB (docs/performance.md)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: pack_int8(nn.Linear(2, 2)), TypeError, "model"),
        (lambda: pack_int8(SpikingBrainForCausalLM(config())), ValueError, "W8ASpike"),
        (lambda: pack_int8(to_w8aspike(SpikingBrainForCausalLM(config()).float(), group_size=32), backend="gpu"), ValueError, "backend"),
        (lambda: resident_bytes("model"), TypeError, "model"),
    ],
)
def test_bad_inputs_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
