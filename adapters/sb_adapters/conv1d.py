"""SpikingConv1D: the spike-coded form of transformers' ``Conv1D`` (GPT-2's transposed linear).

``Conv1D(nf, nx)`` holds ``weight`` ``(nx, nf)`` = ``(in, out)`` and computes ``x @ weight + bias``, the
same function as an ``nn.Linear`` whose weight is ``weight.T``. :class:`SpikingConv1D` is a
:class:`sb_layers.SpikingLinear` over that transposed *view*: it shares storage with the Conv1D's weight
(no copy, so training it trains the original tensor) and shares the bias Parameter itself.

Its state dict keeps Conv1D's layout: ``weight`` is saved as ``(in, out)`` and loaded from ``(in, out)``,
so checkpoints of the original model load into the spiking one and back.
"""

from __future__ import annotations

import torch
from torch import nn

from sb_layers import SpikeCoding, SpikingLinear


class SpikingConv1D(SpikingLinear):
    """A :class:`SpikingLinear` standing in for a ``Conv1D``, with Conv1D's state-dict layout.

    Shapes: ``[..., nx] -> [..., nf]``; ``weight`` (as a module attribute) is the ``(nf, nx)`` view,
    in the state dict it is ``(nx, nf)`` as in ``Conv1D``.
    """

    @classmethod
    def from_conv1d(cls, conv: nn.Module, coding: SpikeCoding | None = None, record_stats: bool = False) -> SpikingConv1D:
        """A SpikingConv1D over ``conv.weight.T`` (a view sharing storage) and ``conv.bias`` (shared)."""
        from transformers.pytorch_utils import Conv1D

        if not isinstance(conv, Conv1D):
            raise TypeError(f"conv must be a transformers Conv1D, got {type(conv).__name__}")
        view = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None, device="meta")
        view.weight = nn.Parameter(conv.weight.detach().t(), requires_grad=conv.weight.requires_grad)
        view.bias = conv.bias
        module = cls.from_linear(view, coding=coding, record_stats=record_stats)
        return module

    def shares_storage_with(self, conv: nn.Module) -> bool:
        """Whether ``weight`` is still a view of ``conv.weight`` (``.to()`` or loading may re-allocate)."""
        return self.weight.data_ptr() == conv.weight.data_ptr() and self.weight.device == conv.weight.device

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 - torch hook
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = destination[prefix + "weight"].t()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict and isinstance(state_dict[key], torch.Tensor):
            state_dict = {**state_dict, key: state_dict[key].t()}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
