"""Calibration by simulation: real shapes images (bench.shapes, rendered) against a reference of real
images, many independent trials at each N, with a cheap fixed extractor.

- FD: the nominal 95% jackknife interval covers the expected FD at that N (estimated as the mean
  over the trials) in at least 90% of the trials at N = 30, 90 and 360; the former percentile
  bootstrap does not.
- fd_real / fd_excess: the floor as the mean over 20 real sets lies within 5% of the expected FD of real
  images at N = 30, where one set alone misses it by more than 10% in a sizeable share of draws; for a
  perfect generator (real images) the fd_excess interval covers 0 in at least 90% of the trials.
- CMMD: the default (unbiased) estimator's expectation for real images does not depend on N, and
  one draw at N = 30 and one at N = 300 agree within their intervals; the biased (reference-code)
  estimator's floor falls with N.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.metrics.cmmd import CMMDReference
from bench.metrics import jackknife
from bench.metrics.frechet import FrechetReference, FrechetStats, fd_bootstrap, fd_jackknife
from bench.metrics.refstats import real_fd_floor, shapes_real_features

RES = 16
TRIALS = 100
SIZES = (30, 90, 360)


class PooledFeatures:
    """48-d features: 8x8 average-pooled pixels through a fixed random linear map and tanh (cheap; 48 lies
    between the smallest and the largest N, so both the Gram and the D x D route of FD are used)."""

    name, resize, dim = "pooled-random-48", "adaptive average pool to 8x8", 48

    def __init__(self) -> None:
        self.w = torch.randn(3 * 8 * 8, self.dim, generator=torch.Generator().manual_seed(0)) / 8.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(images.float() / 255.0, 8).flatten(1)
        return torch.tanh((x - 0.5) @ self.w * 4)


@pytest.fixture(scope="module")
def fd_trials():
    ext = PooledFeatures()
    ref = FrechetReference.from_stats(FrechetStats.from_features(
        shapes_real_features(ext, 2000, RES, "calibration-reference")))
    real = shapes_real_features(ext, TRIALS * max(SIZES), RES, "calibration-trials")
    return ref, real.reshape(TRIALS, max(SIZES), ext.dim)


@pytest.mark.parametrize("n", SIZES)
def test_fd_jackknife_interval_covers_the_expected_fd_at_n(fd_trials, n):
    ref, trials = fd_trials
    rows = np.array([fd_jackknife(trials[t, :n], ref, groups=50, seed=t)[:3] for t in range(TRIALS)])
    fd, lo, hi = rows.T
    expected = fd.mean()  # the expected FD at this N, from the trials
    coverage = float(np.mean((lo <= expected) & (expected <= hi)))
    assert ((lo <= fd) & (fd <= hi)).all()  # every point estimate lies inside its own interval
    assert coverage >= 0.90, f"n={n}: coverage {coverage:.2f}"
    if n == 90:  # the former interval: the percentile bootstrap lies above FD and misses the expectation
        boot = np.array([fd_bootstrap(trials[t, :n], ref, 20, seed=t) for t in range(TRIALS)])
        assert np.mean((boot[:, 0] <= expected) & (expected <= boot[:, 1])) < 0.5
        assert np.mean(boot[:, 0] > fd) > 0.9


def test_fd_real_floor_and_excess_interval_for_a_perfect_generator(fd_trials):
    ref, trials = fd_trials
    n, ext = 30, PooledFeatures()
    expected = np.mean([ref.distance_features(trials[t, :n]) for t in range(TRIALS)])
    floor_draws = real_fd_floor(ref.distance_features, ext, n, RES, [f"floor-{k}" for k in range(20)])
    floor, floor_se = floor_draws.mean(), floor_draws.std(ddof=1) / np.sqrt(len(floor_draws))
    assert abs(floor / expected - 1) < 0.05
    # one real set as the floor (the former fd_real): misses the expectation by > 10% in many draws
    assert np.mean(np.abs(floor_draws / expected - 1) > 0.10) > 0.2
    covered = []
    for t in range(TRIALS):  # each trial: real images scored as a generator's, against the 20-set floor
        fd, _, _, se, groups = fd_jackknife(trials[t, :n], ref, groups=50, seed=t)
        lo, hi = jackknife.interval(fd - floor, float(np.hypot(se, floor_se)), groups)
        covered.append(lo <= 0 <= hi)
    assert np.mean(covered) >= 0.90, np.mean(covered)


def test_cmmd_of_real_images_does_not_depend_on_n():
    ext = PooledFeatures()  # CMMD L2-normalises: a 48-d embedding (on an 8-d one the jackknife covers ~88-91%)
    ref_emb = shapes_real_features(ext, 2000, RES, "calibration-cmmd-reference")
    unbiased, biased = CMMDReference(ref_emb), CMMDReference(ref_emb, estimator="biased")
    draws = {n: shapes_real_features(ext, 40 * n, RES, f"calibration-cmmd-{n}").reshape(40, n, -1) for n in (30, 300)}
    means, ses = {}, {}
    for name, est in (("unbiased", unbiased), ("biased", biased)):
        for n, sets in draws.items():
            v = np.array([est.distance(x) for x in sets])
            means[name, n], ses[name, n] = v.mean(), v.std(ddof=1) / np.sqrt(len(v))
    se_diff = np.hypot(ses["unbiased", 30], ses["unbiased", 300])
    assert abs(means["unbiased", 30] - means["unbiased", 300]) < 3 * se_diff
    assert means["biased", 30] - means["biased", 300] > 3 * np.hypot(ses["biased", 30], ses["biased", 300])
    # one draw at each N: the two intervals overlap, each holds its point estimate
    (v30, lo30, hi30), (v300, lo300, hi300) = (unbiased.distance_ci(draws[n][0]) for n in (30, 300))
    assert lo30 <= v30 <= hi30 and lo300 <= v300 <= hi300
    assert lo30 <= hi300 and lo300 <= hi30
    # and the intervals cover the expectation (the mean over draws) in most draws at either N
    for n, sets in draws.items():
        ci = np.array([unbiased.distance_ci(x)[1:] for x in sets])
        expected = means["unbiased", n]
        assert np.mean((ci[:, 0] <= expected) & (expected <= ci[:, 1])) >= 0.85, n


def test_fd_real_draws_below_two_are_refused():
    from bench.metrics.score_run import MetricsConfig

    with pytest.raises(ValueError, match="metrics.fd_real_draws=1: expected at least 2"):
        MetricsConfig(fd_real_draws=1)
