"""Reference statistics: computed once per key, loaded after, recomputed only for another key; clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.metrics import refstats as rs
from bench.metrics.frechet import FrechetStats


import metrics_support as S  # shared stand-ins; tests/ is on sys.path (not a package)


def test_same_key_loads_and_another_key_recomputes(tmp_path, monkeypatch):
    calls = []
    real_compute = rs.compute_refstats
    monkeypatch.setattr(rs, "compute_refstats", lambda *a, **k: calls.append(a[0]) or real_compute(*a, **k))
    ext = S.CountingExtractor()
    first = rs.shapes_refstats(ext, n=30, resolution=16, seed=0, cache=tmp_path, batch_size=8)
    assert ext.images_seen == 30 and len(calls) == 1
    again = rs.shapes_refstats(ext, n=30, resolution=16, seed=0, cache=tmp_path, batch_size=8)
    assert ext.images_seen == 30 and len(calls) == 1  # loaded, not recomputed
    np.testing.assert_array_equal(again.groups["all"].sum_outer, first.groups["all"].sum_outer)
    assert again.key == first.key and again.key.extractor == ext.name and again.key.resize == ext.resize
    for other in (dict(n=20, resolution=16, seed=0), dict(n=30, resolution=24, seed=0),
                  dict(n=30, resolution=16, seed=1)):
        rs.shapes_refstats(ext, cache=tmp_path, batch_size=8, **other)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.npz"))) == 4


def test_derived_values_are_computed_once_and_dropped_when_the_reference_is_recomputed(tmp_path):
    ext = S.CountingExtractor()
    ref = rs.shapes_refstats(ext, n=20, resolution=16, seed=0, cache=tmp_path, batch_size=8)
    calls = []
    assert ref.derived("x", lambda: calls.append(1) or 2.5) == 2.5
    again = rs.shapes_refstats(ext, n=20, resolution=16, seed=0, cache=tmp_path, batch_size=8)
    assert again.derived("x", lambda: calls.append(1) or 9.0) == 2.5 and calls == [1]
    ref.path.unlink()  # the reference file is gone: it is recomputed, and what was derived from it forgotten
    fresh = rs.shapes_refstats(ext, n=20, resolution=16, seed=0, cache=tmp_path, batch_size=8)
    assert fresh.derived("x", lambda: 7.0) == 7.0
    assert rs.RefStats(ref.key, ref.groups).derived("x", lambda: 1.5) == 1.5  # no file: computed each time


def test_shapes_reference_is_deterministic_and_split_by_category(tmp_path):
    ext = S.CountingExtractor()
    a = rs.shapes_refstats(ext, n=40, resolution=16, seed=0, cache=tmp_path / "a")
    b = rs.shapes_refstats(ext, n=40, resolution=16, seed=0, cache=tmp_path / "b")
    np.testing.assert_array_equal(a.features, b.features)
    cats = set(a.groups) - {"all"}
    assert cats <= {"Colors", "Counting", "Positional"} and len(cats) >= 2
    assert sum(a.groups[c].n for c in cats) == a.groups["all"].n == 40
    assert a.group_features("Colors").shape[0] == a.groups.get("Colors", a.groups["all"]).n
    assert a.stats("Rare Words")[0] == "all"  # a category the reference lacks uses the whole reference
    with np.load(tmp_path / "a" / a.key.filename()) as z:
        assert z["mu"].dtype == np.float64 and int(z["n"]) == 40 and "key" in z.files


def test_cache_root_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEN_BENCH_CACHE", str(tmp_path / "root"))
    assert rs.cache_dir() == tmp_path / "root" / "refstats"
    monkeypatch.delenv("IMAGEN_BENCH_CACHE")
    assert rs.cache_dir() == Path.home() / ".cache" / "imagen-bench" / "refstats"
    assert rs.cache_dir(tmp_path) == tmp_path


def test_a_file_holding_another_key_is_an_error_not_a_recompute(tmp_path):
    ext = S.CountingExtractor()
    ref = rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path)
    other = rs.shapes_key(ext, 12, 16)
    (tmp_path / ref.key.filename()).rename(tmp_path / other.filename())
    with pytest.raises(ValueError, match="never recomputed silently"):
        rs.shapes_refstats(ext, n=12, resolution=16, cache=tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m bench.metrics.refstats"):
        rs.shapes_refstats(ext, n=14, resolution=16, cache=tmp_path, allow_compute=False)


def test_missing_coco_images_is_a_clear_error(tmp_path):
    ext = S.CountingExtractor()
    for folder in (None, tmp_path / "nope"):
        with pytest.raises(FileNotFoundError, match="val2014.*metrics.coco_images"):
            rs.coco_refstats(ext, folder, n=5, resolution=16, cache=tmp_path)
    (tmp_path / "few").mkdir()
    S.write_png(tmp_path / "few" / "COCO_val2014_000000000001.png", np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="has 1 images.*n=5"):
        rs.coco_refstats(ext, tmp_path / "few", n=5, resolution=16, cache=tmp_path)
    assert ext.images_seen == 0


def test_coco_folder_is_centre_cropped_resized_and_cached(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 30), (40, 24), (16, 16)]):
        S.write_png(tmp_path / "val2014" / f"COCO_val2014_{i:012d}.png", rng.integers(0, 256, (h, w, 3), np.uint8))
    ext = S.CountingExtractor()
    ref = rs.coco_refstats(ext, tmp_path / "val2014", n=3, resolution=8, cache=tmp_path / "c", batch_size=2)
    assert ref.key.dataset == "coco" and ref.key.n == 3 and "centre-crop" in ref.key.resize
    assert ext.images_seen == 3
    rs.coco_refstats(ext, None, n=3, resolution=8, cache=tmp_path / "c")  # cached: no images needed
    assert ext.images_seen == 3


def test_npz_reference_must_match_the_extractor_and_plain_mu_sigma_loads(tmp_path):
    ext = S.CountingExtractor()
    ref = rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path)
    path = tmp_path / ref.key.filename()
    assert rs.npz_refstats(path, ext).key == ref.key
    other = S.CountingExtractor()
    other.name = "another-extractor"
    with pytest.raises(ValueError, match="not be comparable"):
        rs.npz_refstats(path, other)
    with pytest.raises(FileNotFoundError, match="metrics.reference"):
        rs.npz_refstats(tmp_path / "missing.npz", ext)
    x = np.random.default_rng(1).normal(size=(50, 6))
    st = FrechetStats.from_features(x)
    np.savez(tmp_path / "plain.npz", mu=st.mu, sigma=st.sigma)
    plain = rs.npz_refstats(tmp_path / "plain.npz", ext)
    np.testing.assert_allclose(plain.groups["all"].sigma, st.sigma, rtol=1e-10, atol=1e-12)
    assert plain.features is None and plain.key.n == 0


def test_real_vs_real_is_small_positive_and_shrinks_with_n():
    ext = S.CountingExtractor()
    small = rs.real_vs_real(ext, 20, 16, seed=0)
    large = rs.real_vs_real(ext, 200, 16, seed=0)
    assert 0 < large < small
    assert rs.real_vs_real(ext, 20, 16, seed=0) == small


def test_cli_computes_and_reports(tmp_path, monkeypatch, capsys):
    S.install_stub_shapes_clip(monkeypatch)
    code = rs.main(["--dataset", "shapes", "--n", "12", "--resolution", "16", "--cache-dir", str(tmp_path),
                    "--real-vs-real"])
    out = capsys.readouterr().out
    assert code == 0 and "stub-shapes-clip" in out and "real_vs_real_fd(n=12)" in out
    assert len(list(tmp_path.glob("shapes-heldout-seed0-n12-16px-*.npz"))) == 1
    code = rs.main(["--dataset", "coco", "--n", "12", "--cache-dir", str(tmp_path)])
    assert code == 2 and "metrics.coco_images" in capsys.readouterr().err
