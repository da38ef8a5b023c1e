"""The demo's computations, returned as data: synthetic activations, the spike-coding table, the spike-coded
layer check, what the raster draws, the sb_adapters injection into a tiny HuggingFace model, and the small
SpikingBrain model built from sb_layers parts (trained, generating, converted to W8ASpike, its spike report).

Nothing here prints or draws: :mod:`spikingbrain.demo.text` turns these results into text and
:mod:`spikingbrain.demo.plots` into figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sb_layers import HybridBlock, MixerCache, RMSNorm, SpikeCoding, SpikingLinear
from sb_neurons import CODEC_NAMES, energy_estimate, get_codec, spike_count, spike_stats
from sb_neurons.validation import check_int

RASTER_CODEC = "bitwise_bidirectional"


def synthetic_activations(tokens: int = 256, features: int = 1024, seed: int = 0) -> torch.Tensor:
    """Reproducible heavy-tailed activations shaped like an LLM projection input, float32 ``[tokens, features]``.

    Student-t (3 degrees of freedom) entries, plus a few outlier channels scaled up 20x: the
    massive-activation channels that make spike counts burst (facts section 3).
    """
    generator = torch.Generator().manual_seed(seed)
    # torch.distributions has no generator argument; draw t(3) as normal / sqrt(chi2(3) / 3) instead.
    normal = torch.randn(tokens, features, generator=generator)
    chi2 = torch.randn(3, tokens, features, generator=generator).pow(2).sum(0)
    x = normal / torch.sqrt(chi2 / 3.0)
    outliers = torch.randperm(features, generator=generator)[: max(1, features // 256)]
    x[:, outliers] *= 20.0
    return x


@dataclass(frozen=True)
class DemoRow:
    k: float
    codec: str
    time_steps: int
    firing_rate: float
    sparsity: float
    mean_spikes_per_activation: float
    silent_activation_fraction: float
    relative_error: float
    energy_pj_per_mac: float
    saving_vs_fp16: float
    saving_vs_int8: float


def codec_counts(counts: torch.Tensor, codec: str) -> torch.Tensor:
    """Counts as the codec can carry them: an unsigned codec (binary, bitwise) has no negative spikes,
    so a signed count becomes an on/off pair of channels (positive part, negative part)."""
    if not get_codec(codec).signed:
        return torch.cat([counts.clamp(min=0), (-counts).clamp(min=0)], dim=-1)
    return counts


def spike_code_table(x: torch.Tensor, ks: Sequence[float]) -> list[DemoRow]:
    """One row per (k, codec): spike statistics, reconstruction error and energy of coding ``x``."""
    rows = []
    for k in ks:
        counts, v_th = spike_count(x, k)
        relative_error = float(torch.linalg.vector_norm(counts * v_th - x) / torch.linalg.vector_norm(x))
        silent_fraction = float((counts == 0).to(torch.float64).mean())  # a zero count never spikes
        for name in CODEC_NAMES:
            # Statistics straight from the counts: the trains of binary/ternary coding are as long as
            # the largest burst, too large to materialize for nothing.
            stats = spike_stats(counts=codec_counts(counts, name), codec=name)
            # Per activation, not per coded channel: an on/off pair is one activation, whose layer
            # input spends one add per spike of either channel.
            spikes_per_activation = stats.total_spikes / counts.numel()
            energy = energy_estimate(spikes_per_activation)
            rows.append(
                DemoRow(
                    k=k,
                    codec=name,
                    time_steps=stats.time_steps,
                    firing_rate=stats.firing_rate,
                    sparsity=stats.sparsity,
                    mean_spikes_per_activation=spikes_per_activation,
                    silent_activation_fraction=silent_fraction,
                    relative_error=relative_error,
                    energy_pj_per_mac=energy.spiking_pj_per_mac,
                    saving_vs_fp16=energy.saving_vs_fp16,
                    saving_vs_int8=energy.saving_vs_int8,
                )
            )
    return rows


@dataclass(frozen=True)
class RasterData:
    """What the spike raster draws: token 0's counts at ``k`` and the table's whole-tensor T there."""

    k: float
    counts: torch.Tensor  # [features], token 0
    whole_tensor_steps: int


def raster_data(x: torch.Tensor, ks: Sequence[float], rows: Sequence[DemoRow]) -> RasterData:
    """Token 0 of ``x`` spike-counted at k = 3 (the first of ``ks`` when 3 is not among them), with the
    time steps the table ``rows`` (:func:`spike_code_table` of ``x``) give :data:`RASTER_CODEC` at that k."""
    k = 3.0 if 3.0 in ks else ks[0]
    steps = next(r.time_steps for r in rows if r.k == k and r.codec == RASTER_CODEC)
    return RasterData(k=k, counts=spike_count(x[0], k).counts, whole_tensor_steps=steps)


@dataclass(frozen=True)
class LayerCheck:
    """A spike-coded projection against its dense twin on the demo's activations."""

    k: float
    relative_error_vs_dense: float
    spike_vs_count_max_abs: float
    firing_rate: float
    mean_spikes_per_channel: float
    silent_channel_fraction: float


def spiking_layer_check(x: torch.Tensor, ks: Sequence[float], out_features: int = 256, seed: int = 0) -> list[LayerCheck]:
    """Run a random projection densely and spike-coded (count and event-driven spike modes, W8ASpike
    int8 weights) on ``x``: agreement with the dense output and the input's spike statistics."""
    torch.manual_seed(seed)
    dense = torch.nn.Linear(x.shape[-1], out_features)
    checks = []
    with torch.no_grad():
        reference = dense(x)
        for k in ks:
            coding = dict(k=k, codec="bitwise_bidirectional", weight_bits=8, group_size=128 if x.shape[-1] % 128 == 0 else None)
            count = SpikingLinear.from_linear(dense, SpikeCoding(mode="count", **coding), record_stats=True)
            spike = SpikingLinear.from_linear(dense, SpikeCoding(mode="spike", **coding))
            y_count, y_spike = count(x), spike(x)
            stats = count.spike_stats
            checks.append(
                LayerCheck(
                    k=k,
                    relative_error_vs_dense=float((y_count - reference).norm() / reference.norm()),
                    spike_vs_count_max_abs=float((y_spike - y_count).abs().max()),
                    firing_rate=stats.firing_rate,
                    mean_spikes_per_channel=stats.mean_spikes_per_channel,
                    silent_channel_fraction=stats.silent_channel_fraction,
                )
            )
    return checks


# --- sb_adapters: spiking injected into a tiny HuggingFace model --------------------------------------


@dataclass(frozen=True)
class HFInjectionResult:
    """What :func:`hf_injection` did: the model's class, ``k``, the injection summary and the spiking report."""

    model_name: str
    k: float
    summary: str  # sb_adapters.spiking_summary while injected
    report: object  # sb_layers.SpikingReport, merged over the batches


def hf_injection(arch: str = "qwen2", seed: int = 0, k: float = 3.0) -> HFInjectionResult:
    """Inject spiking into a tiny HuggingFace ``arch`` model built from a config (nothing downloaded), run
    it on random token batches for its spiking report, then unload."""
    from sb_adapters import SpikingConfig, inject_spiking, spiking_summary, unload_spiking
    from sb_layers import record_spikes
    from sb_adapters.tiny import tiny_batches, tiny_model

    model = tiny_model(arch, seed=seed)
    batches = tiny_batches(2, batch=2, length=16, seed=seed)
    inject_spiking(model, SpikingConfig(target_modules="all-linear", coding=SpikeCoding(k=k)))
    summary = spiking_summary(model)
    report, _ = record_spikes(model, batches)
    unload_spiking(model)
    return HFInjectionResult(model_name=type(model).__name__, k=k, summary=summary, report=report)


# --- a small SpikingBrain model from parts --------------------------------------------------------

TRAIN_STEPS = 60
CORPUS = (
    "Spiking neurons integrate their input and fire when the membrane potential crosses a threshold. "
    "SpikingBrain sets the threshold from the mean magnitude of each token's activations, so every "
    "projection input becomes a small integer count of spikes. Linear attention keeps a state of fixed "
    "size and sliding window attention looks at recent tokens only, so memory stays constant however "
    "long the context grows. Spiking neurons integrate, fire and rest; most channels stay silent. "
)


class ByteTokenizer:
    """Byte-level tokenizer: the UTF-8 bytes of a text are its token ids (0-255); nothing to download.

    Special ids: ``pad_token_id = 256``, ``bos_token_id = 257``, ``eos_token_id = 258``
    (``vocab_size = 259``). Identity: ``decode(encode(text)) == text`` for every string.
    """

    pad_token_id, bos_token_id, eos_token_id = 256, 257, 258
    vocab_size = 259

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return ([self.bos_token_id] if add_bos else []) + list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Bytes back to text; special ids are dropped, invalid UTF-8 becomes U+FFFD."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if any(not 0 <= int(i) < self.vocab_size for i in values):
            raise ValueError(f"ids must lie in [0, {self.vocab_size}), got {values}")
        return bytes(int(i) for i in values if int(i) < 256).decode("utf-8", errors="replace")


def demo_config(vocab_size: int = ByteTokenizer.vocab_size):
    """The demo model: SpikingBrain-7B's layout at small size (4 layers, GLA/SWA alternating, width 128).

    Widths are multiples of 128 so that W8ASpike uses the released weight-group size.
    """
    from sb_layers.models.spikingbrain import SpikingBrainConfig

    return SpikingBrainConfig(
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, sliding_window=32, gla_chunk_size=16, rope_theta=10000.0, max_position_embeddings=4096,
        bos_token_id=ByteTokenizer.bos_token_id, eos_token_id=ByteTokenizer.eos_token_id,
        pad_token_id=ByteTokenizer.pad_token_id, initializer_range=0.05,
    )


class PartsLM(torch.nn.Module):
    """SpikingBrain-7B's stack assembled from sb_layers parts (no transformers class involved).

    ``model.embeddings``, ``model.layers`` (:class:`sb_layers.HybridBlock` of the library's layer builders:
    ``build_mixer(config, index)``, a :class:`sb_layers.GatedLinearAttention` at even layers and a
    :class:`sb_layers.SlidingWindowAttention` at odd layers, and ``build_mlp(config, index)``, a
    :class:`sb_layers.GLUMLP`), ``model.norm``, ``lm_head``: the release's module names, so its state dict
    loads into :class:`SpikingBrainForCausalLM` as is.
    ``forward(ids [B, L]) -> logits [B, L, vocab]`` (a whole sequence, no cache).
    """

    def __init__(self, config) -> None:
        from sb_layers.models.spikingbrain.modeling import build_mixer, build_mlp

        super().__init__()
        layers = [
            HybridBlock(config.hidden_size, build_mixer(config, index), build_mlp(config, index), config.norm_eps)
            for index in range(config.num_hidden_layers)
        ]
        self.model = torch.nn.Module()
        self.model.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = torch.nn.ModuleList(layers)
        self.model.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, cache = self.model.embeddings(ids), MixerCache(len(self.model.layers))
        for layer in self.model.layers:
            hidden = layer(hidden, None, cache)  # each layer's state in its own entry of the cache
        return self.lm_head(self.model.norm(hidden))


@dataclass(frozen=True)
class ModelDemoResult:
    """What :func:`compute_model_demo` measured: parts vs model agreement, training, both generations,
    spikes; then the settings and the model's shape that its text states."""

    parts_vs_model_max_abs: float
    loss_before: float
    loss_after: float
    generated: str
    generated_w8aspike: str
    cached_equals_uncached: bool
    cache_bytes: int
    top1_agreement: float
    report: object  # sb_layers.SpikingReport
    prompt: str
    seed: int
    train_steps: int
    config: object  # the demo_config() the model was built from
    layer_kinds: tuple[str, ...]  # each layer's mixer class
    parameters: int
    generated_length: int  # tokens in the cache after generating: prompt (with BOS) and new tokens


def corpus_batches(tokenizer: ByteTokenizer, length: int = 48, batch: int = 8, count: int = 12, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches of random ``[batch, length]`` windows of the built-in corpus, as byte ids (seeded)."""
    ids = torch.tensor(tokenizer.encode(CORPUS * 2, add_bos=False))
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (count, batch), generator=generator)
    return [torch.stack([ids[s : s + length] for s in row.tolist()]) for row in starts]


@torch.no_grad()
def _next_token_agreement(a, b, batches: Sequence[torch.Tensor]) -> float:
    same = total = 0
    for ids in batches:
        same += int((a(ids).logits.argmax(-1) == b(ids).logits.argmax(-1)).sum())
        total += ids.numel()
    return same / total


def compute_model_demo(
    prompt: str = "Spiking neurons", *, new_tokens: int = 24, seed: int = 0, train_steps: int = TRAIN_STEPS
) -> ModelDemoResult:
    """Build a small SpikingBrain model from sb_layers parts (:class:`PartsLM`; its weights loaded into
    :class:`SpikingBrainForCausalLM`), train it briefly on the built-in corpus, generate from ``prompt``
    (byte-level tokens, cached decoding), convert it to W8ASpike and take its Fig. 9-style spike report.

    Args:
        prompt: text to continue (non-empty).
        new_tokens: tokens to generate (>= 1).
        seed: seeds the weights, the training windows and nothing else (generation is greedy).
        train_steps: AdamW steps on the corpus before generating (0: the random model).
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    check_int(new_tokens, "new_tokens", minimum=1)
    check_int(train_steps, "train_steps", minimum=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to intra-op synchronization
    try:
        return _compute_model_demo(prompt, new_tokens, seed, train_steps)
    finally:
        torch.set_num_threads(threads)


def _compute_model_demo(prompt: str, new_tokens: int, seed: int, train_steps: int) -> ModelDemoResult:
    from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainForCausalLM, continual_pretrain
    from sb_layers import record_spikes
    from sb_layers.models.spikingbrain import to_w8aspike

    tokenizer = ByteTokenizer()
    config = demo_config()

    torch.manual_seed(seed)
    parts = PartsLM(config).eval()
    model = SpikingBrainForCausalLM.build(config).eval()
    model.load_state_dict(parts.state_dict())  # the same names: parts and model share one state dict layout
    batches = corpus_batches(tokenizer, seed=seed)
    probe = batches[0][:2]
    with torch.no_grad():
        parts_diff = float((parts(probe) - model(probe).logits).abs().max())

    held_out = batches[-1]
    with torch.no_grad():
        before = float(model(held_out, labels=held_out).loss)
    after = before
    if train_steps:
        continual_pretrain(model, batches[:-2], steps=train_steps, lr=5e-3, progress=False)
        with torch.no_grad():
            after = float(model(held_out, labels=held_out).loss)

    ids = torch.tensor([tokenizer.encode(prompt)])
    common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    cache = SpikingBrainCache(config.num_hidden_layers)
    generated = model.generate(ids, cache=cache, **common)
    uncached = model.generate(ids, use_cache=False, **common)

    converted = to_w8aspike(model)
    report, _ = record_spikes(converted, batches[:2])  # the release's calibration pass, on two batches
    generated_w8 = converted.generate(ids, **common)
    return ModelDemoResult(
        parts_vs_model_max_abs=parts_diff, loss_before=before, loss_after=after,
        generated=tokenizer.decode(generated[0, ids.shape[1] :]),
        generated_w8aspike=tokenizer.decode(generated_w8[0, ids.shape[1] :]),
        cached_equals_uncached=bool(torch.equal(generated, uncached)), cache_bytes=cache.memory_bytes(),
        top1_agreement=_next_token_agreement(model, converted, batches[-2:]), report=report,
        prompt=prompt, seed=seed, train_steps=train_steps, config=config,
        layer_kinds=tuple(type(layer.attn).__name__ for layer in parts.model.layers),
        parameters=sum(p.numel() for p in model.parameters()), generated_length=generated.shape[1],
    )
