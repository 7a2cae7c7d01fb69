"""Percentile bootstrap over images (fixed seed): the confidence intervals of every metric row."""
from __future__ import annotations

from collections.abc import Iterator

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


def resample_counts(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """For each resample, float64 counts (n,): how often each of n images is drawn (with replacement)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-image ``values`` (NaN entries dropped).

    Returns (nan, nan) for no resamples or no values; a single value gives a zero-width interval.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if n_resamples <= 0 or v.size == 0:
        return float("nan"), float("nan")
    means = np.array([c @ v / v.size for c in resample_counts(v.size, n_resamples, seed)])
    return percentile_interval(means, level)
