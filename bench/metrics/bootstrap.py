"""Percentile bootstrap over images (fixed seed): the confidence intervals of every metric row."""
from __future__ import annotations

import numpy as np


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of bootstrap ``values``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def resample_count_matrix(n: int, n_resamples: int, seed: int = 0, max_elements: int = 1 << 24) -> np.ndarray:
    """How often each of n images is drawn (with replacement) in each resample, float64 (n_resamples, n):
    one ``integers(0, n, n)`` per resample from ``default_rng(seed)``, drawn in blocks."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_resamples, n), dtype=np.float64)
    step = max(1, max_elements // max(n, 1))
    for s in range(0, n_resamples, step):
        draws = rng.integers(0, n, (min(step, n_resamples - s), n))
        rows = np.repeat(np.arange(draws.shape[0]), n)
        np.add.at(out[s:s + draws.shape[0]], (rows, draws.ravel()), 1.0)
    return out


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-image ``values`` (NaN entries dropped).

    Returns (nan, nan) for no resamples or no values; a single value gives a zero-width interval.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if n_resamples <= 0 or v.size == 0:
        return float("nan"), float("nan")
    means = resample_count_matrix(v.size, n_resamples, seed) @ v / v.size
    return percentile_interval(means, level)
