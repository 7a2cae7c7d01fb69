"""KID and CMMD against direct (loop) numpy implementations and torch-fidelity / torchmetrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.metrics.cmmd import CMMDReference, cmmd, rbf_kernel_sum
from bench.metrics.kid import kid


def _naive_mmd2_poly(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_equals_a_direct_implementation_with_the_same_subsets():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(30, 5)) + 0.4, rng.normal(size=(40, 5))
    mean, std, m = kid(gen, ref, subsets=4, subset_size=12, seed=3)
    assert m == 12
    r = np.random.RandomState(3)
    vals = []
    for _ in range(4):
        a = gen[r.choice(30, 12, replace=False)]
        b = ref[r.choice(40, 12, replace=False)]
        vals.append(_naive_mmd2_poly(a, b))
    assert mean == pytest.approx(np.mean(vals), rel=1e-10)
    assert std == pytest.approx(np.std(vals), rel=1e-8)
    assert mean > 0


def test_kid_equals_torch_fidelity_and_subset_size_is_capped_by_n():
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.default_rng(1)
    gen, ref = rng.normal(size=(25, 6)) + 0.2, rng.normal(size=(60, 6))
    mean, std, m = kid(gen, ref, subsets=5, subset_size=1000, seed=7)
    assert m == 25  # min(1000, 25, 60)
    tf = kid_features_to_metric(torch.from_numpy(gen), torch.from_numpy(ref), kid_subsets=5, kid_subset_size=25,
                                rng_seed=7, verbose=False)
    assert mean == pytest.approx(tf["kernel_inception_distance_mean"], rel=1e-9)
    assert std == pytest.approx(tf["kernel_inception_distance_std"], rel=1e-7)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_when_subsets_are_whole_sets():
    from torchmetrics.image.kid import KernelInceptionDistance

    class Feat(torch.nn.Module):
        num_features = 4

        def forward(self, x):
            return x.double().flatten(1)[:, :4] / 255.0

    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (20, 3, 2, 2), generator=g, dtype=torch.uint8)
    fake = torch.randint(40, 256, (20, 3, 2, 2), generator=g, dtype=torch.uint8)
    tm = KernelInceptionDistance(feature=Feat(), subsets=3, subset_size=20)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    tm_mean, _ = tm.compute()
    mean, std, _ = kid(Feat()(fake), Feat()(real), subsets=3, subset_size=20)
    assert mean == pytest.approx(float(tm_mean), rel=1e-8)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_too_few_images_is_nan():
    mean, std, m = kid(np.ones((1, 3)), np.ones((5, 3)))
    assert np.isnan(mean) and np.isnan(std) and m == 1


def _naive_cmmd(x: np.ndarray, y: np.ndarray, unbiased: bool) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * 10.0**2))  # noqa: E731

    def mean_self(z):
        n = len(z)
        terms = [k(z[i], z[j]) for i in range(n) for j in range(n) if not (unbiased and i == j)]
        return sum(terms) / (n * (n - 1) if unbiased else n * n)

    xy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return 1000.0 * (mean_self(x) + mean_self(y) - 2 * xy)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_cmmd_equals_a_direct_implementation(estimator):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(15, 6)) + 1.0, rng.normal(size=(18, 6))
    ours = cmmd(x, y, estimator=estimator)
    assert ours == pytest.approx(_naive_cmmd(x, y, estimator == "unbiased"), rel=1e-9)
    assert ours > 0


def test_cmmd_reference_code_form_and_blocks():
    """The reference code's matrix form (jnp.mean of exp(-gamma * squared distances)) gives the same number."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(33, 8)), rng.normal(size=(21, 8)) + 0.5
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1 / (2 * 10**2)
    d = lambda a, b: (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T  # noqa: E731
    expected = 1000 * (np.exp(-gamma * d(xn, xn)).mean() + np.exp(-gamma * d(yn, yn)).mean()
                       - 2 * np.exp(-gamma * d(xn, yn)).mean())
    # the reference code's estimator is "biased" (V-statistic); the default here is "unbiased"
    assert cmmd(x, y, estimator="biased") == pytest.approx(expected, rel=1e-9)
    assert rbf_kernel_sum(xn, yn, block=4) == pytest.approx(rbf_kernel_sum(xn, yn), rel=1e-12)
    ref = CMMDReference(y, estimator="biased")
    assert ref.distance(x) == pytest.approx(cmmd(x, y, estimator="biased"), rel=1e-12)
    assert abs(cmmd(x, x, estimator="biased")) < 1e-9
    with pytest.raises(ValueError):
        CMMDReference(y, estimator="median")


def test_cmmd_reference_with_a_given_self_term_equals_the_computed_one():
    from bench.metrics.cmmd import reference_self_mean

    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(20, 6)), rng.normal(size=(50, 6)) + 0.2
    for est in ("biased", "unbiased"):
        k = reference_self_mean(y, estimator=est)
        assert CMMDReference(y, estimator=est, k_yy=k).distance(x) == CMMDReference(y, estimator=est).distance(x)


def test_kid_reference_reuses_draws_and_reference_sums_across_rows_of_equal_size():
    from bench.metrics.kid import KIDReference

    rng = np.random.default_rng(4)
    ref = rng.normal(size=(200, 16))
    rows = [rng.normal(size=(30, 16)) + 0.1 * k for k in range(3)] + [rng.normal(size=(45, 16))]
    kref = KIDReference(ref)
    for x in rows:
        for size in (1000, 20):  # m = n (every subset is all of x) and m < n
            got = kref.kid(x, subsets=7, subset_size=size, seed=2)
            want = kid(x, ref, subsets=7, subset_size=size, seed=2)
            assert got[2] == want[2]
            assert got[0] == pytest.approx(want[0], rel=1e-12) and got[1] == pytest.approx(want[1], rel=1e-10)
    assert len(kref._memo) == 4  # (30, 30), (30, 20), (45, 45), (45, 20): three rows of 30 share theirs


def _direct_jackknife_se(values: list[float]) -> float:
    v = np.asarray(values)
    n = v.size
    return float(np.sqrt((n - 1) / n * ((v - v.mean()) ** 2).sum()))


def _naive_complete_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2, cubic kernel, all of x against all of y (loops)."""
    n, m, d = len(x), len(y), x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_kid_se_is_the_leave_one_out_jackknife_of_the_complete_statistic():
    from bench.metrics.kid import KIDReference

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(14, 4)) + 0.3, rng.normal(size=(25, 4))
    loo = [_naive_complete_kid(np.delete(x, i, axis=0), y) for i in range(len(x))]
    assert KIDReference(y).standard_error(x) == pytest.approx(_direct_jackknife_se(loo), rel=1e-8)
    assert np.isnan(KIDReference(y).standard_error(x[:2]))


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_cmmd_interval_is_the_leave_one_out_jackknife(estimator):
    from scipy import stats

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(12, 5)) + 0.5, rng.normal(size=(20, 5))
    ref = CMMDReference(y, estimator=estimator)
    value, lo, hi = ref.distance_ci(x)
    assert value == pytest.approx(_naive_cmmd(x, y, estimator == "unbiased"), rel=1e-9)
    loo = [_naive_cmmd(np.delete(x, i, axis=0), y, estimator == "unbiased") for i in range(len(x))]
    half = stats.t.ppf(0.975, len(x) - 1) * _direct_jackknife_se(loo)
    assert (lo, hi) == pytest.approx((value - half, value + half), rel=1e-7)
    assert np.isnan(ref.distance_ci(x[:2])[1]) and np.isnan(ref.distance_ci(x[:1])[0])
