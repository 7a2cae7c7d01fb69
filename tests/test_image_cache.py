"""The per-image results of the metric phase (``RUN/image_metrics.safetensors``): a rescore embeds and
checks only what it has not seen, and its numbers equal a fresh scoring bit for bit."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import metrics_support as S  # shared stand-ins; tests/ is on sys.path (not a package)
from bench.metrics import score_run as sr
from bench.metrics.image_cache import FILE, ImageCache
from bench.metrics.score_run import MetricsConfig, score_run


def _cfg(tmp_path: Path, **kw) -> MetricsConfig:
    base = dict(ref_n=60, cache_dir=str(tmp_path / "refcache"), bootstrap=200, fd_bootstrap=10, kid_subsets=5,
                batch_size=4, workers=2, device="cpu")
    return MetricsConfig(**{**base, **kw})


def _seen(stub) -> int:
    return sum(m.images_seen for m in stub.loaded)


@pytest.fixture
def counted_scorer(monkeypatch):
    """Counts the exact scorer's calls (the real scorer underneath)."""
    from bench.shapes import detect

    calls, real = [], detect.score

    def score(image, scene, detections=None):
        calls.append(1)
        return real(image, scene, detections)

    monkeypatch.setattr(detect, "score", score)
    return calls


def _fresh(run: Path, cfg: MetricsConfig) -> pd.DataFrame:
    """The table of a scoring that starts with no image cache (the file moved aside, then put back)."""
    aside = run.parent / "aside.safetensors"
    (run / FILE).rename(aside)
    try:
        return score_run(run, cfg)
    finally:
        aside.replace(run / FILE)


def test_rescore_embeds_and_checks_nothing_and_writes_the_same_table(tmp_path, monkeypatch, counted_scorer):
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0, 3.0), per_category=3)
    cfg = _cfg(tmp_path)
    table = score_run(run, cfg)
    assert (run / FILE).is_file()
    seen, checked = _seen(stub), len(counted_scorer)
    assert checked == len(man)
    again = score_run(run, cfg)
    assert _seen(stub) - seen == 0  # no image embedded again (fd_real is cached beside the reference)
    assert len(counted_scorer) == checked  # no image checked again
    pd.testing.assert_frame_equal(again, table)


def test_image_scores_csv_has_one_row_per_image_and_agrees_with_metrics(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0, 3.0), per_category=3)
    table = score_run(run, _cfg(tmp_path))
    per = pd.read_csv(run / "image_scores.csv")
    assert list(per["path"]) == list(man["path"])
    assert {"prompt_id", "guidance_weight", "category", "clip_score", "correct", "color_correct"} <= set(per)
    rows = table.set_index(["guidance_weight", "category"])
    for (w, cat), g in per.groupby(["guidance_weight", "category"]):
        assert rows.loc[(w, cat), "alignment"] == pytest.approx(g["correct"].mean())
        assert rows.loc[(w, cat), "clip_score"] == pytest.approx(g["clip_score"].mean())
    assert per.loc[per.guidance_weight == 1.0, "correct"].all()  # exact renders


def test_a_replaced_image_is_embedded_again_with_its_batch_only(tmp_path, monkeypatch, counted_scorer):
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0, 3.0), per_category=3)  # 18 images, batches of 4
    cfg = _cfg(tmp_path, real_baseline=False)
    before = score_run(run, cfg)
    # image 5 (second batch) replaced by another image of the run
    (run / man["path"][5]).write_bytes((run / man["path"][12]).read_bytes())
    seen, checked = _seen(stub), len(counted_scorer)
    table = score_run(run, cfg)
    assert _seen(stub) - seen == 2 * 4       # one batch, fd and embedding views
    assert len(counted_scorer) - checked == 1  # only the new image's verdict (its batch-mates' are kept)
    assert not table.equals(before)
    pd.testing.assert_frame_equal(table, _fresh(run, cfg))


def test_features_are_reused_only_for_the_same_batch_composition(tmp_path, monkeypatch):
    """CPU kernels differ with batch shape: another batch size recomputes every feature."""
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0,), per_category=3)
    score_run(run, _cfg(tmp_path, real_baseline=False))
    seen = _seen(stub)
    cfg = _cfg(tmp_path, real_baseline=False, batch_size=5)
    table = score_run(run, cfg)
    assert _seen(stub) - seen == 2 * len(man)
    pd.testing.assert_frame_equal(table, _fresh(run, cfg))


def test_another_extractor_never_reads_the_cached_features(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=2)
    score_run(run, _cfg(tmp_path, real_baseline=False))
    cache = ImageCache.load(run)
    assert len(cache.features) == 2  # the fd view and the embedding view
    renamed = {k.replace("stub-shapes-clip", "other-weights"): v for k, v in cache.features.items()}
    digest, batch = next(iter(next(iter(cache.features.values()))))
    for k in renamed:
        assert cache.feature(k, digest, batch) is None
    assert all(cache.feature(k, digest, batch) is not None for k in cache.features)


def test_a_damaged_cache_file_is_ignored_with_a_warning_and_rewritten(tmp_path, monkeypatch, caplog):
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0,), per_category=2)
    cfg = _cfg(tmp_path, real_baseline=False)
    table = score_run(run, cfg)
    data = (run / FILE).read_bytes()
    (run / FILE).write_bytes(data[: len(data) // 2])  # truncated
    seen = _seen(stub)
    with caplog.at_level(logging.WARNING):
        again = score_run(run, cfg)
    assert "ignoring" in caplog.text and FILE in caplog.text
    assert _seen(stub) - seen == 2 * len(man)
    pd.testing.assert_frame_equal(again, table)
    assert len(ImageCache.load(run).features) == 2  # rewritten whole


def test_an_interrupted_image_pass_keeps_the_batches_it_finished(tmp_path, monkeypatch):
    """The cache is flushed during the pass: a crash after some batches loses only the rest."""
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0, 3.0), per_category=3)  # 18 images, 5 batches of 4
    cfg = _cfg(tmp_path, real_baseline=False)
    monkeypatch.setattr(sr, "FLUSH_S", -1.0)  # flush after every batch
    real = sr.decode_chunks

    def crash_after_three(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(sr, "decode_chunks", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        score_run(run, cfg)
    assert not (run / "metrics.csv").exists()
    monkeypatch.setattr(sr, "decode_chunks", real)
    seen = _seen(stub)
    table = score_run(run, cfg)
    assert _seen(stub) - seen == 2 * (len(man) - 3 * 4)  # the two batches never finished
    pd.testing.assert_frame_equal(table, _fresh(run, cfg))


def test_save_and_load_round_trip(tmp_path):
    c = ImageCache()
    x = np.arange(6, dtype=np.float32)
    c.put_feature('{"name": "e"}', "a" * 64, "b" * 64, x)
    c.put_verdict("a" * 64, "s" * 64, {"correct": True, "detections": "[]"})
    c.save(tmp_path)
    d = ImageCache.load(tmp_path)
    np.testing.assert_array_equal(d.feature('{"name": "e"}', "a" * 64, "b" * 64), x)
    assert d.verdict("a" * 64, "s" * 64) == {"correct": True, "detections": "[]"}
    assert d.feature('{"name": "e"}', "a" * 64, "c" * 64) is None
    assert len(ImageCache.load(tmp_path / "nowhere")) == 0


def test_an_unchanged_cache_is_not_rewritten(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=2)
    cfg = _cfg(tmp_path, real_baseline=False)
    score_run(run, cfg)
    before = (run / FILE).stat().st_mtime_ns, (run / FILE).stat().st_ino
    score_run(run, cfg)
    assert ((run / FILE).stat().st_mtime_ns, (run / FILE).stat().st_ino) == before
