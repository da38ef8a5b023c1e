"""SpikingBrainForCausalLM (7B inter-layer hybrid) at tiny size: streaming, padding, GLA forms, a dense
reference of the same math written here, generation with and without cache, training hooks, dtypes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainConfig, SpikingBrainForCausalLM
from sb_layers.models.spikingbrain.cache_names import output_cache
from model_testing import tiny_spikingbrain, tiny_spikingbrain_config
from strategies import assert_left_padding_is_invisible

VOCAB = 97
WINDOW = 4


def tiny_config(**overrides) -> SpikingBrainConfig:
    return tiny_spikingbrain_config(**{"vocab_size": VOCAB, "sliding_window": WINDOW, **overrides})


def tiny_model(seed: int = 0, dtype=torch.float64, **overrides) -> SpikingBrainForCausalLM:
    # non-trivial norms and biases, so that the reference checks every parameter's role
    return tiny_spikingbrain(seed=seed, dtype=dtype, perturb=True, **{"vocab_size": VOCAB, "sliding_window": WINDOW, **overrides})


# --- an independent dense reference of SpikingBrain-7B's math (facts section 4) -----------------------


def ref_rms_norm(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def ref_linear(sd, name, x):
    bias = sd.get(name + ".bias")
    return x @ sd[name + ".weight"].T + (0 if bias is None else bias)


def ref_rope(x, positions, theta):
    dim = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=x.dtype) / dim)
    angles = positions[:, None].to(x.dtype) * inv
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    first, second = x[..., : dim // 2], x[..., dim // 2 :]
    return x * cos + torch.cat([-second, first], -1) * sin


def ref_gla(sd, p, x, cfg):
    """Token-by-token GLA with explicit loops over heads: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t."""
    length, heads, kv_heads, d = x.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = torch.relu(ref_linear(sd, p + "q_proj", x)).view(length, heads, d)
    k = torch.relu(ref_linear(sd, p + "k_proj", x)).view(length, kv_heads, d)
    v = ref_linear(sd, p + "v_proj", x).view(length, kv_heads, d)
    gate = ref_linear(sd, p + "gk_proj.1", ref_linear(sd, p + "gk_proj.0", x)).view(length, kv_heads, d)
    log_decay = F.logsigmoid(gate) / cfg.gate_logit_normalizer
    out = torch.zeros(length, heads, d, dtype=x.dtype)
    for h in range(heads):
        g = h // (heads // kv_heads)
        state = torch.zeros(d, d, dtype=x.dtype)
        for t in range(length):
            state = torch.diag(log_decay[t, g].exp()) @ state + torch.outer(k[t, g], v[t, g])
            out[t, h] = (q[t, h] * d**-0.5) @ state
    out = ref_rms_norm(out, sd[p + "g_norm.weight"], cfg.norm_eps)
    return ref_linear(sd, p + "o_proj", out.reshape(length, heads * d))


def ref_swa(sd, p, x, cfg):
    """Softmax attention over keys j with i - window < j <= i, RoPE on q and k, GQA."""
    length, heads, kv_heads, d = x.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    positions = torch.arange(length)
    q = ref_rope(ref_linear(sd, p + "q_proj", x).view(length, heads, d).transpose(0, 1), positions, cfg.rope_theta)
    k = ref_rope(ref_linear(sd, p + "k_proj", x).view(length, kv_heads, d).transpose(0, 1), positions, cfg.rope_theta)
    v = ref_linear(sd, p + "v_proj", x).view(length, kv_heads, d).transpose(0, 1)
    distance = positions[:, None] - positions[None, :]
    allowed = (distance >= 0) & (distance < cfg.sliding_window)
    out = torch.zeros(heads, length, d, dtype=x.dtype)
    for h in range(heads):
        g = h // (heads // kv_heads)
        scores = (q[h] @ k[g].T) / math.sqrt(d)
        out[h] = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v[g]
    return ref_linear(sd, p + "o_proj", out.transpose(0, 1).reshape(length, heads * d))


def reference_logits(model: SpikingBrainForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    cfg, sd = model.config, model.state_dict()
    x = sd["model.embeddings.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        mixer = ref_swa if i % 2 == 1 else ref_gla  # released attn_layers: the odd layers are SWA
        h = x + mixer(sd, p + "attn.", ref_rms_norm(x, sd[p + "attn_norm.weight"], cfg.norm_eps), cfg)
        m = ref_rms_norm(h, sd[p + "mlp_norm.weight"], cfg.norm_eps)
        gated = F.silu(m @ sd[p + "mlp.gate_proj.weight"].T) * (m @ sd[p + "mlp.up_proj.weight"].T)
        x = h + gated @ sd[p + "mlp.down_proj.weight"].T
    return ref_rms_norm(x, sd["model.norm.weight"], cfg.norm_eps) @ sd["lm_head.weight"].T


# --- tests ------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny matmuls (tests/conftest.py)


@pytest.fixture(scope="module")
def model() -> SpikingBrainForCausalLM:
    return tiny_model()


def test_model_equals_independent_dense_reference(model):
    ids = torch.randint(3, VOCAB, (1, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits[0]
    torch.testing.assert_close(logits, reference_logits(model, ids[0]), rtol=1e-10, atol=1e-10)


@given(length=st.integers(WINDOW + 1, 3 * WINDOW), seed=st.integers(0, 2**16))
def test_prefill_equals_token_by_token_decode_beyond_the_window(model, length, seed):
    ids = torch.randint(3, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        prefill = model(ids, use_cache=False).logits
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        steps = [model(ids[:, t : t + 1], cache=cache).logits for t in range(length)]
    torch.testing.assert_close(torch.cat(steps, dim=1), prefill, rtol=1e-10, atol=1e-10)
    assert cache.get_seq_length() == length


def test_prefill_then_chunks_equals_one_call(model):
    ids = torch.randint(3, VOCAB, (2, 14), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(ids).logits
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        parts = [model(ids[:, a:b], cache=cache).logits for a, b in ((0, 5), (5, 6), (6, 14))]
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-10, atol=1e-10)


def test_past_key_values_is_the_caches_other_name(model):
    """transformers renamed the cache keyword (``past_key_values`` -> ``cache``); both must keep working."""
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        new_name, old_name = SpikingBrainCache(model.config.num_hidden_layers), SpikingBrainCache(model.config.num_hidden_layers)
        out = model(ids[:, :6], cache=new_name)
        assert output_cache(out) is new_name
        model(ids[:, :6], past_key_values=old_name)
        both = model(ids[:, 6:], cache=new_name, past_key_values=new_name).logits
        torch.testing.assert_close(model(ids[:, 6:], past_key_values=old_name).logits, both, rtol=1e-10, atol=1e-10)
        with pytest.raises(ValueError, match="different objects"):
            model(ids[:, 6:], cache=new_name, past_key_values=old_name)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_generate_continues_a_cache_given_under_either_name(model, name):
    prompt = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(6))
    greedy = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    cache = SpikingBrainCache(model.config.num_hidden_layers)
    with_cache = model.generate(prompt, **{name: cache}, **greedy)
    assert torch.equal(with_cache, model.generate(prompt, use_cache=False, **greedy))
    # generate() fed its last token back through the given cache: it saw every position but the last.
    assert cache.get_seq_length() == with_cache.shape[1] - 1


@given(lengths=st.lists(st.integers(1, 10), min_size=2, max_size=3), seed=st.integers(0, 2**16))
def test_left_padded_batch_equals_each_sample_alone(model, lengths, seed):
    gen = torch.Generator().manual_seed(seed)
    assert_left_padding_is_invisible(model, [torch.randint(3, VOCAB, (n,), generator=gen) for n in lengths])


@given(
    piece=st.integers(1, 7), keep=st.integers(0, 4), pad=st.integers(0, 3), with_cache=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_prefill_in_pieces_equals_one_piece(model, piece, keep, pad, with_cache, seed):
    """prefill_chunk_size splits the stack's work only: same logits (kept ones), same cache afterwards."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 13), generator=gen)
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :pad] = 0
    nxt = torch.randint(3, VOCAB, (2, 1), generator=gen)
    with torch.no_grad():
        whole = model(ids, attention_mask=mask, use_cache=True)
        pieces = model(
            ids, attention_mask=mask, use_cache=with_cache, prefill_chunk_size=piece, logits_to_keep=keep,
        )
        expected = whole.logits if keep == 0 else whole.logits[:, -keep:]
        torch.testing.assert_close(pieces.logits, expected, rtol=1e-10, atol=1e-10)
        if not with_cache:
            assert output_cache(pieces) is None
            return
        assert output_cache(pieces).get_seq_length() == 13
        step_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        after_whole = model(nxt, attention_mask=step_mask, cache=output_cache(whole)).logits
        after_pieces = model(nxt, attention_mask=step_mask, cache=output_cache(pieces)).logits
    torch.testing.assert_close(after_pieces, after_whole, rtol=1e-10, atol=1e-10)


def test_prefill_pieces_keep_every_layers_hidden_states(model):
    ids = torch.randint(3, VOCAB, (1, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = model(ids, output_hidden_states=True, logits_to_keep=2)
        pieces = model(ids, output_hidden_states=True, logits_to_keep=2, prefill_chunk_size=3)
    assert len(pieces.hidden_states) == len(whole.hidden_states) == model.config.num_hidden_layers + 1
    for got, want in zip(pieces.hidden_states, whole.hidden_states):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pieces.logits, whole.logits, rtol=1e-10, atol=1e-10)


def test_config_prefill_chunk_size_applies_in_eval_only():
    chunked = tiny_model(prefill_chunk_size=4)
    ids = torch.randint(3, VOCAB, (1, 11), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(chunked(ids).logits, tiny_model()(ids).logits, rtol=1e-10, atol=1e-10)
    chunked.train()
    seen = []
    hook = chunked.model.layers[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    chunked(ids)
    hook.remove()
    assert seen == [11]  # training runs the whole sequence at once


@given(block=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_swa_query_blocks_inside_the_model_change_nothing(block, seed):
    ids = torch.randint(3, VOCAB, (2, 15), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(2, 15, dtype=torch.long)
    mask[0, :4] = 0
    blocked, unblocked = tiny_model(swa_query_chunk_size=block), tiny_model(swa_query_chunk_size=None)
    with torch.no_grad():
        got, want = blocked(ids, attention_mask=mask).logits, unblocked(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_filled_windows_decode_like_the_plain_cache(model):
    ids = torch.randint(3, VOCAB, (2, WINDOW + 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        plain = SpikingBrainCache(model.config.num_hidden_layers)
        filled = SpikingBrainCache(model.config.num_hidden_layers)
        model(ids[:, :2], cache=plain)
        model(ids[:, :2], cache=filled)
        filled.fill_windows()
        for t in range(2, ids.shape[1]):
            want = model(ids[:, t : t + 1], cache=plain).logits
            got = model(ids[:, t : t + 1], cache=filled).logits
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert filled.memory_bytes() == plain.memory_bytes()  # both windows are full by now


def test_reordered_cache_after_in_place_decode_steps_continues_each_row(model):
    # Decode steps write the windows in place (ring order); a beam reorder must copy that order and
    # leave the original cache untouched by later steps of the reordered one.
    ids = torch.randint(3, VOCAB, (2, WINDOW + 9), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        model(ids[:, :3], cache=cache)
        for t in range(3, WINDOW + 6):
            model(ids[:, t : t + 1], cache=cache)
        swapped = copy.deepcopy(cache)
        swapped.reorder_cache(torch.tensor([1, 0]))
        kept = copy.deepcopy(cache)
        for t in range(WINDOW + 6, ids.shape[1]):
            want = model(ids[:, t : t + 1], cache=cache).logits
            got = model(ids[[1, 0], t : t + 1], cache=swapped).logits
            torch.testing.assert_close(got, want[[1, 0]], rtol=1e-10, atol=1e-10)
        again = model(ids[:, WINDOW + 6 : WINDOW + 7], cache=kept).logits
    first = model(ids[:, : WINDOW + 7]).logits[:, -1:]
    torch.testing.assert_close(again, first, rtol=1e-10, atol=1e-10)


def test_chunked_gla_equals_recurrent_gla_inside_the_model(model):
    recurrent = tiny_model(attn_mode="recurrent")
    recurrent.load_state_dict(model.state_dict())
    ids = torch.randint(3, VOCAB, (2, 13), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(recurrent(ids).logits, model(ids).logits, rtol=1e-10, atol=1e-10)


def test_generate_with_and_without_cache_is_identical(model):
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in the second row
    common = dict(attention_mask=mask, max_new_tokens=2 * WINDOW + 1, min_new_tokens=2 * WINDOW + 1, pad_token_id=0)
    cached = model.generate(ids, do_sample=False, use_cache=True, **common)
    uncached = model.generate(ids, do_sample=False, use_cache=False, **common)
    assert torch.equal(cached, uncached)
    torch.manual_seed(7)
    sampled_cached = model.generate(ids, do_sample=True, top_k=20, use_cache=True, **common)
    torch.manual_seed(7)
    sampled_uncached = model.generate(ids, do_sample=True, top_k=20, use_cache=False, **common)
    assert torch.equal(sampled_cached, sampled_uncached)
    assert cached.shape == (2, 6 + 2 * WINDOW + 1)


def test_greedy_generate_picks_the_argmax_continuation(model):
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(6))
    # eos_token_id=None: no stop at EOS and, unlike min_new_tokens, no ban on it that would change the argmax
    out = model.generate(ids, do_sample=False, max_new_tokens=4, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        logits = model(out[:, :-1]).logits[0, ids.shape[1] - 1 :]
    assert torch.equal(out[0, ids.shape[1] :], logits.argmax(-1))


def test_cache_memory_stops_growing_after_the_window(model):
    cache = SpikingBrainCache(model.config.num_hidden_layers)
    sizes = []
    with torch.no_grad():
        for t in range(4 * WINDOW):
            model(torch.tensor([[3 + t % 50]]), cache=cache)
            sizes.append(cache.memory_bytes())
    assert sizes[WINDOW - 1 :] == [sizes[WINDOW - 1]] * (3 * WINDOW + 1)
    assert sizes[0] < sizes[WINDOW - 1]


def test_labels_give_the_shifted_cross_entropy(model):
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(8))
    labels = ids.clone()
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected.float())  # transformers' loss runs in float32


def test_position_ids_must_count_real_tokens(model):
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(9))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)  # the HuggingFace convention
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask, position_ids=positions).logits, model(ids, attention_mask=mask).logits)
        with pytest.raises(ValueError, match="position_ids"):
            model(ids, attention_mask=mask, position_ids=torch.arange(6).expand(2, 6))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model(seed=1).train()
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(10))
    model(ids, labels=ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.model.gradient_checkpointing
    model(ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], msg=name)


@pytest.mark.parametrize("variant", ["inter_layer", "intra_layer"])
def test_gradient_checkpointing_continuing_a_cache_gives_the_same_gradients(variant):
    """The recomputation in backward replays each layer from the entry its forward found: a GLA state is
    replaced by the call, a window appended to in place, so each run starts from a copy (select_batch)."""
    model = tiny_model(seed=1, variant=variant, num_sink_tokens=0).train()
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(13))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        cache = SpikingBrainCache(model.config.num_hidden_layers)
        with torch.no_grad():
            model(ids[:, :5], cache=cache, use_cache=True)
        model(ids[:, 5:], labels=ids[:, 5:], cache=cache, use_cache=True).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


@pytest.mark.parametrize("variant", ["inter_layer", "intra_layer"])
def test_beam_search_reorders_every_entry_through_the_cache(variant, monkeypatch):
    """generate(num_beams=...) reorders the cache's rows between steps (transformers calls reorder_cache):
    every entry selects its own rows, and the beams equal those of generating without a cache."""
    model = tiny_model(variant=variant, num_sink_tokens=0)
    reorders = []
    original = SpikingBrainCache.reorder_cache
    monkeypatch.setattr(SpikingBrainCache, "reorder_cache", lambda self, beam_idx: reorders.append(1) or original(self, beam_idx))
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(14))
    common = dict(max_new_tokens=5, min_new_tokens=5, num_beams=3, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, use_cache=True, **common)
    assert reorders, "beam search did not reorder the cache"
    assert torch.equal(with_cache, model.generate(ids, use_cache=False, **common))
    with pytest.raises(TypeError, match="beam_idx"):
        SpikingBrainCache(2).reorder_cache([0, 1])


def test_save_and_load_round_trip(tmp_path, model):
    model.save_pretrained(tmp_path)
    loaded = SpikingBrainForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    ids = torch.randint(3, VOCAB, (1, 8), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    fields = lambda config: {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert fields(loaded.config) == fields(model.config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_and_single_precision_track_float64(model, dtype):
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(12))
    low = SpikingBrainForCausalLM.build(model.config, dtype=dtype).eval()
    low.load_state_dict(model.state_dict())
    assert all(p.dtype == dtype for p in low.parameters())
    with torch.no_grad():
        logits = low(ids).logits
        exact = model(ids).logits
    assert logits.dtype == dtype
    tolerance = {torch.float32: 1e-4, torch.bfloat16: 0.15, torch.float16: 0.03}[dtype]
    assert (logits.double() - exact).abs().max() <= tolerance * exact.abs().max()


def test_full_7b_builds_on_the_meta_device_without_allocating():
    config = SpikingBrainConfig()  # the released 7B
    model = SpikingBrainForCausalLM.build(config, device="meta", dtype=torch.bfloat16)
    params = list(model.parameters())
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in params)
    hidden, kv, inter, vocab = 3584, 512, 18944, 152064
    swa = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden  # q, k, v, o
    gla = swa + hidden * 16 + (16 * kv + kv) + 128  # + low-rank gate, g_norm
    block = 2 * hidden + 3 * hidden * inter
    expected = 2 * vocab * hidden + hidden + 14 * (gla + block) + 14 * (swa + block)
    assert sum(p.numel() for p in params) == expected


def test_build_allocates_directly_on_the_requested_device():
    model = SpikingBrainForCausalLM.build(tiny_config(), device="cpu", dtype=torch.float64)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize(
    "overrides, error",
    [
        (dict(num_key_value_heads=3), ValueError),
        (dict(attn_layers=[7]), ValueError),
        (dict(use_short_conv=True), ValueError),
        (dict(variant="diagonal"), ValueError),
        (dict(num_sink_tokens=4), ValueError),
        (dict(hidden_act="gelu"), ValueError),
        (dict(spiking=True, coding={"k": 0.0}), ValueError),
        (dict(prefill_chunk_size=0), ValueError),
        (dict(swa_query_chunk_size=-1), ValueError),
    ],
)
def test_config_rejects_bad_fields(overrides, error):
    with pytest.raises(error):
        tiny_config(**overrides)


def test_forward_rejects_bad_inputs(model):
    ids = torch.randint(3, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="exactly one"):
        model(None)
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.full((2, 5), 2))
    with pytest.raises(TypeError, match="SpikingBrainCache"):
        model(ids, past_key_values=object())
    with pytest.raises(ValueError, match="prefill_chunk_size"):
        model(ids, prefill_chunk_size=0)
    with pytest.raises(ValueError, match="keep_last"):
        model.model(ids, keep_last=-1)
    with pytest.raises(TypeError, match="SpikingBrainCache"):
        model(ids, cache=object(), prefill_chunk_size=2)
