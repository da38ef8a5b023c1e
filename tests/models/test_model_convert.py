"""Qwen2 -> SpikingBrain-7B conversion (facts section 6) on a tiny random Qwen2ForCausalLM."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from sb_layers.linear_attention import GatedLinearAttention
from sb_layers.models.spikingbrain import SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.convert import continual_pretrain, convert_qwen2
from sb_layers.models.spikingbrain.qwen2 import qwen2_to_spikingbrain_name

CORPUS = (
    "the spiking neuron integrates its input and fires when the membrane potential crosses the threshold. "
    "a linear attention layer keeps a fixed size state, so memory does not grow with the context. "
    "sliding window attention looks at the most recent tokens only. "
) * 4
ALPHABET = sorted(set(CORPUS))


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


def tiny_qwen2(dtype=torch.float64, tie=False) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(ALPHABET) + 3, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        tie_word_embeddings=tie, initializer_range=0.1,
    )
    return Qwen2ForCausalLM(config).to(dtype).eval()


def test_every_qwen2_weight_is_copied_to_its_place_and_only_gate_params_are_new():
    qwen = tiny_qwen2()
    model = convert_qwen2(qwen, sliding_window=8)
    converted = model.state_dict()
    source = qwen.state_dict()
    for name, tensor in source.items():
        target = converted[qwen2_to_spikingbrain_name(name)]
        assert torch.equal(target, tensor), name
        assert target.data_ptr() != tensor.data_ptr()  # copies: training one leaves the other alone
    mapped = {qwen2_to_spikingbrain_name(n) for n in source}
    new = set(converted) - mapped
    gla_layers = [i for i in range(4) if i % 2 == 0]
    expected_new = {
        f"model.layers.{i}.attn.{p}" for i in gla_layers
        for p in ("gk_proj.0.weight", "gk_proj.1.weight", "gk_proj.1.bias", "g_norm.weight")
    }
    assert new == expected_new
    assert all(isinstance(model.model.layers[i].attn, GatedLinearAttention) for i in gla_layers)
    assert model.model.layers[0].attn.feature_map == "relu"
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert model.dtype == torch.float64


def test_tied_qwen2_head_becomes_an_untied_copy():
    qwen = tiny_qwen2(tie=True)
    model = convert_qwen2(qwen, sliding_window=8)
    assert torch.equal(model.lm_head.weight, qwen.model.embed_tokens.weight)
    assert model.lm_head.weight.data_ptr() != model.model.embeddings.weight.data_ptr()


def test_all_swa_conversion_with_a_wide_window_reproduces_qwen2_exactly():
    # With every layer softmax attention and a window wider than the input, nothing of Qwen2 changed.
    # Tolerance: Qwen2's RMSNorm and rotary tables run in float32 even in a float64 model.
    qwen = tiny_qwen2()
    model = convert_qwen2(qwen, attn_layers=list(range(4)), sliding_window=64)
    ids = torch.randint(0, qwen.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, qwen(ids).logits, rtol=1e-5, atol=1e-5)
        windowed = convert_qwen2(qwen, attn_layers=list(range(4)), sliding_window=4)(ids).logits
    assert not torch.allclose(windowed, qwen(ids).logits, rtol=1e-3, atol=1e-3)  # the window does matter


def test_converted_model_outputs_are_shaped_right_and_generate(tmp_path):
    qwen = tiny_qwen2(dtype=torch.float32)
    qwen.save_pretrained(tmp_path)
    model = SpikingBrainForCausalLM.from_qwen2(str(tmp_path), sliding_window=8)
    ids = torch.randint(0, qwen.config.vocab_size, (3, 10))
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert out.logits.shape == (3, 10, qwen.config.vocab_size) and torch.isfinite(out.loss)
    generated = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert generated.shape == (3, 14) and torch.equal(generated[:, :10], ids)


def test_short_continual_training_on_a_text_corpus_lowers_the_loss():
    encode = {ch: i + 3 for i, ch in enumerate(ALPHABET)}
    tokens = torch.tensor([encode[ch] for ch in CORPUS])
    length = 32
    windows = tokens[: (len(tokens) // length) * length].view(-1, length)
    batches = [windows[i : i + 4] for i in range(0, len(windows) - 4, 4)]
    model = convert_qwen2(tiny_qwen2(dtype=torch.float32), sliding_window=8)
    held_out = windows[-4:]
    with torch.no_grad():
        before = float(model(held_out, labels=held_out).loss)
    losses = continual_pretrain(model, batches, steps=40, lr=3e-3, progress=False)
    with torch.no_grad():
        after = float(model(held_out, labels=held_out).loss)
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert after < 0.8 * before


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: convert_qwen2(torch.nn.Linear(2, 2)), TypeError),
        (lambda: convert_qwen2("/nonexistent/qwen2"), ValueError),
        (lambda: convert_qwen2(tiny_qwen2(), variant="intra_layer"), ValueError),
        (lambda: continual_pretrain(convert_qwen2(tiny_qwen2()), [], steps=1), ValueError),
        (lambda: continual_pretrain(convert_qwen2(tiny_qwen2()), [torch.zeros(1, 4, dtype=torch.long)], steps=0), ValueError),
    ],
)
def test_conversion_rejects_bad_arguments(call, error):
    with pytest.raises(error):
        call()
