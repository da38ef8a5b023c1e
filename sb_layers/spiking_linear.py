"""SpikingLinear: the W8ASpike projection (spike-coded activations, optionally int8 weights).

``y = v_th * (W_q counts) + b`` with ``counts, v_th = spike_count(x, k)`` per token row (report Eq. 22)
and ``W_q`` the weight, or its symmetric int8 fake quantization (the release's layout: per output
channel, or per group of 128 input features, with a ``weight_quantizer.scales`` buffer of shape
``(out, in / group, 1)`` and ``W_q = round(W / scale) * scale``, every code kept as the release computes it,
none clamped: see :class:`WeightQuantizer`).

Two forms of the same function:

- ``mode="count"``: one step with integer counts, what GPUs run: ``F.linear(v_th * counts, W_q, b)``.
- ``mode="spike"``: the counts expanded into a spike train with a codec and accumulated event by event,
  ``v_th * sum_t w_t (W_q s_t) + b`` (:func:`sb_neurons.spike_train_matmul`). Any codec works: an
  unsigned one (``binary``, ``bitwise``) carries each signed count as an on/off pair of trains (positive
  part, negative part), as event-driven hardware does with two channels.

Identity: both modes agree to float rounding (exactly in integer arithmetic before the ``v_th`` scale).
Gradients are straight-through in both modes (rounding skipped, ``v_th`` constant; the spike form
takes its gradient from the count form), so quantization-aware fine-tuning works.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sb_kernels.dispatch import needs_grad, reference_forced
from sb_kernels.w8aspike.residual import ResidualCodes, code_statistics, split_weight_codes
from sb_neurons import SpikeStats, get_codec, resolve_clamp, spike_count, spike_train_matmul
from sb_neurons.stats import CountTally
from sb_neurons.validation import check_int, check_positive
from sb_neurons.spike import ClampSpec, compute_dtype

Backend = Literal["torch", "triton", "auto"]
Mode = Literal["count", "spike"]

WEIGHT_SCALE_MIN = 1e-5

# The signed codec with the same steps and spikes per |count| as an unsigned codec's on/off pair.
_SIGNED_SIBLING = {"binary": "ternary", "bitwise": "bitwise_bidirectional"}


@dataclass(frozen=True)
class SpikeCoding:
    """How a layer spike-codes its projection inputs (plain values, JSON-friendly).

    Attributes:
        k: ``k > 0`` of the adaptive threshold ``mean|x| / k`` (3.0 as released).
        clamp: ``None`` (counts unbounded), a signed bit width, or a ``(low, high)`` range.
        codec: codec of the ``"spike"`` mode, one of :data:`sb_neurons.CODEC_NAMES`.
        mode: ``"count"`` (single step) or ``"spike"`` (expanded train).
        weight_bits: ``None`` (float weights) or the bit width of symmetric weight quantization (2..8).
        group_size: input features per weight scale; ``None`` for one scale per output channel.
        backend: ``"torch"``, ``"triton"`` or ``"auto"`` (Triton on CUDA when available, the integer CPU
            path of ``sb_kernels.w8aspike_linear_cpu`` on CPU tensors; :func:`resolve_linear_backend`).
        weight_clip: ``False`` (the release's rule): every weight code ``round(w / scale)`` is kept, codes
            past int8 included; ``True``: codes are clamped to ``[-qmax, qmax]``, which clip-ratio scales
            (``sb_adapters.calibrate``) rely on.
    """

    k: float = 3.0
    clamp: ClampSpec = None
    codec: str = "bitwise_bidirectional"
    mode: Mode = "count"
    weight_bits: int | None = None
    group_size: int | None = 128
    backend: Backend = "torch"
    weight_clip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.clamp, list):
            object.__setattr__(self, "clamp", tuple(self.clamp))  # JSON has no tuples
        check_positive(self.k, "k")
        resolve_clamp(self.clamp)
        get_codec(self.codec)
        if self.mode not in ("count", "spike"):
            raise ValueError(f"mode must be 'count' or 'spike', got {self.mode!r}")
        if self.weight_bits is not None:
            check_int(self.weight_bits, "weight_bits (None: float weights)", minimum=2, maximum=8)
        if self.group_size is not None:
            check_int(self.group_size, "group_size (None: one scale per output channel)", minimum=1)
        if not isinstance(self.weight_clip, bool):
            raise TypeError(f"weight_clip must be a bool, got {self.weight_clip!r}")
        if self.backend not in ("torch", "triton", "auto"):
            raise ValueError(f"backend must be 'torch', 'triton' or 'auto', got {self.backend!r}")
        if self.backend == "triton" and (self.mode != "count" or self.weight_bits is None):
            raise ValueError(
                "backend='triton' runs the count form with int8 weights: it needs mode='count' and weight_bits set, "
                f"got mode={self.mode!r}, weight_bits={self.weight_bits!r}"
            )

    def to_dict(self) -> dict:
        """Plain JSON-friendly values (a ``clamp`` range becomes a list)."""
        data = asdict(self)
        if isinstance(data["clamp"], tuple):
            data["clamp"] = list(data["clamp"])
        return data

    @classmethod
    def from_dict(cls, data: dict, base: SpikeCoding | None = None) -> SpikeCoding:
        """A coding from a dict of its fields; fields the dict leaves out keep ``base``'s values (the
        defaults when ``base`` is None), so a partial dict updates a coding. Unknown keys raise ``ValueError``."""
        if isinstance(data, SpikeCoding):
            return data
        if not isinstance(data, dict):
            raise TypeError(f"coding must be a SpikeCoding or a dict of its fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SpikeCoding fields: {unknown}; known fields: {sorted(known)}")
        return replace(base, **data) if base is not None else cls(**data)



def coding_with(coding: SpikeCoding | dict | None, updates: dict | None = None, *, label: str | None = None) -> SpikeCoding:
    """``coding`` (a :class:`SpikeCoding`, a dict of its fields, or None for the defaults) with the fields of
    ``updates`` set: how a config's ``coding`` dict or flat keywords update its coding. With ``label``, a bad
    update raises its ``TypeError`` / ``ValueError`` prefixed by it (``"coding.k: k must be ..."``)."""
    base = SpikeCoding() if coding is None else coding
    if isinstance(base, dict):
        base = SpikeCoding.from_dict(base)
    if not isinstance(base, SpikeCoding):
        raise TypeError(f"coding must be a SpikeCoding or a dict of its fields, got {type(base).__name__}")
    if not updates:
        return base
    try:
        return SpikeCoding.from_dict(dict(updates), base=base)
    except (TypeError, ValueError) as exc:
        if label is None:
            raise
        raise type(exc)(f"{label}: {exc}") from exc

class WeightQuantizer(nn.Module):
    """Symmetric per-group weight quantization with the release's rule: codes ``round(w / scale)``.

    Holds the ``scales`` buffer ``(out_features, in_features / group_size, 1)`` (float32) of the release's
    W8ASpike checkpoints; ``group_size=None`` gives one scale per output channel (shape ``(out, 1, 1)``).
    :meth:`calibrate` sets ``scale = max|w_group| / qmax`` (``qmax = 2^(bits-1) - 1``, at least 1e-5 so
    that an all-zero group stays zero instead of dividing by zero).

    Codes: ``round(w / scale)`` (half to even), in float32 (float64 for float64 weights). What the release
    does: it keeps every code, with no clamp, and its scales are not ``max|w| / 127``: in the published
    checkpoint about 1% of the codes lie past ``[-127, 127]``. So do we (``clip=False``, the default):
    :meth:`int8_codes` carries those codes exactly as int8 base codes plus a sparse residual
    (:class:`sb_kernels.ResidualCodes`). ``clip=True`` clamps codes to ``[-qmax, qmax]`` instead (scales
    chosen below ``max|w| / qmax`` on purpose, as clip-ratio calibration does). With scales from
    :meth:`calibrate` no code passes ``qmax`` and both rules agree.

    Identity: ``|fake_quantize(w) - w| <= scale / 2`` elementwise without clipping, and with scales from
    :meth:`calibrate` every group's largest ``|w|`` maps to exactly ``qmax``.
    """

    def __init__(
        self, out_features: int, in_features: int, bits: int = 8, group_size: int | None = 128, clip: bool = False
    ) -> None:
        super().__init__()
        check_int(out_features, "out_features", minimum=1)
        check_int(in_features, "in_features", minimum=1)
        if check_int(bits, "bits", minimum=2) > 8:
            raise ValueError(f"bits must be in [2, 8] (int8 storage), got {bits}")
        group = in_features if group_size is None else check_int(group_size, "group_size", minimum=1)
        if in_features % group:
            raise ValueError(f"group_size={group_size} must divide in_features={in_features}")
        if not isinstance(clip, bool):
            raise TypeError(f"clip must be a bool, got {clip!r}")
        self.bits = bits
        self.group_size = group
        self.qmax = 2 ** (bits - 1) - 1
        self.clip = clip
        self.register_buffer("scales", torch.ones(out_features, in_features // group, 1, dtype=torch.float32))

    def _grouped(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.shape != (self.scales.shape[0], self.scales.shape[1] * self.group_size):
            expected = (self.scales.shape[0], self.scales.shape[1] * self.group_size)
            raise ValueError(f"weight must have shape (out, in) = {expected}, got {tuple(weight.shape)}")
        out_features, in_features = weight.shape
        return weight.to(compute_dtype(weight.dtype)).reshape(out_features, in_features // self.group_size, self.group_size)

    @torch.no_grad()
    def calibrate(self, weight: torch.Tensor) -> None:
        """Set the scales from ``weight`` ``(out, in)``: ``max|w_group| / qmax``, at least 1e-5."""
        amax = self._grouped(weight.detach()).abs().amax(dim=-1, keepdim=True)
        self.scales.copy_((amax / self.qmax).clamp_min(WEIGHT_SCALE_MIN))

    def _rounded(self, grouped: torch.Tensor) -> torch.Tensor:
        codes = torch.round(grouped / self.scales.to(grouped.dtype))
        return codes.clamp(-self.qmax, self.qmax) if self.clip else codes

    def quantize(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer codes ``round(w / scale)`` (clamped to ``[-qmax, qmax]`` only with ``clip``), int32
        ``(out, in)``. Raises ``OverflowError`` for a code past int32 (a scale far too small for its weights)."""
        codes = self._rounded(self._grouped(weight.detach()))
        if codes.numel() and not bool(codes.abs().max() < 2**31):
            raise OverflowError("a weight code round(w / scale) is not finite or leaves int32: check the scales")
        return codes.reshape(weight.shape).to(torch.int32)

    def int8_codes(self, weight: torch.Tensor) -> tuple[torch.Tensor, ResidualCodes | None]:
        """The codes of :meth:`quantize` as int8 base codes ``(out, in)`` and the sparse residual of those
        past int8 (None when every code fits): ``base + residual.dense() == quantize(weight)``."""
        return split_weight_codes(self.quantize(weight))

    def fake_quantize(self, weight: torch.Tensor) -> torch.Tensor:
        """``round(w / scale) * scale`` in ``weight.dtype`` with a straight-through gradient."""
        grouped = self._grouped(weight.detach())
        q = (self._rounded(grouped) * self.scales.to(grouped.dtype)).reshape(weight.shape).to(weight.dtype)
        return weight + (q - weight).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, group_size={self.group_size}, clip={self.clip}"


def _needs_grad(x: torch.Tensor, layer: nn.Linear) -> bool:
    # An Int8SpikingLinear has no float weight: its codes are buffers, nothing of it learns but the bias.
    return needs_grad(x, getattr(layer, "weight", None), layer.bias)


def resolve_linear_backend(coding: SpikeCoding, x: torch.Tensor, layer: SpikingLinear) -> str:
    """The backend one forward of the :class:`SpikingLinear` ``layer`` on ``x`` runs: ``"torch"``, ``"triton"``
    or ``"cpu"`` (:func:`sb_kernels.resolve_backend` is a kernel op's choice).

    ``"torch"`` always runs PyTorch. ``"triton"`` always runs ``sb_kernels.w8aspike_linear`` with its
    Triton backend (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``) and raises ``RuntimeError``
    when the kernel cannot run on these tensors, or a gradient is needed (the kernel is
    forward-only): it never falls back. ``"auto"`` runs the kernel only where it computes the same
    function and applies: count mode, int8 weights, a float16/bfloat16/float32 CUDA input whose width and
    group size are multiples of 32, and no gradient needed; on the CPU the integer path
    ``sb_kernels.w8aspike_linear_cpu`` (``"cpu"``: int8 products exact, ``torch._int_mm`` where it runs)
    under the same conditions (any width and group size, float64 input too), except inside
    :func:`sb_kernels.use_reference`; PyTorch everywhere else. ``"torch"`` forces the PyTorch path
    (for an :class:`Int8SpikingLinear`: the release's fake quantization, its weight dequantized per call).

    Non-finite input: the PyTorch path raises ``ValueError``; the kernel path reads nothing back to the
    host (so a decode step can be captured in a CUDA graph) and returns a NaN output row for each row of
    ``x`` holding NaN or Inf, as a float matmul does (``sb_kernels.w8aspike_linear``, ``check=False``).
    """
    if not isinstance(coding, SpikeCoding):
        raise TypeError(f"coding must be a SpikeCoding, got {type(coding).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(layer, SpikingLinear):
        raise TypeError(f"layer must be a SpikingLinear, got {type(layer).__name__}")
    if coding.backend == "torch":
        return "torch"
    if coding.backend == "triton":
        if _needs_grad(x, layer):
            raise RuntimeError(
                "backend='triton' runs a forward-only kernel, but a gradient is needed here; "
                "use backend='torch' (or 'auto') for training, or run under torch.no_grad()"
            )
        return "triton"
    quantizer = layer.weight_quantizer
    if (
        coding.mode == "count"
        and quantizer is not None
        and x.device.type == "cpu"
        and quantizer.scales.device.type == "cpu"
        and x.is_floating_point()
        and not _needs_grad(x, layer)
        and not reference_forced()
    ):
        return "cpu"
    usable = (
        coding.mode == "count"
        and quantizer is not None
        and x.is_cuda
        and x.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and layer.in_features % 32 == 0
        and quantizer.group_size % 32 == 0
        and not _needs_grad(x, layer)
    )
    return "triton" if usable else "torch"


class RecordedCounts:
    """A layer's recorded statistics, summarized on first read (:meth:`SpikingLinear.take_recorded`)."""

    def __init__(self, stats: SpikeStats | None, tally: CountTally | None) -> None:
        self._stats, self._tally = stats, tally

    def stats(self) -> SpikeStats | None:
        """The :class:`sb_neurons.SpikeStats` recorded, None when nothing was."""
        if self._tally is not None:
            recorded = self._tally.stats()
            self._stats = recorded if self._stats is None else self._stats.merge(recorded)
            self._tally = None
        return self._stats


class SpikingLinear(nn.Linear):
    """Drop-in ``nn.Linear`` whose input is spike-coded per token (W8ASpike).

    Same ``weight`` ``(out, in)`` and ``bias`` ``(out,)`` as ``nn.Linear``, so state dicts load
    unchanged; with weight quantization a ``weight_quantizer.scales`` buffer is added (the release's
    W8ASpike layout). Loading a state dict without scales (an ``nn.Linear``'s) into a quantized layer
    calibrates the scales from the loaded weight; a state dict with scales (a W8ASpike checkpoint)
    loads them as they are.

    Backends (``coding.backend``): see :func:`resolve_linear_backend`. The Triton kernel computes the count form
    with the int8 weights ``round(W / scale)`` and the same scales, and is forward-only.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: learn an additive bias (as ``nn.Linear``).
        coding: :class:`SpikeCoding` options (k, clamp, codec, mode, weight_bits, group_size, backend).
        record_stats: accumulate :class:`sb_neurons.SpikeStats` of the input counts in ``spike_stats``
            (per activation: an unsigned codec's on/off pair counts as one channel, with the spikes of
            both trains, which equals the statistics of the signed sibling codec).
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shapes: ``[..., in_features] -> [..., out_features]``, output in the input's dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        coding: SpikeCoding | None = None,
        record_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.coding = SpikeCoding() if coding is None else coding
        if not isinstance(self.coding, SpikeCoding):
            raise TypeError(f"coding must be a SpikeCoding, got {type(self.coding).__name__}")
        self.record_stats = bool(record_stats)
        self._stats: SpikeStats | None = None  # what was recorded and summarized
        self._tally: CountTally | None = None  # calls recorded since, summarized when read
        self.weight_quantizer: WeightQuantizer | None = None
        self._attach_weight_quantizer()
        self.register_load_state_dict_post_hook(SpikingLinear._calibrate_missing_scales)

    def _attach_weight_quantizer(self) -> None:
        if self.coding.weight_bits is None:
            self.weight_quantizer = None
            return
        coding = self.coding
        quantizer = WeightQuantizer(self.out_features, self.in_features, coding.weight_bits, coding.group_size, coding.weight_clip)
        self.weight_quantizer = quantizer.to(self.weight.device)
        if self.weight.device.type != "meta":
            self.weight_quantizer.calibrate(self.weight_out_in())

    @classmethod
    def from_linear(cls, linear: nn.Linear, coding: SpikeCoding | None = None, record_stats: bool = False) -> SpikingLinear:
        """A SpikingLinear sharing ``linear``'s weight and bias Parameters (no copy).

        Weight scales, if asked for, are calibrated from the shared weight.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        module = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            coding=coding, record_stats=record_stats, device="meta",
        )
        module.weight = linear.weight
        module.bias = linear.bias
        module._attach_weight_quantizer()
        return module

    @torch.no_grad()
    def calibrate_weight_scales(self) -> None:
        """Recompute ``weight_quantizer.scales`` from the current weight (``max|w_group| / qmax``).

        Call it after changing the weight outside :meth:`load_state_dict` (for example after each
        optimizer step of quantization-aware fine-tuning, if the scales should follow the weights).
        Raises ``RuntimeError`` when the layer has no weight quantization.
        """
        if self.weight_quantizer is None:
            raise RuntimeError("this SpikingLinear has no weight quantization (SpikeCoding.weight_bits is None)")
        self.weight_quantizer.calibrate(self.weight_out_in())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Remember where this layer's scales live so that the post-load hook can tell a float checkpoint
        # (no scales: an nn.Linear's) from a W8ASpike one.
        self._scales_key = prefix + "weight_quantizer.scales"
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    @staticmethod
    def _calibrate_missing_scales(module: SpikingLinear, incompatible_keys) -> None:
        # A float checkpoint carries no scales: derive them from the weight it just loaded, so that it
        # loads strictly into a quantized layer and the scales match the loaded weight.
        key = getattr(module, "_scales_key", None)
        if module.weight_quantizer is not None and key in incompatible_keys.missing_keys:
            incompatible_keys.missing_keys.remove(key)
            module.calibrate_weight_scales()

    def weight_out_in(self) -> torch.Tensor:
        """The weight as ``(out_features, in_features)``; subclasses storing it transposed override this."""
        return self.weight

    def effective_weight(self) -> torch.Tensor:
        """The ``(out, in)`` weight the projection uses: fake-quantized when weight quantization is on."""
        if self.weight_quantizer is None:
            return self.weight_out_in()
        return self.weight_quantizer.fake_quantize(self.weight_out_in())

    def int8_codes(self) -> tuple[torch.Tensor, ResidualCodes | None]:
        """The weight codes ``round(W / scale)`` the Triton backend multiplies, kept between calls: int8 base
        codes ``(out, in)`` and the sparse residual of the codes past int8 (None when all fit).

        Quantizing the weight costs a pass over it, as much as a decode step's GEMM, so the result is kept
        (1 byte per weight, 5 per residual entry) and recomputed only when the weight or the scales
        change: replaced, moved, or updated in place (their version counters tell). Raises
        ``RuntimeError`` without weight quantization.
        """
        if self.weight_quantizer is None:
            raise RuntimeError("this SpikingLinear has no weight quantization (SpikeCoding.weight_bits is None)")
        weight, scales = self.weight_out_in(), self.weight_quantizer.scales
        try:
            key = (weight.data_ptr(), weight._version, weight.device, scales.data_ptr(), scales._version, self.weight_quantizer.clip)
        except RuntimeError:  # inference tensors have no version counter: do not keep anything
            return self.weight_quantizer.int8_codes(weight)
        cached = getattr(self, "_int8_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.weight_quantizer.int8_codes(weight))
            self._int8_cache = cached
        return cached[1]

    def weight_code_stats(self) -> tuple[int, int]:
        """``(codes past int8, largest |code|)`` of the weight codes (see :meth:`int8_codes`); kept codes
        are read, else the codes are computed and dropped (no int8 copy of the weight is kept for this)."""
        if self.weight_quantizer is None:
            raise RuntimeError("this SpikingLinear has no weight quantization (SpikeCoding.weight_bits is None)")
        cached = getattr(self, "_int8_cache", None)
        if cached is not None and cached[0][0] == self.weight_out_in().data_ptr():
            return code_statistics(*self.int8_codes())
        codes = self.weight_quantizer.quantize(self.weight_out_in()).abs()
        return int((codes > 127).sum()), int(codes.max()) if codes.numel() else 0

    @property
    def spike_stats(self) -> SpikeStats | None:
        """:class:`sb_neurons.SpikeStats` of the input counts recorded (``record_stats``), None before any."""
        if self._tally is not None:
            self._stats, self._tally = RecordedCounts(self._stats, self._tally).stats(), None
        return self._stats

    @spike_stats.setter
    def spike_stats(self, value: SpikeStats | None) -> None:
        if value is not None and not isinstance(value, SpikeStats):
            raise TypeError(f"spike_stats must be a SpikeStats or None, got {type(value).__name__}")
        self._stats, self._tally = value, None

    def reset_spike_stats(self) -> None:
        self.spike_stats = None

    def take_recorded(self) -> RecordedCounts:
        """What was recorded so far, as a :class:`RecordedCounts` read later (summarizing counts costs more
        than recording them: a recorder reads only when asked), and a fresh start for this layer."""
        taken = RecordedCounts(self._stats, self._tally)
        self._stats, self._tally = None, None
        return taken

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension must be in_features={self.in_features}, got shape {tuple(x.shape)}")
        coding = self.coding
        backend = resolve_linear_backend(coding, x, self)
        if backend == "triton":
            return self._forward_triton(x)
        if backend == "cpu":
            return self._forward_cpu(x)
        counts, v_th = spike_count(x, coding.k, -1, coding.clamp)
        if self.record_stats:
            self._record(counts)
        weight = self.effective_weight()
        dense = F.linear((counts * v_th).to(x.dtype), weight, self.bias)
        if coding.mode == "count":
            return dense
        events = self._event_driven(counts.detach(), weight.detach().to(counts.dtype))
        spiking = (v_th * events).to(x.dtype)
        if self.bias is not None:
            spiking = spiking + self.bias.detach()
        # Value of the event-driven form, gradient of the (equal) count form.
        return dense + (spiking - dense).detach()

    def _forward_triton(self, x: torch.Tensor) -> torch.Tensor:
        from sb_kernels import w8aspike_linear

        if self.record_stats:
            self._record(spike_count(x, self.coding.k, -1, self.coding.clamp).counts)
        q, residual = self.int8_codes()
        bias = None if self.bias is None else self.bias.detach()
        return w8aspike_linear(
            x, q, self.weight_quantizer.scales, bias, k=self.coding.k, clamp=self.coding.clamp, backend="triton",
            residual=residual,
        )

    def _forward_cpu(self, x: torch.Tensor) -> torch.Tensor:
        from sb_kernels import w8aspike_linear_cpu

        if self.record_stats:
            self._record(spike_count(x, self.coding.k, -1, self.coding.clamp).counts)
        q, residual = self.int8_codes()
        bias = None if self.bias is None else self.bias.detach()
        return w8aspike_linear_cpu(x, q, self.weight_quantizer.scales, bias, k=self.coding.k, clamp=self.coding.clamp,
                                   residual=residual)

    def _event_driven(self, counts: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``sum_t w_t (s_t @ W^T)`` over the codec's train of ``counts`` ``[..., in]``: ``counts @ W^T``.

        An unsigned codec (``binary``, ``bitwise``) has no negative spike, so a signed count travels as an
        on/off pair of trains, its positive part and its negative part, whose events add and subtract.
        """
        codec = get_codec(self.coding.codec)
        if codec.signed:
            return spike_train_matmul(codec.encode(counts), weight, codec)
        on = spike_train_matmul(codec.encode(counts.clamp(min=0)), weight, codec)
        off = spike_train_matmul(codec.encode((-counts).clamp(min=0)), weight, codec)
        return on - off

    def _record(self, counts: torch.Tensor) -> None:
        # An on/off pair of an unsigned codec is one activation whose spikes are those of both trains:
        # the same time steps, spikes and |count| histogram as its signed sibling codec's train.
        codec = _SIGNED_SIBLING.get(self.coding.codec, self.coding.codec)
        if self._tally is None or self._tally.reader.name != codec:
            self.spike_stats  # noqa: B018 - summarizes a tally of another codec before a new one starts
            self._tally = CountTally(codec)
        self._tally.add(counts.detach())  # spike_count's own counts: valid by construction

    def extra_repr(self) -> str:
        c = self.coding
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"k={c.k}, mode={c.mode}, codec={c.codec}, clamp={c.clamp}, weight_bits={c.weight_bits}"
            + (", weight_clip=True" if c.weight_clip else "")
        )


def make_linear(in_features: int, out_features: int, bias: bool, coding: SpikeCoding | None, **factory) -> nn.Linear:
    """``nn.Linear`` when ``coding`` is None, else a :class:`SpikingLinear` with that coding."""
    check_int(in_features, "in_features", minimum=1)
    check_int(out_features, "out_features", minimum=1)
    if coding is None:
        return nn.Linear(in_features, out_features, bias=bias, **factory)
    return SpikingLinear(in_features, out_features, bias=bias, coding=coding, **factory)


__all__ = ["SpikeCoding", "SpikingLinear", "WeightQuantizer", "coding_with", "make_linear", "resolve_linear_backend"]
