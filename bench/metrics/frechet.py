"""Fréchet distance (FID when the features are Inception-v3 pool3) from additive float64 states.

    FD = ||mu_1 - mu_2||^2 + Tr(Sigma_1 + Sigma_2 - 2 (Sigma_1 Sigma_2)^(1/2))

with unbiased covariances (divide by n - 1), as pytorch-fid, torch-fidelity, torchmetrics and
edm compute it. The state is ``n``, ``sum`` and ``sum_outer`` (sum of x x^T) in float64, so
shards combine by adding them (``merge``) and a float32 input never changes the result beyond
its own rounding.

Two routes to the trace term, the same quantity:

- ``frechet_distance`` / ``FrechetStats.compute``: ``scipy.linalg.sqrtm`` of Sigma_1 Sigma_2; like
  edm and pytorch-fid we keep its real part (a small imaginary part is numerical noise of a
  near-singular product) and warn when the imaginary part is not small.
- ``FrechetReference`` (what ``metrics.csv`` uses, point estimate and bootstrap): the eigenvalues
  of the symmetric PSD Sigma_r^(1/2) Sigma Sigma_r^(1/2), from the smaller of its D x D form and the
  n x n Gram form of the row's features: ~50x faster per row on 256-d features, no imaginary
  parts (tests: equal to the sqrtm route to 1e-7 relative).

FD is biased upward at small N (its expectation falls like 1/N). Around it: ``fd_jackknife`` (the
row's interval: delete-a-group jackknife, for the expected FD at this N), ``fd_inf`` (Chong &
Forsyth 2020: extrapolated to N -> infinity) and ``fd_bootstrap`` (the former percentile
bootstrap, which does not cover; kept to compare with older runs).
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from bench.rundir import atomic_write_bytes

from . import jackknife
from .arrays import as_float64
from .bootstrap import percentile_interval, resample_count_matrix

log = logging.getLogger(__name__)

IMAG_TOL = 1e-3  # pytorch-fid's tolerance on the imaginary part of diag(sqrtm)


class FrechetStats:
    """Additive float64 state of a feature set: ``n``, ``sum`` (D,), ``sum_outer`` (D, D)."""

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.sum = np.zeros(self.dim, dtype=np.float64)
        self.sum_outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features: Any) -> "FrechetStats":
        """Add a batch of features (N, D), any float dtype (torch or numpy); accumulates in float64.

        A torch batch is reduced by torch (float64) before it reaches numpy: handing every batch to
        numpy's BLAS between two forwards makes its thread pool and torch's fight over the cores
        (2x slower extraction on 2 cores, measured by benchmarks/run.py).
        """
        if hasattr(features, "detach"):
            x = features.detach().to("cpu", torch.float64)
            if x.ndim != 2:
                raise ValueError(f"features must be 2-D (N, D), got shape {tuple(x.shape)}")
            n, s, outer = x.shape[0], x.sum(0).numpy(), (x.T @ x).numpy()
        else:
            xa = as_float64(features, "features")
            n, s, outer = xa.shape[0], xa.sum(axis=0), xa.T @ xa
        if s.shape[0] != self.dim:
            raise ValueError(f"features have dim {s.shape[0]}, stats expect {self.dim}")
        self.n += n
        self.sum += s
        self.sum_outer += outer
        return self

    def merge(self, other: "FrechetStats") -> "FrechetStats":
        """Add another state (e.g. another shard) into this one."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of dim {other.dim} into dim {self.dim}")
        self.n += other.n
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        return self

    @classmethod
    def from_features(cls, features: Any) -> "FrechetStats":
        x = as_float64(features, "features")
        return cls(x.shape[1]).update(x)

    @property
    def mu(self) -> np.ndarray:
        if self.n < 1:
            raise ValueError("Fréchet stats are empty")
        return self.sum / self.n

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (n - 1 in the denominator)."""
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.n}")
        mu = self.mu
        return (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - 1)

    def compute(self, other: "FrechetStats | tuple[np.ndarray, np.ndarray]") -> float:
        """Fréchet distance to ``other`` (stats, or a ``(mu, sigma)`` pair such as reference stats)."""
        mu2, sigma2 = (other.mu, other.sigma) if isinstance(other, FrechetStats) else other
        return frechet_distance(self.mu, self.sigma, np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64))

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}n": np.asarray(self.n, dtype=np.int64), f"{prefix}sum": self.sum,
                f"{prefix}sum_outer": self.sum_outer}

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "") -> "FrechetStats":
        s = cls(int(np.asarray(arrays[f"{prefix}sum"]).shape[0]))
        s.n = int(arrays[f"{prefix}n"])
        s.sum = np.asarray(arrays[f"{prefix}sum"], dtype=np.float64).copy()
        s.sum_outer = np.asarray(arrays[f"{prefix}sum_outer"], dtype=np.float64).copy()
        return s

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """Write ``n, sum, sum_outer, mu, sigma`` (float64) and JSON ``meta`` to an .npz, atomically."""
        arrays = self.to_arrays()
        if self.n >= 2:
            arrays.update(mu=self.mu, sigma=self.sigma)
        arrays["meta"] = np.asarray(json.dumps(meta or {}, sort_keys=True))
        atomic_savez(Path(path), arrays)

    @classmethod
    def load(cls, path: str | Path) -> "FrechetStats":
        with np.load(Path(path), allow_pickle=False) as z:
            return cls.from_arrays(z)


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file in the same folder, then rename: never a half-written file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(buf.getvalue(), path)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy's sqrtm; its singular-matrix warning is handled by the caller (non-finite / imaginary checks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """FD between N(mu1, sigma1) and N(mu2, sigma2); ``scipy.linalg.sqrtm`` for (sigma1 sigma2)^(1/2).

    A non-finite square root (singular product) is retried with ``eps`` added to the diagonals, as
    pytorch-fid does; the real part is kept (edm, pytorch-fid), with a warning if the imaginary part
    of its diagonal exceeds 1e-3.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FD: sqrtm of a singular product; adding %g to the covariance diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > IMAG_TOL:
            log.warning("FD: sqrtm has an imaginary component up to %.3g (kept the real part); "
                        "the covariances are near-singular: use more images", imag)
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclass
class FrechetReference:
    """Fixed reference (mu_r, Sigma_r) with Sigma_r^(1/2) precomputed, for many FDs against one reference.

    The trace term uses Tr((Sigma_r Sigma)^(1/2)) = sum_i sqrt(lambda_i(Sigma_r^(1/2) Sigma Sigma_r^(1/2))),
    a symmetric PSD eigenproblem (the same quantity as ``sqrtm``, without its imaginary noise). From
    features X (n, D): with B = (X - mu) Sigma_r^(1/2) / sqrt(n - 1), Sigma_r^(1/2) Sigma Sigma_r^(1/2)
    = B^T B, whose non-zero eigenvalues are those of the n x n Gram matrix B B^T; the smaller of
    the two is decomposed, so a row of 50 images against 2048-d Inception features costs a 50 x 50
    eigenproblem instead of a 2048 x 2048 ``sqrtm`` (tests: equal to ``frechet_distance`` to 1e-7).
    """

    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        w, v = np.linalg.eigh(self.sigma)
        self.sqrt_sigma = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        self.trace_sigma = float(np.trace(self.sigma))

    @classmethod
    def from_stats(cls, stats: FrechetStats) -> "FrechetReference":
        return cls(stats.mu, stats.sigma)

    def distance_features(self, features: Any) -> float:
        """FD of the feature set (n, D), n >= 2, to the reference (the Gram form when n < D)."""
        x = as_float64(features, "features")
        return float(self.weighted_distances(x, np.ones((1, x.shape[0])))[0])

    def weighted_distances(self, x: np.ndarray, counts: np.ndarray, max_bytes: int = 1 << 26) -> np.ndarray:
        """FD of each weighting of the rows of ``x`` (n, D) by ``counts`` (R, n): image i counted c_i times,
        m = sum_i c_i >= 2 images in all (bootstrap resamples: m = n; subsets and jackknife groups: 0/1
        weights), in chunks of at most ``max_bytes`` of work arrays."""
        n, d = x.shape
        if n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {n}")
        xa = x @ self.sqrt_sigma                                  # (n, D): rows of X Sigma_r^(1/2)
        sq = (x * x).sum(axis=1)                                 # ||x_i||^2
        out = np.empty(counts.shape[0])
        step = max(1, max_bytes // (8 * n * d))
        for s in range(0, counts.shape[0], step):
            c = counts[s:s + step]                               # (r, n)
            m = c.sum(axis=1)                                    # (r,) images in each weighting
            mu = c @ x / m[:, None]                              # (r, D)
            b = np.sqrt(c)[:, :, None] * (xa[None] - (mu @ self.sqrt_sigma)[:, None, :])  # (r, n, D)
            g = b @ b.transpose(0, 2, 1) if n <= d else b.transpose(0, 2, 1) @ b
            ev = np.linalg.eigvalsh(g / (m - 1)[:, None, None])
            trace = (c @ sq - m * (mu * mu).sum(axis=1)) / (m - 1)  # Tr(Sigma) of each weighting
            diff = mu - self.mu
            out[s:s + step] = ((diff * diff).sum(axis=1) + trace + self.trace_sigma
                               - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum(axis=1))
        return out


def fd_bootstrap(features: Any, ref: FrechetReference, n_resamples: int, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of FD over the generated images, the reference held fixed
    (``metrics.fd_interval=bootstrap``, kept to compare with older runs; not the default).

    Each resample draws N images with replacement; its state is rebuilt from the counts c
    (mu = c^T X / N, Sigma from X^T diag(c) X), all resamples at once (``weighted_distances``).
    Duplicates lower the resampled diversity, so at small N the interval lies wholly above the point
    estimate and covers the expected FD at this N in almost no trial (measured: 0-1% of 100 trials
    of real shapes images at N = 30-360). ``fd_jackknife`` is the calibrated interval.
    Returns (nan, nan) when ``n_resamples`` is 0 or N < 2.
    """
    x = as_float64(features, "features")
    n = x.shape[0]
    if n_resamples <= 0 or n < 2:
        return float("nan"), float("nan")
    counts = resample_count_matrix(n, n_resamples, seed)
    return percentile_interval(ref.weighted_distances(x, counts), level)


FD_INF_SIZES = 15      # subset sizes of the FD-infinity fit
FD_INF_REPEATS = 3     # random subsets per size (averaged; the full set once)


def fd_jackknife(features: Any, ref: FrechetReference, groups: int = 50, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float, float, int]:
    """(FD, interval low, interval high, standard error, G): the delete-a-group jackknife over the row's
    images, reference fixed (``bench.metrics.jackknife``; Efron & Stein 1981).

    G = min(groups, N) groups; FD without each group via ``weighted_distances`` (0/1 weights, one
    eigendecomposition each, as many as ``groups`` bootstrap resamples cost). The interval
    FD -+ t_{G-1} se (low end clipped at 0) is for the expected FD at this N (measured coverage, real
    shapes images against the reference, 100+ trials: tests/test_metrics_calibration.py) and always
    contains FD. (FD, nan, nan, nan, 0) when N < 3 or ``groups`` < 2; all nan when N < 2.
    """
    x = as_float64(features, "features")
    n = x.shape[0]
    if n < 2:
        return float("nan"), float("nan"), float("nan"), float("nan"), 0
    point = ref.distance_features(x)
    if n < 3 or groups < 2:
        return point, float("nan"), float("nan"), float("nan"), 0
    masks = jackknife.group_masks(n, groups, seed)
    se = jackknife.jackknife_se(ref.weighted_distances(x, masks))
    lo, hi = jackknife.interval(point, se, masks.shape[0], level)
    return point, max(lo, 0.0), hi, se, masks.shape[0]  # FD >= 0, and so is its expectation


def fd_inf_sizes(n: int, min_n: int) -> np.ndarray:
    """The subset sizes of ``fd_inf`` for a row of n images: FD_INF_SIZES evenly spaced from
    max(n // 5, min_n // 2) to n (below ~50 images, FD is no longer linear in 1/N: measured on shapes-CLIP)."""
    return np.unique(np.linspace(max(n // 5, min_n // 2, 2), n, FD_INF_SIZES).astype(np.int64))


def fd_inf(features: Any, ref: FrechetReference, min_n: int = 100, seed: int = 0) -> float:
    """FD-infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find
    them"): FD of random subsets of the row's images at ``fd_inf_sizes`` (FD_INF_REPEATS subsets per
    size, averaged), a least-squares line in 1/N, its value at 1/N = 0. nan below ``min_n`` images.

    Unbiased for the N -> infinity FD where FD is linear in 1/N over the sizes used, but noisier than
    FD at N (an extrapolation): compare rows of different N with it, or with ``fd_excess``.
    """
    x = as_float64(features, "features")
    n = x.shape[0]
    if n < max(min_n, 3):
        return float("nan")
    sizes = fd_inf_sizes(n, min_n)
    rng = np.random.default_rng(seed)
    rows, which = [], []
    for k, m in enumerate(sizes):
        for _ in range(1 if m == n else FD_INF_REPEATS):
            c = np.zeros(n)
            c[rng.choice(n, int(m), replace=False)] = 1.0
            rows.append(c)
            which.append(k)
    fd = ref.weighted_distances(x, np.stack(rows))
    mean_fd = np.bincount(which, weights=fd) / np.bincount(which)
    design = np.stack([np.ones(sizes.size), 1.0 / sizes], axis=1)
    return float(np.linalg.lstsq(design, mean_fd, rcond=None)[0][0])
