"""Temporary alias of :mod:`sb_kernels.dispatch` (private; removed once no test imports it)."""

import sys

from . import dispatch

sys.modules[__name__] = dispatch
