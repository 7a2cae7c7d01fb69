"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD between CLIP image embeddings.

Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, on L2-normalised
embeddings, scaled by 1000: CMMD = 1000 * (mean K_xx + mean K_yy - 2 mean K_xy).

Two estimators of MMD^2 (Gretton et al. 2012, "A kernel two-sample test", eqs. 3 and 5):

- ``unbiased`` (the default here): U-statistic, the self-kernel means drop the diagonals (sums over
  i != j divided by n (n - 1)). Its expectation for images drawn like the reference does not depend
  on N (measured on shapes-CLIP: real images against the reference agree at N = 30 and N = 300),
  so rows of different N compare. It can be slightly negative.
- ``biased``: the V-statistic of the paper's reference code (google-research/cmmd ``distance.py``),
  means include the diagonals, so numbers compare with published CMMD; it exceeds the unbiased one
  by ~(1 - mean K_xx) / N, a floor that falls with N (real vs reference, shapes-CLIP: 0.30 at N = 30,
  0.11 at N = 90).

``CMMDReference.distance_ci`` adds a leave-one-out jackknife interval over the row's images,
reference fixed (``bench.metrics.jackknife``). The kernel sums are taken in row blocks, so 10k x 10k
never sits in memory.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from . import jackknife
from .arrays import as_float64

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
Estimator = Literal["biased", "unbiased"]


def _normalise(x: Any) -> np.ndarray:
    x = as_float64(x, "CMMD embeddings")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rbf_kernel_sum(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, block: int = 2048) -> float:
    """sum_ij exp(-||x_i - y_j||^2 / (2 sigma^2)), in row blocks of ``x``."""
    gamma = 1.0 / (2.0 * sigma**2)
    y_sq = (y * y).sum(axis=1)
    total = 0.0
    for start in range(0, x.shape[0], block):
        xb = x[start:start + block]
        d2 = (xb * xb).sum(axis=1)[:, None] + y_sq[None, :] - 2.0 * (xb @ y.T)
        total += float(np.exp(-gamma * d2).sum())
    return total


def rbf_kernel_rowsums(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, block: int = 2048) -> np.ndarray:
    """(len(x),) sum_j exp(-||x_i - y_j||^2 / (2 sigma^2)) for each i, in row blocks of ``x``."""
    gamma = 1.0 / (2.0 * sigma**2)
    y_sq = (y * y).sum(axis=1)
    out = np.empty(x.shape[0])
    for start in range(0, x.shape[0], block):
        xb = x[start:start + block]
        d2 = (xb * xb).sum(axis=1)[:, None] + y_sq[None, :] - 2.0 * (xb @ y.T)
        out[start:start + block] = np.exp(-gamma * d2).sum(axis=1)
    return out


def _self_mean(x: np.ndarray, sigma: float, estimator: Estimator) -> float:
    n = x.shape[0]
    s = rbf_kernel_sum(x, x, sigma)
    if estimator == "biased":
        return s / (n * n)
    return (s - n) / (n * (n - 1))  # the diagonal k(x_i, x_i) = 1


def reference_self_mean(ref: Any, sigma: float = CMMD_SIGMA, estimator: Estimator = "unbiased") -> float:
    """Mean K_yy of reference embeddings (N, D): the reference-only term of CMMD, cacheable with the reference."""
    y = _normalise(ref)
    return _self_mean(y, sigma, estimator) if y.shape[0] >= 2 else float("nan")


class CMMDReference:
    """Reference embeddings with their self-kernel mean precomputed (it is shared by every row);
    ``k_yy`` given (from ``reference_self_mean``, e.g. cached) skips the N x N kernel sum."""

    def __init__(self, ref: Any, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
                 estimator: Estimator = "unbiased", k_yy: float | None = None) -> None:
        if estimator not in ("biased", "unbiased"):
            raise ValueError(f"CMMD estimator must be 'biased' or 'unbiased', got {estimator!r}")
        self.y = _normalise(ref)
        self.sigma, self.scale, self.estimator = sigma, scale, estimator
        if k_yy is None:
            k_yy = _self_mean(self.y, sigma, estimator) if self.y.shape[0] >= 2 else float("nan")
        self.k_yy = float(k_yy)

    def _sums(self, gen: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Per image of ``gen``: sum_{j != i} k(x_i, x_j) and mean_j k(x_i, y_j); None when N < 2."""
        x = _normalise(gen)
        if x.shape[0] < 2 or self.y.shape[0] < 2:
            return None
        if x.shape[1] != self.y.shape[1]:
            raise ValueError(f"CMMD: embeddings of dim {x.shape[1]} vs reference dim {self.y.shape[1]}")
        xx_rows = rbf_kernel_rowsums(x, x, self.sigma) - 1.0  # k(x_i, x_i) = 1 on the diagonal
        return xx_rows, rbf_kernel_rowsums(x, self.y, self.sigma) / self.y.shape[0]

    def _value(self, xx_rows: np.ndarray, xy_means: np.ndarray) -> float:
        n = xx_rows.size
        off = float(xx_rows.sum())
        k_xx = off / (n * (n - 1)) if self.estimator == "unbiased" else (off + n) / (n * n)
        return float(self.scale * (k_xx + self.k_yy - 2.0 * float(xy_means.mean())))

    def distance(self, gen: Any) -> float:
        """CMMD of generated embeddings ``gen`` (N, D) against the reference; nan when N < 2."""
        sums = self._sums(gen)
        return float("nan") if sums is None else self._value(*sums)

    def distance_ci(self, gen: Any, level: float = 0.95) -> tuple[float, float, float]:
        """(CMMD, low, high): the leave-one-out jackknife interval CMMD -+ t_{N-1} se over the row's
        images, reference fixed (``bench.metrics.jackknife``); the interval is nan when N < 3."""
        sums = self._sums(gen)
        if sums is None:
            return float("nan"), float("nan"), float("nan")
        value, (xx_rows, xy_means), n = self._value(*sums), sums, sums[0].size
        if n < 3:
            return value, float("nan"), float("nan")
        loo = jackknife.mmd2_leave_one_out(xx_rows, np.ones(n), xy_means, self.k_yy, self.estimator == "unbiased")
        lo, hi = jackknife.interval(value, self.scale * jackknife.jackknife_se(loo), n, level)
        return value, lo, hi


def cmmd(gen: Any, ref: Any, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
         estimator: Estimator = "unbiased") -> float:
    """CMMD between two embedding sets (N, D) and (M, D); see the module docstring."""
    return CMMDReference(ref, sigma, scale, estimator).distance(gen)
