"""Precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models") and density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity
Metrics for Generative Models"), in the FD feature space, against the reference's per-image features.

With real features X (the reference group), fake features Y (the row), Euclidean distances and
NND_k(z) the distance from z to its k-th nearest neighbour in its own set (itself excluded):

    precision = 1/M sum_j 1[exists i: ||Y_j - X_i|| <= NND_k(X_i)]
    recall    = 1/N sum_i 1[exists j: ||X_i - Y_j|| <= NND_k(Y_j)]
    density   = 1/(k M) sum_j sum_i 1[||Y_j - X_i|| <= NND_k(X_i)]
    coverage  = 1/N sum_i 1[min_j ||X_i - Y_j|| <= NND_k(X_i)]

(M fake, N real; closed balls, as the papers write them). Recall and coverage depend on how many
fake and real images there are: compare rows of equal N against the same reference. The k-NN radii
of the reference are a property of the reference alone and can be cached with it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import as_float64

PRDC_K = 3


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances (float64; negative rounding clipped to 0)."""
    d2 = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(x: Any, k: int = PRDC_K, block: int = 1024) -> np.ndarray:
    """NND_k of each row of ``x`` within ``x`` (itself excluded), in row blocks; needs len(x) > k."""
    x = as_float64(x, "PRDC features")
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, have {n}")
    out = np.empty(n)
    for s in range(0, n, block):
        d = distances(x[s:s + block], x)
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = np.inf  # itself
        out[s:s + block] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out


class PRDCReference:
    """Real features and their k-NN radii (``radii`` given, e.g. cached, skips the N x N distances)."""

    def __init__(self, real: Any, k: int = PRDC_K, radii: np.ndarray | None = None) -> None:
        self.x, self.k = as_float64(real, "PRDC features"), int(k)
        self.radii = knn_radii(self.x, self.k) if radii is None else np.asarray(radii, dtype=np.float64)
        if self.radii.shape != (self.x.shape[0],):
            raise ValueError(f"{self.radii.shape[0]} radii for {self.x.shape[0]} reference features")

    def compute(self, fake: Any, block: int = 1024) -> dict[str, float]:
        """precision, recall, density, coverage of ``fake`` (M, D) (blocks of reference rows); every value
        nan when M <= k."""
        y = as_float64(fake, "PRDC features")
        if y.shape[0] <= self.k:
            return dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
        fake_radii = knn_radii(y, self.k)
        in_balls = np.zeros(y.shape[0])                  # per fake image: real balls it lies in
        recalled, covered = [], []
        for s in range(0, self.x.shape[0], block):
            d = distances(self.x[s:s + block], y)       # (real block, M fake)
            r = self.radii[s:s + block, None]
            in_balls += (d <= r).sum(axis=0)
            recalled.append((d <= fake_radii[None, :]).any(axis=1))
            covered.append(d.min(axis=1) <= r[:, 0])
        return {"precision": float((in_balls > 0).mean()), "recall": float(np.concatenate(recalled).mean()),
                "density": float(in_balls.mean() / self.k), "coverage": float(np.concatenate(covered).mean())}
