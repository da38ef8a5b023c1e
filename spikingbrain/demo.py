"""``spikingbrain demo``: spike-code LLM-like activations and report what the spikes cost, then build a
small SpikingBrain model from sb_layers parts, generate text with it, convert it to W8ASpike and print
its Fig. 9-style spike report.

Everything runs on the CPU from built-in defaults in seconds; nothing is downloaded (the tokenizer is
byte-level: UTF-8 bytes are the tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sb_layers import SpikeCoding, SpikingLinear
from sb_neurons import CODEC_NAMES, energy_estimate, get_codec, spike_count, spike_stats

RASTER_CHANNELS = 48
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


def format_layer_checks(checks: Sequence[LayerCheck]) -> str:
    header = f"{'k':>5} {'rel.err vs dense':>17} {'|spike - count|':>16} {'rate':>7} {'spk/ch':>7} {'silent':>7}"
    lines = [header, "-" * len(header)]
    for c in checks:
        lines.append(
            f"{c.k:>5g} {c.relative_error_vs_dense:>17.4f} {c.spike_vs_count_max_abs:>16.2e} "
            f"{c.firing_rate:>7.4f} {c.mean_spikes_per_channel:>7.3f} {c.silent_channel_fraction:>7.2%}"
        )
    return "\n".join(lines)


def format_table(rows: Sequence[DemoRow]) -> str:
    header = (
        f"{'k':>5} {'codec':<24} {'T':>4} {'rate':>7} {'sparsity':>8} {'spk/act':>7} "
        f"{'silent':>7} {'rel.err':>8} {'pJ/MAC':>7} {'vs FP16':>8} {'vs INT8':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.k:>5g} {r.codec:<24} {r.time_steps:>4d} {r.firing_rate:>7.4f} {r.sparsity:>8.2%} "
            f"{r.mean_spikes_per_activation:>7.3f} {r.silent_activation_fraction:>7.2%} {r.relative_error:>8.4f} "
            f"{r.energy_pj_per_mac:>7.4f} {-r.saving_vs_fp16:>+8.1%} {-r.saving_vs_int8:>+8.1%}"
        )
    lines.append(TABLE_T_NOTE)
    return "\n".join(lines)


TABLE_T_NOTE = (
    "T: time steps for the whole tensor (set by its largest |count|); spike_raster.png shows "
    "a few channels of token 0, whose own T can be smaller"
)


def plot_raster(counts: torch.Tensor, path: Path, codec: str = RASTER_CODEC, whole_tensor_steps: int | None = None) -> None:
    """Write :func:`raster_figure` of ``counts`` to ``path`` (PNG)."""
    fig = raster_figure(counts, codec, whole_tensor_steps)  # selects the Agg backend before pyplot loads
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)


def raster_figure(counts: torch.Tensor, codec: str = RASTER_CODEC, whole_tensor_steps: int | None = None):
    """Spike raster of the first channels of one token (``counts``: that token's counts, ``[features]``):
    +1 spikes up-ticks, -1 spikes down-ticks. Returns the matplotlib ``Figure``.

    Three T's differ here, and the title names each: the train drawn is as long as the channels shown
    need; the whole token can need more, and the demo's table gives T for the whole tensor, which the
    largest count of any token sets (pass it as ``whole_tensor_steps``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coder = get_codec(codec)
    train = coder.encode(counts[:RASTER_CHANNELS]).to(torch.float32)  # [T, channels]
    steps, channels = train.shape
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    for sign, color, label in ((1, "tab:red", "+1 spike"), (-1, "tab:blue", "-1 spike")):
        t, c = torch.nonzero(train == sign, as_tuple=True)
        ax.scatter(t.numpy(), c.numpy(), marker="|" if sign > 0 else "_", s=120, color=color, label=label)
    ax.set_xlabel("time step (MSB first)")
    ax.set_ylabel("channel")
    ax.set_xticks(range(steps))
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(-0.5, channels - 0.5)
    title = f"Spike raster, {codec} coding, token 0, channels 0-{channels - 1}\nT = {steps} (the channels shown)"
    title += f"; the whole token needs T = {coder.min_steps(counts)}"
    if whole_tensor_steps is not None:
        title += f", the table's whole tensor T = {whole_tensor_steps}"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)  # outside: never over a spike
    return fig


def plot_count_histogram(x: torch.Tensor, ks: Sequence[float], path: Path) -> None:
    """Histogram of |spike count| per activation for each k (log scale: bursts are rare but long)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k in ks:
        magnitudes = spike_count(x, k).counts.abs().flatten()
        top = int(magnitudes.max())
        hist = torch.bincount(magnitudes.to(torch.int64), minlength=top + 1).to(torch.float64)
        ax.step(range(top + 1), (hist / hist.sum()).numpy(), where="mid", label=f"k = {k:g}")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_yscale("log")
    ax.set_xlabel("|spike count| per activation")
    ax.set_ylabel("fraction of activations")
    ax.set_title("Spike count distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    """SpikingBrain-7B's stack written out from sb_layers parts (no transformers class involved).

    ``model.embeddings``, ``model.layers`` (:class:`sb_layers.HybridBlock` of a
    :class:`sb_layers.GatedLinearAttention` at even layers and a :class:`sb_layers.SlidingWindowAttention`
    at odd layers, each with a :class:`sb_layers.GLUMLP`), ``model.norm``, ``lm_head``: the release's
    module names, so its state dict loads into :class:`SpikingBrainForCausalLM` as is.
    ``forward(ids [B, L]) -> logits [B, L, vocab]`` (a whole sequence, no cache).
    """

    def __init__(self, config) -> None:
        from sb_layers import GLUMLP, GatedLinearAttention, HybridBlock, RMSNorm, SlidingWindowAttention

        super().__init__()
        layers = []
        for index in range(config.num_hidden_layers):
            heads = dict(hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
                         num_kv_heads=config.num_key_value_heads, layer_idx=index)
            if index in config.attn_layers:  # released: the odd layers are sliding-window softmax attention
                mixer = SlidingWindowAttention(**heads, window=config.sliding_window, rope_theta=config.rope_theta, qkv_bias=True,
                                              query_chunk_size=config.swa_query_chunk_size)  # as the model
            else:  # gated linear attention: ReLU feature map, low-rank gate, per-head g_norm
                mixer = GatedLinearAttention(**heads, chunk_size=config.gla_chunk_size, norm_eps=config.norm_eps)
            mlp = GLUMLP(config.hidden_size, config.intermediate_size)
            layers.append(HybridBlock(config.hidden_size, mixer, mlp, config.norm_eps))
        self.model = torch.nn.Module()
        self.model.embeddings = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.model.layers = torch.nn.ModuleList(layers)
        self.model.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from sb_layers import MixerCache

        hidden, cache = self.model.embeddings(ids), MixerCache(len(self.model.layers))
        for layer in self.model.layers:
            hidden = layer(hidden, None, cache)  # each layer's state in its own entry of the cache
        return self.lm_head(self.model.norm(hidden))


@dataclass(frozen=True)
class ModelDemoResult:
    """What :func:`model_demo` measured: parts vs model agreement, training, both generations, spikes."""

    parts_vs_model_max_abs: float
    loss_before: float
    loss_after: float
    generated: str
    generated_w8aspike: str
    cached_equals_uncached: bool
    cache_bytes: int
    top1_agreement: float
    report: object  # sb_layers.SpikingReport


def corpus_batches(tokenizer: ByteTokenizer, length: int = 48, batch: int = 8, count: int = 12, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches of random ``[batch, length]`` windows of the built-in corpus, as byte ids (seeded)."""
    ids = torch.tensor(tokenizer.encode(CORPUS * 2, add_bos=False))
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (count, batch), generator=generator)
    return [torch.stack([ids[s : s + length] for s in row.tolist()]) for row in starts]


def format_spike_report(report, max_count: int = 16) -> str:
    """Fig. 9 as text: the |count| histogram (bars), mean spikes per channel and silent channels, per
    projection and in total, beside the report's SpikingBrain-7B figures."""
    histogram = report.total.count_histogram.double()
    total = float(histogram.sum())
    lines = ["|count|  share of channels"]
    for n in range(min(max_count, len(histogram) - 1) + 1):
        share = float(histogram[n]) / total
        lines.append(f"{n:>7d}  {share:>7.2%} {'#' * round(60 * share)}")
    above = 1.0 - report.total.fraction_of_counts_at_most(max_count)
    lines.append(f"{'>' + str(max_count):>7}  {above:>7.2%} {'#' * round(60 * above)}")
    lines.append("")
    header = f"{'projection':<16} {'spk/ch':>7} {'silent':>7} {'<= 7':>7} {'sparsity':>8} {'T':>3}"
    lines += [header, "-" * len(header)]
    for name, stats in list(report.by_projection.items()) + [("all", report.total)]:
        lines.append(
            f"{name:<16} {stats.mean_spikes_per_channel:>7.3f} {stats.silent_channel_fraction:>7.2%} "
            f"{stats.fraction_of_counts_at_most(7):>7.2%} {stats.sparsity:>8.2%} {stats.time_steps:>3d}"
        )
    from sb_layers.models.spikingbrain.w8aspike import FIG9_MEAN_SPIKES_PER_CHANNEL, FIG9_SILENT_PERCENT, FIG9_WITHIN_7

    lines.append(f"report (SpikingBrain-7B): {FIG9_MEAN_SPIKES_PER_CHANNEL:.2f} spikes per channel, {FIG9_SILENT_PERCENT:.1f}% silent, "
                 f"{FIG9_WITHIN_7:.1%} within [0, 7], ~69% sparsity")
    return "\n".join(lines)


@torch.no_grad()
def _next_token_agreement(a, b, batches: Sequence[torch.Tensor]) -> float:
    same = total = 0
    for ids in batches:
        same += int((a(ids).logits.argmax(-1) == b(ids).logits.argmax(-1)).sum())
        total += ids.numel()
    return same / total


def model_demo(
    prompt: str = "Spiking neurons",
    *,
    out: Path | None = None,
    new_tokens: int = 24,
    seed: int = 0,
    train_steps: int = TRAIN_STEPS,
    verbose: bool = True,
) -> ModelDemoResult:
    """Build a small SpikingBrain model from sb_layers parts, train it briefly on the built-in corpus,
    generate from ``prompt`` (byte-level tokens, cached decoding), convert it to W8ASpike and print the
    Fig. 9-style spike report; writes ``spike_report.png`` to ``out`` when given.

    Args:
        prompt: text to continue (non-empty).
        out: folder for the figure (None: no file).
        new_tokens: tokens to generate (>= 1).
        seed: seeds the weights, the training windows and nothing else (generation is greedy).
        train_steps: AdamW steps on the corpus before generating (0: the random model).
        verbose: print as it goes.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise ValueError(f"new_tokens must be an int >= 1, got {new_tokens!r}")
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
        raise ValueError(f"train_steps must be an int >= 0, got {train_steps!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to intra-op synchronization
    try:
        return _model_demo(prompt, out, new_tokens, seed, train_steps, print if verbose else (lambda *args, **kwargs: None))
    finally:
        torch.set_num_threads(threads)


def _model_demo(prompt: str, out: Path | None, new_tokens: int, seed: int, train_steps: int, say) -> ModelDemoResult:
    from sb_layers.models.spikingbrain import SpikingBrainCache, SpikingBrainForCausalLM, continual_pretrain
    from sb_layers.models.spikingbrain import plot_spike_report, spike_report, to_w8aspike

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
    kinds = ", ".join(type(layer.attn).__name__ for layer in parts.model.layers)
    params = sum(p.numel() for p in model.parameters())
    say(f"\nSpikingBrain from parts: {config.num_hidden_layers} HybridBlocks ({kinds}), hidden {config.hidden_size}, "
        f"window {config.sliding_window}, {params / 1e6:.2f}M parameters, seed {seed}")
    say(f"parts vs SpikingBrainForCausalLM, same weights: max |logit difference| = {parts_diff:.1e}")

    held_out = batches[-1]
    with torch.no_grad():
        before = float(model(held_out, labels=held_out).loss)
    after = before
    if train_steps:
        continual_pretrain(model, batches[:-2], steps=train_steps, lr=5e-3, progress=False)
        with torch.no_grad():
            after = float(model(held_out, labels=held_out).loss)
        say(f"trained {train_steps} AdamW steps on the built-in {len(CORPUS)}-byte corpus: loss {before:.3f} -> {after:.3f}")

    ids = torch.tensor([tokenizer.encode(prompt)])
    common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    cache = SpikingBrainCache(config.num_hidden_layers)
    generated = model.generate(ids, cache=cache, **common)
    uncached = model.generate(ids, use_cache=False, **common)
    text = tokenizer.decode(generated[0, ids.shape[1] :])
    say(f"\nByte-level tokenizer (UTF-8 bytes, vocab {tokenizer.vocab_size}); greedy generation with a SpikingBrainCache:")
    say(f"  {prompt!r} -> {text!r}")
    say(f"  cache after {generated.shape[1]} tokens: {cache.memory_bytes() / 1024:.1f} KiB "
        f"(GLA states + SWA windows of {config.sliding_window}: constant beyond the window); "
        f"without cache: {'identical' if torch.equal(generated, uncached) else 'DIFFERENT'}")

    converted = to_w8aspike(model, batches[:2], progress=False)
    generated_w8 = converted.generate(ids, **common)
    text_w8 = tokenizer.decode(generated_w8[0, ids.shape[1] :])
    agreement = _next_token_agreement(model, converted, batches[-2:])
    say("\nW8ASpike (int8 weights per group of 128, projection inputs as spike counts at k = 3, bitwise bidirectional; "
        "SWA queries spike-coded, keys and values int8 in the cache):")
    say(f"  {prompt!r} -> {text_w8!r}")
    say(f"  next-token agreement with the float model on held-out windows: {agreement:.1%}")
    report = spike_report(converted)
    say("\nSpike report (Fig. 9 style), projection inputs over the calibration windows:")
    say(format_spike_report(report))
    if out is not None:
        import matplotlib.pyplot as plt

        out.mkdir(parents=True, exist_ok=True)
        figure = plot_spike_report(report)  # Fig. 9 layout, the report's 7B figures beside ours
        figure.savefig(out / "spike_report.png", dpi=110)
        plt.close(figure)
        say(f"\nWrote {out / 'spike_report.png'}")
    return ModelDemoResult(
        parts_vs_model_max_abs=parts_diff, loss_before=before, loss_after=after, generated=text,
        generated_w8aspike=text_w8, cached_equals_uncached=bool(torch.equal(generated, uncached)),
        cache_bytes=cache.memory_bytes(), top1_agreement=agreement, report=report,
    )


def run_demo(
    out: Path = Path("spikingbrain-demo"),
    ks: Sequence[float] = (1.0, 3.0, 8.0),
    tokens: int = 256,
    features: int = 1024,
    seed: int = 0,
    prompt: str | None = None,
    new_tokens: int = 24,
    train_steps: int = TRAIN_STEPS,
) -> list[DemoRow]:
    """Print the spike-coding table and a spike-coded layer check; write ``spike_raster.png`` and
    ``count_histogram.png`` to ``out``. With a ``prompt``, then run :func:`model_demo` (small
    SpikingBrain model from parts, generation, W8ASpike, spike report; writes ``spike_report.png``)."""
    if not ks or any(not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0) for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of finite numbers > 0, got {ks!r}")
    x = synthetic_activations(tokens, features, seed)
    print(f"Synthetic activations: {tokens} tokens x {features} features, Student-t(3) with outlier channels, seed {seed}")
    print("Energy model: 45 nm, FP16 MAC 1.5 pJ, INT8 MAC 0.23 pJ, spiking MAC = spikes x 0.03 pJ (add)")
    print("rate/sparsity: per coded channel and step; spk/act, silent and energy: per activation")
    print("(unsigned codecs, binary and bitwise, carry signed counts as an on/off pair of channels)\n")
    rows = spike_code_table(x, ks)
    print(format_table(rows))

    print("\nSpikingLinear (W8ASpike: int8 weights per group of 128, bitwise bidirectional spikes) vs nn.Linear")
    print(format_layer_checks(spiking_layer_check(x, ks, seed=seed)))

    out.mkdir(parents=True, exist_ok=True)
    raster_k = 3.0 if 3.0 in ks else ks[0]
    raster = out / "spike_raster.png"
    histogram = out / "count_histogram.png"
    raster_steps = next(r.time_steps for r in rows if r.k == raster_k and r.codec == RASTER_CODEC)
    plot_raster(spike_count(x[0], raster_k).counts, raster, whole_tensor_steps=raster_steps)
    plot_count_histogram(x, ks, histogram)
    print(f"\nWrote {raster} (k = {raster_k:g}) and {histogram}")
    hf_injection_demo(seed=seed)
    if prompt is not None:
        model_demo(prompt, out=out, new_tokens=new_tokens, seed=seed, train_steps=train_steps)
    return rows


def hf_injection_demo(arch: str = "qwen2", seed: int = 0, k: float = 3.0):
    """Inject spiking into a tiny HuggingFace ``arch`` model built from a config (nothing downloaded),
    print which projections were replaced and its spiking report on random token batches, then unload.

    Returns:
        The :class:`sb_layers.SpikingReport` merged over the batches.
    """
    from sb_adapters import SpikingConfig, inject_spiking, spiking_summary, unload_spiking
    from sb_adapters.report import record_batches
    from sb_adapters.tiny import tiny_batches, tiny_model

    model = tiny_model(arch, seed=seed)
    batches = tiny_batches(2, batch=2, length=16, seed=seed)
    print(f"\nsb_adapters: inject_spiking into a tiny random {type(model).__name__} (built from a config), k = {k:g}")
    inject_spiking(model, SpikingConfig(target_modules="all-linear", coding=SpikeCoding(k=k)))
    print(spiking_summary(model))
    report, _ = record_batches(model, batches)
    print(report)
    unload_spiking(model)
    return report
