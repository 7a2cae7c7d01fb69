"""Features as the metrics compute on them: float64 numpy arrays, from torch tensors or array-likes."""
from __future__ import annotations

from typing import Any

import numpy as np


def as_float64(x: Any, rows_of: str | None = None) -> np.ndarray:
    """``x`` (a torch tensor on any device, or an array-like) as a float64 numpy array. With ``rows_of`` (what
    the metric calls the rows, e.g. "PRDC features") it must be 2-D (N, D), else ValueError naming it."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if rows_of is not None and x.ndim != 2:
        raise ValueError(f"{rows_of} must be 2-D (N, D), got shape {x.shape}")
    return x
