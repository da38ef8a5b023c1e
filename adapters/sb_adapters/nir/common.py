"""What the NIR export, runtime and import share: the ``nir`` package (a clear ``ImportError`` without the
extra), the default time step, the option types, the errors, and the tie rule: the float just below or
above a threshold, which makes NIR's ``v > theta`` our ``v >= theta`` (see :mod:`sb_adapters.nir`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

try:
    import nir  # noqa: F401 - imported first by the package: the other modules' ``import nir`` then succeeds
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sb_adapters.nir needs the 'nir' package: pip install 'spikingbrain[nir]' (nir>=1.0.8, nirtorch>=2.6)"
    ) from error

DEFAULT_DT = 1e-4
Ties = Literal["exact", "unchanged"]
NeuronFlavor = Literal["auto", "spikingjelly", "snntorch"]
_META = "sb_adapters"

__all__ = ["DEFAULT_DT", "NIRExportError", "NIRImportError", "NeuronFlavor", "Ties"]


class NIRExportError(ValueError):
    """A module (or option) that has no exact NIR form; the message names the module path and the fix."""


class NIRImportError(ValueError):
    """A NIR graph that cannot be built into our modules; the message names the node or edge."""


# -- ties -------------------------------------------------------------------------------------------
def _np_dtype(dtype: torch.dtype) -> type:
    if dtype == torch.float64:
        return np.float64
    if dtype == torch.float32:
        return np.float32
    raise NIRExportError(f"sample_data must be float32 or float64 (the dtype of the thresholds written), got {dtype}")


def _below(theta: np.ndarray, dtype: type) -> np.ndarray:
    """Largest value of ``dtype`` below ``theta``: ``v > _below(theta)`` iff ``v >= theta`` in ``dtype``."""
    theta = np.asarray(theta, dtype=dtype)
    return np.nextafter(theta, np.asarray(-np.inf, dtype=dtype))


def _above(theta: np.ndarray, dtype: type) -> np.ndarray:
    """Smallest value of ``dtype`` above the exact ``theta``: ``v >= _above(theta)`` iff ``v > theta``."""
    exact = np.asarray(theta, dtype=np.float64)
    rounded = exact.astype(dtype)
    bumped = np.nextafter(rounded, np.asarray(np.inf, dtype=dtype))
    return np.where(rounded.astype(np.float64) > exact, rounded, bumped).astype(dtype)

