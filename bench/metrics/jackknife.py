"""Jackknife standard errors and intervals: the uncertainty of FD, CMMD and KID at the row's own N.

The delete-a-group jackknife (Quenouille 1956; Tukey 1958; Efron & Stein 1981, "The jackknife
estimate of variance"): split the n images into G groups of near-equal size (a seeded permutation),
recompute the statistic without each group, theta_(g), and take

    se^2 = (G - 1) / G * sum_g (theta_(g) - mean_g theta_(g))^2.

G = n is the leave-one-out jackknife. For a statistic symmetric in independent groups, the expectation
of se^2 is at least the statistic's variance on one group fewer (Efron & Stein 1981), so the interval
``point -+ t_{G-1} se`` errs wide (measured on shapes-CLIP FD: se 1.2-1.5 x the true standard
deviation). It targets the expectation of the statistic at this N (for FD, not the N -> infinity
limit: FD is biased upward at small N, see ``frechet.fd_inf``), and the point estimate always lies
inside it. The reference is held fixed throughout.

For the MMD^2 estimators (KID, CMMD) the leave-one-out values come in closed form from the
kernel matrices' row sums (``mmd2_leave_one_out``), O(n) after the kernel sums.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def group_masks(n: int, groups: int, seed: int = 0) -> np.ndarray:
    """(G, n) float 0/1 masks, G = min(groups, n): row g keeps every image except group g
    (images assigned to groups round-robin over ``default_rng(seed).permutation(n)``)."""
    g = max(1, min(int(groups), n))
    label = np.empty(n, dtype=np.int64)
    label[np.random.default_rng(seed).permutation(n)] = np.arange(n) % g
    return (label[None, :] != np.arange(g)[:, None]).astype(np.float64)


def jackknife_se(leave_out: np.ndarray) -> float:
    """sqrt((G - 1) / G * sum (theta_(g) - mean)^2) of the G delete-a-group values; nan for G < 2."""
    v = np.asarray(leave_out, dtype=np.float64)
    g = v.size
    if g < 2 or not np.isfinite(v).all():
        return float("nan")
    return float(np.sqrt((g - 1) / g * np.sum((v - v.mean()) ** 2)))


def critical_value(groups: int, level: float = 0.95) -> float:
    """The two-sided Student t quantile with G - 1 degrees of freedom (the delete-a-group convention)."""
    return float(stats.t.ppf(0.5 + level / 2, max(int(groups) - 1, 1)))


def interval(point: float, se: float, groups: int, level: float = 0.95) -> tuple[float, float]:
    """point -+ t_{G-1} se; (nan, nan) when either is not finite."""
    if not (np.isfinite(point) and np.isfinite(se)):
        return float("nan"), float("nan")
    h = critical_value(groups, level) * se
    return float(point - h), float(point + h)


def mmd2_leave_one_out(xx_rows: np.ndarray, xx_diag: np.ndarray, xy_means: np.ndarray, k_yy: float,
                       unbiased: bool) -> np.ndarray:
    """MMD^2 of x without image i, for each i, from kernel row sums (the reference held fixed).

    ``xx_rows[i]`` = sum_{j != i} k(x_i, x_j); ``xx_diag[i]`` = k(x_i, x_i); ``xy_means[i]`` = mean_j k(x_i, y_j).
    Unbiased (U-statistic): sum_{i != j} k / (m (m - 1)); biased (V-statistic): sum_{i, j} k / m^2; m = n - 1.
    """
    n = xx_rows.size
    off, diag = float(xx_rows.sum()), float(xx_diag.sum())
    m = n - 1
    if unbiased:
        k_xx = (off - 2.0 * xx_rows) / (m * (m - 1))
    else:
        k_xx = (off - 2.0 * xx_rows + diag - xx_diag) / (m * m)
    k_xy = (xy_means.sum() - xy_means) / m
    return k_xx + k_yy - 2.0 * k_xy
