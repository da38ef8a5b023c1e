"""Triton kernels with PyTorch references and explicit backend dispatch (installed as ``sb_kernels``)."""
