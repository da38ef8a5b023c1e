"""Adapters for SpikingJelly, snnTorch and HuggingFace models (installed as ``sb_adapters``)."""
