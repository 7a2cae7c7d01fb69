"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) against a direct
implementation of the papers' formulas with plain loops."""
from __future__ import annotations

import numpy as np
import pytest

from bench.metrics.prdc import PRDCReference, knn_radii


def _direct(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    def dist(a, b):
        return float(np.sqrt(((a - b) ** 2).sum()))

    def nnd(points, i):  # distance from points[i] to its k-th nearest neighbour among the others
        return sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    r_real = [nnd(real, i) for i in range(len(real))]
    r_fake = [nnd(fake, j) for j in range(len(fake))]
    n, m = len(real), len(fake)
    precision = sum(any(dist(fake[j], real[i]) <= r_real[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(dist(real[i], fake[j]) <= r_fake[j] for j in range(m)) for i in range(n)) / n
    density = sum(sum(dist(fake[j], real[i]) <= r_real[i] for i in range(n)) for j in range(m)) / (k * m)
    coverage = sum(min(dist(real[i], fake[j]) for j in range(m)) <= r_real[i] for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k,shift,scale", [(3, 0.0, 1.0), (3, 0.8, 1.0), (5, 0.0, 0.5), (1, 0.3, 2.0)])
def test_prdc_equals_the_papers_formulas(k, shift, scale):
    rng = np.random.default_rng(k * 10 + int(shift * 10))
    real = rng.normal(size=(70, 4))
    fake = rng.normal(size=(45, 4)) * scale + shift
    got = PRDCReference(real, k).compute(fake, block=16)  # blocks of reference rows change nothing
    want = _direct(real, fake, k)
    assert got == pytest.approx(want, abs=1e-12)


def test_prdc_reads_a_shift_and_a_collapse():
    """A shifted set loses precision and density; a collapsed one (little spread) keeps precision, loses
    recall and coverage."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 3))
    ref = PRDCReference(real)
    same = ref.compute(rng.normal(size=(400, 3)))
    shifted = ref.compute(rng.normal(size=(400, 3)) + 2.0)
    collapsed = ref.compute(rng.normal(size=(400, 3)) * 0.2)
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and 0.7 < same["density"] < 1.3
    assert shifted["precision"] < same["precision"] - 0.3 and shifted["density"] < same["density"] / 2
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.5 and collapsed["coverage"] < 0.5


def test_cached_radii_and_small_sets():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(10, 3))
    radii = knn_radii(real, 3)
    assert PRDCReference(real, 3, radii).compute(fake) == PRDCReference(real, 3).compute(fake)
    assert all(np.isnan(v) for v in PRDCReference(real, 3).compute(fake[:3]).values())  # M <= k
    with pytest.raises(ValueError, match="more than 3"):
        knn_radii(real[:3], 3)
    with pytest.raises(ValueError, match="radii"):
        PRDCReference(real, 3, radii[:5])
