"""Reference statistics: computed once per key, loaded after, recomputed only for another key; clear errors."""
from __future__ import annotations

from pathlib import Path

import hashlib
import random

import numpy as np
import pytest
import torch

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



# ---- complete keys: every input that changes the numbers is part of the key --------------------------------

def _coco_folder(folder: Path, seed: int, sizes=((20, 30), (40, 24), (16, 16))) -> Path:
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        S.write_png(folder / f"COCO_val2014_{i:012d}.png", rng.integers(0, 256, (h, w, 3), np.uint8))
    return folder


def _with(**attrs) -> S.CountingExtractor:
    ext = S.CountingExtractor()
    for k, v in attrs.items():
        setattr(ext, k, v)
    return ext


def test_each_input_of_the_shapes_key_changes_it(monkeypatch):
    ext = S.CountingExtractor()
    base = rs.shapes_key(ext, 100, 64)
    assert base.source == f"scene-v{rs.SCENE_VERSION} render-v{rs.RENDER_VERSION}"
    assert (base.weights, base.device, base.dtype) == ("", "cpu", "float32")  # a stand-in without those attributes
    assert rs.shapes_key(S.CountingExtractor(), 100, 64) == base
    assert base.describe() == "shapes/heldout-seed0 n=100 64px"  # metrics.csv's fd_reference stays short
    changed = {}
    with monkeypatch.context() as m:
        m.setattr(rs, "RENDER_VERSION", rs.RENDER_VERSION + 1)
        changed["render"] = rs.shapes_key(ext, 100, 64)
    with monkeypatch.context() as m:
        m.setattr(rs, "SCENE_VERSION", rs.SCENE_VERSION + 1)
        changed["scene"] = rs.shapes_key(ext, 100, 64)
    changed["weights"] = rs.shapes_key(_with(weights="sha256:0123456789abcdef"), 100, 64)
    changed["weights2"] = rs.shapes_key(_with(weights="sha256:fedcba9876543210"), 100, 64)
    changed["device"] = rs.shapes_key(_with(device=torch.device("cuda")), 100, 64)
    changed["dtype"] = rs.shapes_key(_with(dtype=torch.float16), 100, 64)
    assert changed["device"].device == "cuda" and changed["dtype"].dtype == "float16"
    # the device *type* is what changes the numbers, not which card
    assert rs.shapes_key(_with(device="cuda:1"), 100, 64) == changed["device"]
    keys = [base, *changed.values()]
    assert len(set(keys)) == len({k.filename() for k in keys}) == len(keys)
    for k in keys:  # readable names; only the short hash tells them apart
        assert k.filename().startswith("shapes-heldout-seed0-n100-64px-counting_test_extractor-")


def test_a_bumped_renderer_version_recomputes_and_old_files_are_left_alone(tmp_path, monkeypatch):
    ext = S.CountingExtractor()
    old_key = rs.RefKey("shapes", "heldout-seed0", 10, 16, ext.name, ext.resize)  # a key from before the new fields
    assert rs.RefKey.from_json(old_key.to_json()) == old_key
    first = rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path)
    old = rs.RefStats(old_key, first.groups)
    old.save(tmp_path / old_key.filename())
    assert old_key.filename() != first.key.filename()
    assert rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path).key == first.key and ext.images_seen == 10
    monkeypatch.setattr(rs, "RENDER_VERSION", rs.RENDER_VERSION + 1)
    bumped = rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path)
    assert ext.images_seen == 20 and bumped.key.source.endswith(f"render-v{rs.RENDER_VERSION}")
    assert len(list(tmp_path.glob("*.npz"))) == 3  # old-format, v1 and v2 files side by side, none rewritten
    assert rs.RefStats.load(tmp_path / old_key.filename()).key == old_key


def test_shapes_versions_pin_the_scenes_and_pixels():
    """Guard for SCENE_VERSION / RENDER_VERSION: when this fails, scenes or pixels changed, so cached shapes
    references no longer describe the images: bump the version in bench/shapes/scene.py or render.py, and
    update the pinned digest here (a Pillow upgrade that redraws shapes differently counts too)."""
    from bench.shapes import render_batch, sample_scene
    from bench.shapes.render import RENDER_VERSION
    from bench.shapes.scene import SCENE_VERSION

    rng = random.Random("shapes-version-guard")
    scenes = [sample_scene(rng) for _ in range(60)]
    scene_digest = hashlib.sha256("\n".join(s.to_json() for s in scenes).encode()).hexdigest()[:16]
    pixel_digest = hashlib.sha256(b"".join(render_batch(scenes[:12], r).tobytes() for r in (16, 64))).hexdigest()[:16]
    assert {SCENE_VERSION: scene_digest} == {1: "241a788a4ee71b31"}
    assert {RENDER_VERSION: pixel_digest} == {1: "7f5c69b9ce5f6d15"}


def test_coco_key_names_the_files_read(tmp_path):
    ext = S.CountingExtractor()
    a = rs.coco_image_paths(_coco_folder(tmp_path / "a", seed=0), 3)
    key = rs.coco_key(ext, a, 8)
    assert key.source.startswith("names+sizes sha256:") and key.n == 3
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in a:
        (copy / p.name).write_bytes(p.read_bytes())
    assert rs.coco_key(ext, rs.coco_image_paths(copy, 3), 8) == key  # the same images elsewhere: the same key
    (copy / a[1].name).rename(copy / "COCO_val2014_000000000007.png")  # another listing
    renamed = rs.coco_key(ext, rs.coco_image_paths(copy, 3), 8)
    _coco_folder(tmp_path / "b", seed=1, sizes=((20, 30), (40, 24), (16, 17)))  # another image, same names
    other = rs.coco_key(ext, rs.coco_image_paths(tmp_path / "b", 3), 8)
    assert len({key, renamed, other}) == 3
    assert len({key.filename(), renamed.filename(), other.filename()}) == 3


def test_another_coco_folder_of_the_same_size_is_read_not_served_the_first_ones_stats(tmp_path):
    ext = S.CountingExtractor()
    a = _coco_folder(tmp_path / "a", seed=0)
    b = _coco_folder(tmp_path / "b", seed=1, sizes=((30, 20), (24, 40), (17, 16)))  # same N, names, resolution
    cache = tmp_path / "cache"
    ref_a = rs.coco_refstats(ext, a, n=3, resolution=8, cache=cache)
    assert ext.images_seen == 3
    ref_b = rs.coco_refstats(ext, b, n=3, resolution=8, cache=cache)
    assert ext.images_seen == 6  # read and computed, not the first folder's file
    assert ref_a.key != ref_b.key and ref_a.key.filename() != ref_b.key.filename()
    assert not np.allclose(ref_a.groups["all"].mu, ref_b.groups["all"].mu)
    assert rs.coco_refstats(ext, a, n=3, resolution=8, cache=cache).key == ref_a.key and ext.images_seen == 6
    # the same folder, its images replaced by others: recomputed too
    _coco_folder(a, seed=2, sizes=((21, 30), (40, 25), (15, 16)))
    ref_a2 = rs.coco_refstats(ext, a, n=3, resolution=8, cache=cache)
    assert ext.images_seen == 9 and ref_a2.key != ref_a.key
    # without a folder, an ambiguous cache is an error naming the setting, not a guess
    with pytest.raises(ValueError, match="metrics.coco_images"):
        rs.coco_refstats(ext, None, n=3, resolution=8, cache=cache)
    with pytest.raises(FileNotFoundError, match="metrics.coco_images"):
        rs.coco_refstats(ext, None, n=3, resolution=16, cache=cache)


def test_shipped_shapes_clip_weights_are_in_the_key_though_not_in_the_name(tmp_path):
    from bench.metrics.extractors import ShapesClipExtractor, weights_digest
    from bench.shapes_clip.model import DEFAULT_WEIGHTS, ShapesClip, save_shapes_clip

    shipped = ShapesClipExtractor(None, "cpu")
    key = rs.shapes_key(shipped, 100, 64)
    assert shipped.name == "shapes-clip-v1/fd" and key.extractor == shipped.name
    assert key.weights == weights_digest(DEFAULT_WEIGHTS) and key.weights.startswith("sha256:")
    assert (key.device, key.dtype) == ("cpu", "float32")
    assert rs.shapes_key(shipped.with_features("embedding"), 100, 64).weights == key.weights
    torch.manual_seed(1)
    save_shapes_clip(ShapesClip(), tmp_path / "retrained.safetensors")
    retrained = rs.shapes_key(ShapesClipExtractor(tmp_path / "retrained.safetensors", "cpu"), 100, 64)
    assert retrained.weights == weights_digest(tmp_path / "retrained.safetensors") != key.weights


def test_npz_reference_with_other_weights_is_refused(tmp_path):
    ext = _with(weights="sha256:0123456789abcdef")
    ref = rs.shapes_refstats(ext, n=10, resolution=16, cache=tmp_path)
    assert rs.npz_refstats(tmp_path / ref.key.filename(), ext).key == ref.key
    with pytest.raises(ValueError, match="weights"):
        rs.npz_refstats(tmp_path / ref.key.filename(), _with(weights="sha256:fedcba9876543210"))
