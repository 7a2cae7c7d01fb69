"""Bradley-Terry strengths from pairwise preferences, with bootstrap intervals.

P(i preferred over j) = 1 / (1 + exp(theta_j - theta_i)). An "indifferent" answer counts as half a
win for each side (the usual tie convention). The strengths are the maximum-likelihood estimate by
Hunter's MM iteration (Hunter 2004, "MM algorithms for generalized Bradley-Terry models"),
centred so they average zero. ``prior`` adds that many virtual ties between every two models,
which keeps a model that won (or lost) every comparison at a finite strength; with the default
of one tie per model pair its pull is negligible next to a campaign's hundreds of ratings.
Intervals are percentile-bootstrap intervals over resampled groups (prompts): all comparisons of a
drawn prompt come along, since they share the prompt's difficulty.
"""
from __future__ import annotations

import numpy as np

MAX_ITER = 20_000
TOL = 1e-10


def fit(wins: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """Strengths (K,) from ``wins`` (K, K): ``wins[i, j]`` = how often i was preferred over j."""
    return fit_batch(np.asarray(wins, dtype=np.float64)[None], prior)[0]


def fit_batch(wins: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """Strengths (B, K) for a batch of win matrices (B, K, K), iterated together."""
    w = np.asarray(wins, dtype=np.float64).copy()
    k = w.shape[-1]
    off = ~np.eye(k, dtype=bool)
    w[:, off] += prior / 2.0
    n = w + np.swapaxes(w, 1, 2)
    total = w.sum(2)
    p = np.ones(w.shape[:2])
    for _ in range(MAX_ITER):
        denom = (n / (p[:, :, None] + p[:, None, :])).sum(2)
        new = np.where(total > 0, total / np.where(denom > 0, denom, 1.0), 1e-12)
        new /= np.exp(np.log(new).mean(1, keepdims=True))
        done = np.max(np.abs(np.log(new) - np.log(p))) < TOL
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(1, keepdims=True)


def win_probability(theta: np.ndarray) -> np.ndarray:
    """(K, K) model probability that row beats column under the fitted strengths."""
    t = np.asarray(theta, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(t[None, :] - t[:, None]))


def bootstrap(group_wins: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95, seed: int | list[int] = 0,
              prior: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point strengths and percentile-bootstrap bounds from per-group win matrices (G, K, K)."""
    g = np.asarray(group_wins, dtype=np.float64)
    point = fit(g.sum(0), prior)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(g), size=(n_boot, len(g)))
    counts = np.stack([np.bincount(row, minlength=len(g)) for row in idx]).astype(np.float64)
    boot = fit_batch(np.einsum("bg,gij->bij", counts, g), prior)
    alpha = (1.0 - ci) / 2
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha], axis=0)
    return point, lo, hi
