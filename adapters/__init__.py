"""Adapters for SpikingJelly, snnTorch and HuggingFace models (installed as ``sb_adapters``).

The PEFT-style injector is exported here. The host-library adapters are imported on demand, so that
``import sb_adapters`` needs neither SpikingJelly nor snnTorch:

- ``import sb_adapters.spikingjelly`` registers ``neuron.SBLIFNode`` and ``neuron.SBSpikeCountNode``;
- ``from sb_adapters.snntorch import SBLeaky`` (also ``snntorch.SBLeaky`` after the import).
"""

from .calibration import LayerCalibration, calibrate
from .config import SpikingConfig
from .conv1d import SpikingConv1D
from .injector import get_spiking_config, inject_spiking, spiking_layers, unload_spiking
from .report import LayerReport, SpikingReport, spiking_report

__all__ = [
    "LayerCalibration",
    "LayerReport",
    "SpikingConfig",
    "SpikingConv1D",
    "SpikingReport",
    "calibrate",
    "get_spiking_config",
    "inject_spiking",
    "spiking_layers",
    "spiking_report",
    "unload_spiking",
]
