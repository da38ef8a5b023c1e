"""Adapters for SpikingJelly, snnTorch and HuggingFace models (installed as ``sb_adapters``).

The PEFT-style injector is exported here, with its save / load: ``model.save_pretrained(dir)`` of an
injected model also writes ``spiking_config.json`` (and the spiking state), ``from_pretrained_spiking(dir)``
loads both back, ``load_spiking(model, dir)`` injects a model you loaded yourself. The host-library adapters are imported on demand, so that
``import sb_adapters`` needs neither SpikingJelly nor snnTorch:

- ``import sb_adapters.spikingjelly`` registers ``neuron.SBLIFNode`` and ``neuron.SBSpikeCountNode``;
- ``from sb_adapters.snntorch import SBLeaky`` (also ``snntorch.SBLeaky`` after the import).
- ``from sb_adapters.nir import export_to_nir, import_from_nir``: NIR graphs for neuromorphic hardware
  (the optional extra ``nir``).

Command line: ``spikingbrain report | sweep-k`` (in the command-line package, :mod:`spikingbrain.inject`;
alias ``python -m sb_adapters``); tiny random HF models for demos and tests: :mod:`sb_adapters.tiny`.
"""

from .calibration import LayerCalibration, calibrate
from .config import SpikingConfig
from .conv1d import SpikingConv1D
from .injector import (
    from_pretrained_spiking,
    get_spiking_config,
    inject_spiking,
    load_spiking,
    save_spiking,
    spiking_layers,
    spiking_state_dict,
    spiking_summary,
    unload_spiking,
)
from sb_layers.report import LayerReport, SpikingReport, record_spikes, spike_report

from .sweep import KSweep, SweepPoint, sweep_k
from .hybrid import DenseLayerChoice, LayerSensitivity, choose_dense_layers
from .upcycle import load_upcycled, upcycle_mlps

__all__ = [
    "DenseLayerChoice",
    "KSweep",
    "LayerCalibration",
    "LayerReport",
    "LayerSensitivity",
    "SpikingConfig",
    "SpikingConv1D",
    "SpikingReport",
    "SweepPoint",
    "calibrate",
    "choose_dense_layers",
    "from_pretrained_spiking",
    "get_spiking_config",
    "inject_spiking",
    "load_upcycled",
    "load_spiking",
    "save_spiking",
    "record_spikes",
    "spike_report",
    "spiking_layers",
    "spiking_state_dict",
    "spiking_summary",
    "sweep_k",
    "unload_spiking",
    "upcycle_mlps",
]
