"""Int8SpikingLinear: a W8ASpike projection that holds int8 weight codes and no float weight (inference).

Memory: 1 byte per weight, 4 per group scale and 5 per code past int8 (the residual), against 2 (bf16) or
4 (float32) bytes per weight of a :class:`sb_layers.SpikingLinear`. It computes the function of the
SpikingLinear it is packed from (:meth:`Int8SpikingLinear.from_spiking_linear`); a model's projections are
packed by :func:`sb_layers.models.spikingbrain.pack_int8`.
"""

from __future__ import annotations

import torch
from torch import nn

from sb_kernels.w8aspike.residual import ResidualCodes, code_statistics, weight_codes
from sb_neurons.spike import compute_dtype

from .spiking_linear import SpikeCoding, SpikingLinear, WeightQuantizer


class Int8SpikingLinear(SpikingLinear):
    """A W8ASpike projection that holds its weight as int8 codes, with no float copy (inference).

    State: ``weight_int8`` int8 ``(out, in)`` (the codes ``round(W / scale)``, clamped to ``±127``), the
    residual of the codes past int8 (:class:`sb_kernels.ResidualCodes` as three buffers,
    ``residual_row_ptr`` int32 ``(out + 1,)``, ``residual_columns`` int32 ``(nnz,)``, ``residual_values``
    int8 ``(nnz,)``: ``nnz`` is whatever the weights need, and loading a state dict takes its size),
    ``weight_quantizer.scales`` float32 ``(out, in / group, 1)`` and ``bias`` (float, not trained). That is
    1 byte per weight, 4 per group scale and 5 per code past int8, against 2 (bf16) or 4 (float32) for a
    :class:`SpikingLinear`'s float weight (which also keeps an int8 copy once its fast path has run).

    It computes the function of the :class:`SpikingLinear` it was made from (:meth:`from_spiking_linear`):
    the codes are that layer's :meth:`SpikingLinear.int8_codes`, exactly. Paths, as
    :func:`resolve_linear_backend` chooses them: ``"auto"`` runs the integer CPU path on CPU tensors and
    the Triton kernel on CUDA; ``"torch"`` (or ``"auto"`` inside :func:`sb_kernels.use_reference`) runs
    the release's fake quantization, ``F.linear(v_th * counts, (codes * scales), bias)`` with the weight
    dequantized on every call in ``weight_dtype``; ``mode="spike"`` the event-driven form on that weight.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.
        bias: hold a bias (float, loaded, not trained).
        coding: :class:`SpikeCoding` with ``weight_bits`` set (codes of up to 8 bits).
        record_stats: as :class:`SpikingLinear`.
        device: device of the buffers.
        dtype: ``weight_dtype``, the float dtype of the bias and of the dequantized weight of the
            ``"torch"`` path (default: torch's default dtype).

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
        if coding is None or not isinstance(coding, SpikeCoding) or coding.weight_bits is None:
            raise ValueError(f"Int8SpikingLinear needs a SpikeCoding with weight_bits set, got {coding!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        # Built on the meta device, then the float weight is dropped before anything is allocated.
        super().__init__(in_features, out_features, bias=bias, coding=coding, record_stats=record_stats, device="meta")
        del self.weight
        self._weight_dtype = dtype if dtype is not None else torch.get_default_dtype()
        factory = dict(device=device if device is not None else torch.get_default_device())
        self.weight_quantizer = self.weight_quantizer.to_empty(**factory)
        self.weight_quantizer.scales.fill_(1.0)
        if self.bias is not None:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=self._weight_dtype, **factory), requires_grad=False)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, **factory))
        self.register_buffer("residual_row_ptr", torch.zeros(out_features + 1, dtype=torch.int32, **factory))
        self.register_buffer("residual_columns", torch.zeros(0, dtype=torch.int32, **factory))
        self.register_buffer("residual_values", torch.zeros(0, dtype=torch.int8, **factory))

    @classmethod
    @torch.no_grad()
    def from_spiking_linear(cls, layer: SpikingLinear) -> Int8SpikingLinear:
        """The int8 form of a weight-quantized :class:`SpikingLinear`: its codes (:meth:`SpikingLinear.int8_codes`,
        the residual included), scales, bias and coding, on its device; ``layer`` is left unchanged."""
        if not isinstance(layer, SpikingLinear):
            raise TypeError(f"layer must be a SpikingLinear, got {type(layer).__name__}")
        if isinstance(layer, Int8SpikingLinear):
            raise TypeError("layer is already an Int8SpikingLinear")
        if layer.weight_quantizer is None:
            raise ValueError("layer has no weight quantization (SpikeCoding.weight_bits is None): nothing to pack as int8")
        weight = layer.weight_out_in()
        packed = cls(layer.in_features, layer.out_features, bias=layer.bias is not None, coding=layer.coding,
                     record_stats=layer.record_stats, device="meta", dtype=weight.dtype)
        if weight.is_meta:  # shapes only (a model built on "meta"): no codes to compute, no residual entry
            base, residual = torch.empty(weight.shape, dtype=torch.int8, device="meta"), None
        else:
            base, residual = layer.int8_codes()
        packed.weight_int8 = base.clone()
        packed.set_residual(residual)
        packed.weight_quantizer = WeightQuantizer(layer.out_features, layer.in_features, layer.weight_quantizer.bits,
                                                  layer.weight_quantizer.group_size, layer.weight_quantizer.clip).to(weight.device)
        packed.weight_quantizer.scales.copy_(layer.weight_quantizer.scales)
        if layer.bias is not None:
            packed.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        return packed

    @property
    def weight_dtype(self) -> torch.dtype:
        """The float dtype of the dequantized weight (the ``"torch"`` path): the bias's when there is one."""
        return self.bias.dtype if self.bias is not None else self._weight_dtype

    def set_residual(self, residual: ResidualCodes | None) -> None:
        """Replace the codes past int8 (None: none) by ``residual``, checked against ``weight_int8``."""
        if residual is not None:
            if not isinstance(residual, ResidualCodes):
                raise TypeError(f"residual must be None or a ResidualCodes, got {type(residual).__name__}")
            if self.weight_int8.device.type != "meta":
                residual.check_against(self.weight_int8)
            row_ptr, columns, values = residual.row_ptr, residual.columns, residual.values
        else:
            device = self.weight_int8.device
            row_ptr = torch.zeros(self.out_features + 1, dtype=torch.int32, device=device)
            columns = torch.zeros(0, dtype=torch.int32, device=device)
            values = torch.zeros(0, dtype=torch.int8, device=device)
        self.residual_row_ptr, self.residual_columns, self.residual_values = row_ptr.clone(), columns.clone(), values.clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # The residual's size is the loaded weights' (nnz differs from layer to layer): take it from the state.
        for name in ("residual_columns", "residual_values"):
            loaded = state_dict.get(prefix + name)
            if isinstance(loaded, torch.Tensor) and loaded.ndim == 1:
                setattr(self, name, torch.empty(loaded.shape, dtype=getattr(self, name).dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def int8_codes(self) -> tuple[torch.Tensor, ResidualCodes | None]:
        """``(weight_int8, residual)`` as held (residual None when it has no entry); no copy is made."""
        if not self.residual_columns.numel():
            return self.weight_int8, None
        buffers = (self.residual_row_ptr, self.residual_columns, self.residual_values)
        try:
            key = tuple((t.data_ptr(), t._version, t.device) for t in buffers)
        except RuntimeError:  # inference tensors have no version counter: nothing is kept
            key = None
        cached = self.__dict__.get("_residual_cache")
        if key is None or cached is None or cached[0] != key:
            # Built (and its entries checked) once, not per forward: the CPU path also keeps its scaled CSR
            # matrix per ResidualCodes object.
            cached = (key, ResidualCodes(*buffers, self.in_features))
            if key is not None:
                self.__dict__["_residual_cache"] = cached
        return self.weight_int8, cached[1]

    def weight_out_in(self) -> torch.Tensor:
        """The weight ``codes * scales`` ``(out, in)`` in :attr:`weight_dtype`, computed on every call (in
        float32, float64 for float64 weights, then cast: the release's ``round(w / s) * s``); nothing is kept."""
        base, residual = self.int8_codes()
        precision = compute_dtype(self.weight_dtype)  # as WeightQuantizer.fake_quantize: float64 weights stay float64
        codes = weight_codes(base, residual).to(precision)
        group = self.weight_quantizer.group_size
        grouped = codes.reshape(self.out_features, self.in_features // group, group) * self.weight_quantizer.scales.to(precision)
        return grouped.reshape(self.out_features, self.in_features).to(self.weight_dtype)

    def effective_weight(self) -> torch.Tensor:
        """The weight the projection uses: :meth:`weight_out_in` (already on the quantization grid)."""
        return self.weight_out_in()

    def weight_code_stats(self) -> tuple[int, int]:
        return code_statistics(*self.int8_codes())

    def calibrate_weight_scales(self) -> None:
        raise RuntimeError("an Int8SpikingLinear holds codes for its scales: it cannot recalibrate them "
                           "(load a state dict with weight_quantizer.scales, or pack a SpikingLinear again)")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", int8 weights, {self.residual_columns.numel()} residual entries"


__all__ = ["Int8SpikingLinear"]
