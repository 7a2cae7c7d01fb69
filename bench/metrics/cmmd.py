"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD between CLIP image embeddings.

Gaussian RBF kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) with sigma = 10, on L2-normalised
embeddings, scaled by 1000: CMMD = 1000 * (mean K_xx + mean K_yy - 2 mean K_xy).

The paper's reference code (google-research/cmmd ``distance.py``) computes the
minimum-variance ("biased", V-statistic) estimator: the means include the diagonals. That is the
default here, so numbers compare with published CMMD. ``estimator="unbiased"`` drops the
diagonals (U-statistic: sums over i != j divided by n(n - 1)); the two differ by
O(1/n). The kernel sums are taken in row blocks, so 10k x 10k never sits in memory.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0
Estimator = Literal["biased", "unbiased"]


def _normalise(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"CMMD needs (N, D) embeddings, got shape {x.shape}")
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


def _self_mean(x: np.ndarray, sigma: float, estimator: Estimator) -> float:
    n = x.shape[0]
    s = rbf_kernel_sum(x, x, sigma)
    if estimator == "biased":
        return s / (n * n)
    return (s - n) / (n * (n - 1))  # the diagonal k(x_i, x_i) = 1


def reference_self_mean(ref: Any, sigma: float = CMMD_SIGMA, estimator: Estimator = "biased") -> float:
    """Mean K_yy of reference embeddings (N, D): the reference-only term of CMMD, cacheable with the reference."""
    y = _normalise(ref)
    return _self_mean(y, sigma, estimator) if y.shape[0] >= 2 else float("nan")


class CMMDReference:
    """Reference embeddings with their self-kernel mean precomputed (it is shared by every row);
    ``k_yy`` given (from ``reference_self_mean``, e.g. cached) skips the N x N kernel sum."""

    def __init__(self, ref: Any, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
                 estimator: Estimator = "biased", k_yy: float | None = None) -> None:
        if estimator not in ("biased", "unbiased"):
            raise ValueError(f"CMMD estimator must be 'biased' or 'unbiased', got {estimator!r}")
        self.y = _normalise(ref)
        self.sigma, self.scale, self.estimator = sigma, scale, estimator
        if k_yy is None:
            k_yy = _self_mean(self.y, sigma, estimator) if self.y.shape[0] >= 2 else float("nan")
        self.k_yy = float(k_yy)

    def distance(self, gen: Any) -> float:
        """CMMD of generated embeddings ``gen`` (N, D) against the reference; nan when N < 2."""
        x = _normalise(gen)
        if x.shape[0] < 2 or self.y.shape[0] < 2:
            return float("nan")
        if x.shape[1] != self.y.shape[1]:
            raise ValueError(f"CMMD: embeddings of dim {x.shape[1]} vs reference dim {self.y.shape[1]}")
        k_xx = _self_mean(x, self.sigma, self.estimator)
        k_xy = rbf_kernel_sum(x, self.y, self.sigma) / (x.shape[0] * self.y.shape[0])
        return float(self.scale * (k_xx + self.k_yy - 2.0 * k_xy))


def cmmd(gen: Any, ref: Any, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
         estimator: Estimator = "biased") -> float:
    """CMMD between two embedding sets (N, D) and (M, D); see the module docstring."""
    return CMMDReference(ref, sigma, scale, estimator).distance(gen)
