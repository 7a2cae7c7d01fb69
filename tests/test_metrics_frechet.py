"""Fréchet distance: agreement with torchmetrics, invariances, additive states, dtype, bootstrap."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.bootstrap import bootstrap_mean_ci, percentile_interval
from bench.metrics.frechet import FrechetReference, FrechetStats, fd_bootstrap, frechet_distance


class LinearFeatures(torch.nn.Module):
    """A custom feature module for torchmetrics: uint8 (N, 3, 8, 8) -> float64 (N, 12)."""

    num_features = 12

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 8 * 8, 12, generator=g, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(images.double().flatten(1) / 255.0 @ self.w / 4)


def _images(n: int, seed: int, shift: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 200, (n, 3, 8, 8), generator=g) + shift).clamp(0, 255).to(torch.uint8)


def test_fd_matches_torchmetrics_with_the_same_custom_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    feat = LinearFeatures()
    real, fake = _images(60, 1), _images(50, 2, shift=30)
    tm = FrechetInceptionDistance(feature=feat)
    tm.update(real[:25], real=True)
    tm.update(real[25:], real=True)
    tm.update(fake, real=False)
    expected = float(tm.compute())

    with torch.no_grad():
        ref = FrechetStats.from_features(feat(real))
        gen = FrechetStats(12).update(feat(fake[:20])).update(feat(fake[20:]))
    ours = gen.compute(ref)
    assert expected > 0.1
    assert ours == pytest.approx(expected, rel=1e-6)


def test_identical_sets_give_zero_and_fd_is_symmetric():
    x = np.random.default_rng(0).normal(size=(200, 10))
    y = np.random.default_rng(1).normal(loc=0.3, size=(150, 10))
    s = FrechetStats.from_features(x)
    assert abs(s.compute(FrechetStats.from_features(x))) < 1e-9
    a, b = FrechetStats.from_features(x), FrechetStats.from_features(y)
    assert a.compute(b) == pytest.approx(b.compute(a), rel=1e-9)
    assert a.compute(b) > 0.5


def test_merging_halves_equals_the_whole_and_reset_empties():
    x = np.random.default_rng(2).normal(size=(101, 7))
    ref = FrechetStats.from_features(np.random.default_rng(3).normal(size=(80, 7)))
    whole = FrechetStats.from_features(x)
    merged = FrechetStats.from_features(x[:40]).merge(FrechetStats.from_features(x[40:]))
    assert merged.n == whole.n == 101
    np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12)
    np.testing.assert_allclose(merged.sum_outer, whole.sum_outer, rtol=1e-12)
    assert merged.compute(ref) == pytest.approx(whole.compute(ref), rel=1e-10)
    merged.reset()
    assert merged.n == 0 and not merged.sum.any() and not merged.sum_outer.any()
    with pytest.raises(ValueError):
        merged.merge(FrechetStats(3))


def test_float32_inputs_give_the_float64_result_of_the_same_values():
    x32 = np.random.default_rng(4).normal(loc=100.0, size=(300, 6)).astype(np.float32)
    y32 = np.random.default_rng(5).normal(loc=100.2, size=(300, 6)).astype(np.float32)
    ref = FrechetStats.from_features(y32.astype(np.float64))
    fd64 = FrechetStats.from_features(x32.astype(np.float64)).compute(ref)
    fd32 = FrechetStats.from_features(x32).compute(ref)
    fd_torch32 = FrechetStats.from_features(torch.from_numpy(x32)).compute(ref)
    assert fd32 == fd64 == fd_torch32
    assert FrechetStats.from_features(x32).sum.dtype == np.float64


def test_save_load_roundtrip_and_mu_sigma_pair(tmp_path):
    x = np.random.default_rng(6).normal(size=(50, 5))
    s = FrechetStats.from_features(x)
    s.save(tmp_path / "s.npz", meta={"what": "test"})
    t = FrechetStats.load(tmp_path / "s.npz")
    assert t.n == 50
    np.testing.assert_array_equal(t.sum_outer, s.sum_outer)
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-10)
    other = FrechetStats.from_features(x + 0.5)
    assert other.compute((t.mu, t.sigma)) == pytest.approx(other.compute(s), rel=1e-12)
    with np.load(tmp_path / "s.npz") as z:
        assert z["mu"].dtype == np.float64 and z["sigma"].shape == (5, 5)


def test_singular_covariances_still_give_a_finite_distance():
    x = np.random.default_rng(7).normal(size=(5, 20))  # n < d: rank-deficient covariance
    y = np.random.default_rng(8).normal(size=(6, 20))
    fd = FrechetStats.from_features(x).compute(FrechetStats.from_features(y))
    assert np.isfinite(fd) and fd > 0


def test_eigh_path_equals_sqrtm_path():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(400, 16)), rng.normal(scale=1.3, size=(300, 16)) + 0.2
    sx, sy = FrechetStats.from_features(x), FrechetStats.from_features(y)
    ref = FrechetReference.from_stats(sy)
    # n = 400 > D = 16: the D x D form of the eigenproblem
    assert ref.distance_features(x) == pytest.approx(frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma), rel=1e-8)


def test_fd_bootstrap_is_seeded_and_brackets_resampled_values():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(120, 8)) + 0.3, rng.normal(size=(500, 8))
    ref = FrechetReference.from_stats(FrechetStats.from_features(y))
    lo, hi = fd_bootstrap(x, ref, 40, seed=1)
    assert (lo, hi) == fd_bootstrap(x, ref, 40, seed=1)
    assert 0 < lo < hi
    assert lo != fd_bootstrap(x, ref, 40, seed=2)[0]
    assert np.isnan(fd_bootstrap(x, ref, 0)[0])


def test_bootstrap_mean_ci():
    v = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_mean_ci(v, 2000, seed=0)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45
    assert bootstrap_mean_ci(v, 2000, seed=0) == (lo, hi)
    assert bootstrap_mean_ci(np.array([5.0]), 100) == (5.0, 5.0)
    assert np.isnan(bootstrap_mean_ci(np.array([]), 100)[0])
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))


@pytest.mark.parametrize("n,d", [(12, 40), (40, 40), (300, 16)])
def test_feature_form_equals_sqrtm_below_and_above_the_feature_dim(n, d):
    """The Gram form (n < D) and the D x D form give scipy-sqrtm's FD."""
    rng = np.random.default_rng(n + d)
    y = rng.normal(size=(500, d)) @ rng.normal(size=(d, d)) * 0.2
    x = rng.normal(size=(n, d)) + 0.4
    sx, sy = FrechetStats.from_features(x), FrechetStats.from_features(y)
    ref = FrechetReference.from_stats(sy)
    assert ref.distance_features(x) == pytest.approx(frechet_distance(sx.mu, sx.sigma, sy.mu, sy.sigma), rel=1e-7)


def test_weighted_distances_equal_fd_of_the_duplicated_images():
    """Counts c are a resample: image i drawn c_i times; chunking does not change the values."""
    from bench.metrics.bootstrap import resample_count_matrix

    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(30, 10)), rng.normal(size=(200, 10)) + 0.1
    ref = FrechetReference.from_stats(FrechetStats.from_features(y))
    counts = resample_count_matrix(30, 7, seed=3)
    got = ref.weighted_distances(x, counts)
    for c, v in zip(counts, got):
        dup = np.repeat(x, c.astype(int), axis=0)
        assert v == pytest.approx(ref.distance_features(dup), rel=1e-9)
    np.testing.assert_allclose(ref.weighted_distances(x, counts, max_bytes=1), got, rtol=1e-12)


def test_count_matrix_draws_the_same_resamples_as_the_generator():
    from bench.metrics.bootstrap import resample_count_matrix

    rng = np.random.default_rng(4)
    expected = np.stack([np.bincount(rng.integers(0, 23, 23), minlength=23) for _ in range(50)])
    np.testing.assert_array_equal(resample_count_matrix(23, 50, seed=4), expected)
    np.testing.assert_array_equal(resample_count_matrix(23, 50, seed=4, max_elements=40), expected)


def test_torch_and_numpy_updates_give_the_same_state():
    x = torch.randn(64, 9, generator=torch.Generator().manual_seed(5))
    a = FrechetStats(9).update(x[:30]).update(x[30:])
    b = FrechetStats(9).update(x.double().numpy())
    assert a.n == b.n == 64
    np.testing.assert_allclose(a.sum_outer, b.sum_outer, rtol=1e-12)
    np.testing.assert_allclose(a.sum, b.sum, rtol=1e-12)
    with pytest.raises(ValueError, match="dim"):
        a.update(torch.randn(3, 8))
    with pytest.raises(ValueError, match="2-D"):
        a.update(torch.randn(3, 9, 1))


@pytest.mark.parametrize("n,d", [(20, 12), (60, 12)])
def test_zero_one_weights_give_the_fd_of_the_subset(n, d):
    """Subsets (jackknife groups, FD-infinity subsets) are 0/1 weightings summing to fewer than n images."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, d)) + 0.2, rng.normal(size=(300, d))
    ref = FrechetReference.from_stats(FrechetStats.from_features(y))
    masks = (rng.random((5, n)) < 0.6).astype(float)
    for c, v in zip(masks, ref.weighted_distances(x, masks)):
        sub = FrechetStats.from_features(x[c > 0])
        assert v == pytest.approx(frechet_distance(sub.mu, sub.sigma, ref.mu, ref.sigma), rel=1e-7)


def test_fd_jackknife_equals_a_direct_delete_a_group_jackknife():
    from scipy import stats

    from bench.metrics.frechet import fd_jackknife
    from bench.metrics.jackknife import group_masks

    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(47, 6)) + 0.3, rng.normal(size=(400, 6))
    ref = FrechetReference.from_stats(FrechetStats.from_features(y))
    fd, lo, hi, se, g = fd_jackknife(x, ref, groups=10, seed=5)
    masks = group_masks(47, 10, seed=5)
    assert g == 10 and sorted((1 - masks).sum(axis=1)) == [4] * 3 + [5] * 7 and ((1 - masks).sum(axis=0) == 1).all()
    theta = np.array([FrechetStats.from_features(x[m > 0]).compute(FrechetStats.from_features(y)) for m in masks])
    direct = np.sqrt(9 / 10 * ((theta - theta.mean()) ** 2).sum())
    assert se == pytest.approx(direct, rel=1e-6)
    assert fd == pytest.approx(ref.distance_features(x), rel=1e-12)
    assert hi - fd == pytest.approx(stats.t.ppf(0.975, 9) * direct, rel=1e-6) and lo <= fd <= hi
    assert fd_jackknife(x, ref, groups=10, seed=5) == (fd, lo, hi, se, g)  # seeded
    assert fd_jackknife(x, ref, groups=1000)[4] == 47                     # G = min(groups, N): leave-one-out
    assert np.isnan(fd_jackknife(x[:2], ref)[1]) and np.isnan(fd_jackknife(x[:1], ref)[0])


def test_fd_inf_removes_the_small_n_bias_on_gaussians():
    """Chong & Forsyth 2020: FD at N is biased upward by ~c/N; FD-infinity extrapolates it away. Gaussian data
    against the exact population statistics: the true FD is ||delta||^2 = 0.5."""
    from bench.metrics.frechet import fd_inf, fd_inf_sizes

    d, delta = 8, np.full(8, 0.25)
    ref = FrechetReference(np.zeros(d), np.eye(d))
    rng = np.random.default_rng(13)
    fds, infs = [], []
    for t in range(12):
        x = rng.normal(size=(200, d)) + delta
        fds.append(ref.distance_features(x))
        infs.append(fd_inf(x, ref, min_n=100, seed=t))
    bias_fd, bias_inf = np.mean(fds) - 0.5, np.mean(infs) - 0.5
    assert bias_fd > 0.02 and abs(bias_inf) < bias_fd / 3
    assert np.isnan(fd_inf(x[:99], ref, min_n=100))
    sizes = fd_inf_sizes(200, 100)
    assert sizes[0] == 50 and sizes[-1] == 200 and len(sizes) == 15
