"""Temporary alias of :mod:`sb_kernels.device` (private; removed once no test imports it)."""

import sys

from . import device

sys.modules[__name__] = device
