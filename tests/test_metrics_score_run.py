"""score_run on small fake run directories: the metrics.csv contract, labels, empties, fail-fast errors."""
from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.metrics.score_run import COLUMNS, MetricsConfig, score_run

REPO = Path(__file__).resolve().parents[1]


import metrics_support as S  # shared stand-ins; tests/ is on sys.path (not a package)


def _cfg(tmp_path: Path, **kw) -> MetricsConfig:
    base = dict(ref_n=60, cache_dir=str(tmp_path / "refcache"), bootstrap=200, fd_bootstrap=10, kid_subsets=5,
                batch_size=8, workers=2, device="cpu")
    return MetricsConfig(**{**base, **kw})


def test_config_mirrors_the_yaml_files():
    d = yaml.safe_load((REPO / "conf" / "metrics" / "default.yaml").read_text())
    assert set(d) == {f.name for f in dataclasses.fields(MetricsConfig)}
    assert dataclasses.asdict(MetricsConfig.from_dict(d)) == dataclasses.asdict(MetricsConfig())
    none = MetricsConfig.from_dict(yaml.safe_load((REPO / "conf" / "metrics" / "none.yaml").read_text()))
    assert none.enabled is False
    with pytest.raises(ValueError, match="unknown metrics config keys"):
        MetricsConfig.from_dict({"fd_extractr": "inception"})
    with pytest.raises(ValueError, match="metrics.fd_extractor"):
        MetricsConfig(fd_extractor="dinov2")


def test_shapes_run_gives_one_row_per_weight_and_category(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    man = S.make_run(run, weights=(1.0, 3.0), size=48, per_category=3)
    table = score_run(run, _cfg(tmp_path))

    on_disk = pd.read_csv(run / "metrics.csv")
    assert list(on_disk.columns) == COLUMNS
    assert (run / "metrics.json").is_file()
    keys = list(zip(on_disk["guidance_weight"], on_disk["category"]))
    assert keys == [(w, c) for w in (1.0, 3.0) for c in ("all", "Colors", "Counting", "Positional")]
    assert on_disk.loc[on_disk.category == "all", "num_images"].tolist() == [9, 9]
    assert on_disk.loc[on_disk.category != "all", "num_images"].tolist() == [3] * 6
    assert len(table) == 8 and not table["out_of_domain"].any()

    a = on_disk[on_disk.category == "all"].set_index("guidance_weight")
    assert (a["fd"] > 0).all() and (a["fd_ci_low"] <= a["fd_ci_high"]).all()
    assert (a["fd_real"] > 0).all()
    assert a["fd_extractor"].eq("stub-shapes-clip/fd").all()
    assert a["fd_reference"].str.startswith("shapes/heldout-seed0 n=60 48px [all: n=60]").all()
    assert on_disk.loc[on_disk.category == "Colors", "fd_reference"].str.contains(r"\[Colors: n=").all()
    assert a["kid"].notna().all() and (a["kid_std"] >= 0).all() and a["kid_subset_size"].eq(9).all()
    assert a["cmmd"].notna().all() and a["cmmd_model"].eq("stub-shapes-clip").all()
    assert a["clip_model"].eq("stub-shapes-clip").all()
    assert ((a["clip_score"] >= 0) & (a["clip_score"] <= 100)).all()
    assert (a["clip_score_ci_low"] <= a["clip_score"]).all() and (a["clip_score"] <= a["clip_score_ci_high"]).all()

    # ground-truth renders at w=1 are aligned (exact detector); other scenes at w=3 mostly are not
    w1 = on_disk[on_disk.guidance_weight == 1.0]
    assert w1["alignment"].eq(1.0).all() and w1["color_alignment"].eq(1.0).all()
    assert a.loc[3.0, "alignment"] < 1.0
    assert a.loc[3.0, "alignment_ci_low"] <= a.loc[3.0, "alignment"] <= a.loc[3.0, "alignment_ci_high"]

    # rescoring is deterministic (seeded bootstrap and KID subsets, cached reference)
    again = score_run(run, _cfg(tmp_path))
    pd.testing.assert_frame_equal(again, table)
    assert len(man) == 18


def test_rescoring_loads_reference_stats_instead_of_recomputing(tmp_path, monkeypatch):
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=2)
    score_run(run, _cfg(tmp_path, real_baseline=False))
    first = sum(m.images_seen for m in stub.loaded)
    score_run(run, _cfg(tmp_path, real_baseline=False))
    second = sum(m.images_seen for m in stub.loaded) - first
    assert first == 6 + 2 * 60 + 6  # run images (fd + embedding views) and two references
    assert second == 0               # references from refcache/, the run's own images from its image cache


def test_real_baseline_and_cmmd_reference_term_are_cached_with_the_reference(tmp_path, monkeypatch):
    """fd_real (FD of N real images) and CMMD's K_yy depend on the reference only: a rescore reads them
    from <reference>.derived.json instead of rendering and embedding real images again."""
    stub = S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=2)
    first_table = score_run(run, _cfg(tmp_path))
    first = sum(m.images_seen for m in stub.loaded)
    sides = list((tmp_path / "refcache").glob("*.derived.json"))
    assert sides and any("fd_real/" in p.read_text() for p in sides)
    assert any("cmmd_k_yy/" in p.read_text() for p in sides)
    (run / "image_metrics.safetensors").unlink()  # the run's own images are embedded again, not the reals
    second_table = score_run(run, _cfg(tmp_path))
    assert sum(m.images_seen for m in stub.loaded) - first == 6 + 6  # only the run's images
    pd.testing.assert_frame_equal(first_table, second_table)
    assert second_table["fd_real"].notna().any()


def test_out_of_domain_prompts_are_labelled_and_alignment_left_empty(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(2.0,), per_category=2, shapes=False)
    score_run(run, _cfg(tmp_path))
    t = pd.read_csv(run / "metrics.csv")
    assert t["out_of_domain"].all()
    assert t["fd_extractor"].str.endswith("(out-of-domain)").all()
    assert t["clip_model"].str.endswith("(out-of-domain)").all()
    assert t["alignment"].isna().all() and t["fd_real"].isna().all()
    assert set(t["category"]) == {"all", "Rare Words", "Text"}


def test_disabled_metrics_leave_columns_empty(tmp_path, monkeypatch):
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=1)
    monkeypatch.setitem(sys.modules, "bench.shapes_clip.model", None)  # not needed, so never imported
    score_run(run, _cfg(tmp_path, fd_extractor="none", clip_backbone="none", cmmd=False, kid=False))
    t = pd.read_csv(run / "metrics.csv")
    for col in ("fd", "fd_ci_low", "fd_real", "fd_extractor", "kid", "cmmd", "clip_score", "clip_model"):
        assert t[col].isna().all(), col
    assert t["alignment"].notna().all() and t["num_images"].tolist() == [3, 1, 1, 1]


def test_alignment_uses_the_detector_module_and_is_empty_when_off(tmp_path, monkeypatch):
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=2)
    seen = []

    def fake_score(image, scene):
        seen.append((image.shape, scene.category))
        return {"category": scene.category, "correct": scene.category != "Counting", "color_correct": True}

    monkeypatch.setattr("bench.metrics.score_run.detect", types.SimpleNamespace(score=fake_score))
    cfg = _cfg(tmp_path, fd_extractor="none", clip_backbone="none", cmmd=False, kid=False, workers=1)
    t = score_run(run, cfg).set_index("category")
    assert len(seen) == 6 and seen[0][0] == (48, 48, 3)
    assert t.loc["all", "alignment"] == pytest.approx(4 / 6)
    assert t.loc["Counting", "alignment"] == 0.0 and t.loc["Colors", "alignment"] == 1.0
    off = dataclasses.replace(cfg, alignment=False)
    assert score_run(run, off)["alignment"].isna().all()


def test_missing_inception_weights_fail_before_any_image_is_read(tmp_path):
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=1)
    for p in (run / "images").rglob("*.png"):
        p.unlink()  # reading any image would fail with another error
    with pytest.raises(FileNotFoundError, match="metrics.inception_weights="):
        score_run(run, _cfg(tmp_path, fd_extractor="inception", clip_backbone="none"))
    assert not (run / "metrics.csv").exists()


def test_missing_images_and_missing_manifest_are_clear(tmp_path, monkeypatch):
    S.install_stub_shapes_clip(monkeypatch)
    with pytest.raises(FileNotFoundError, match="manifest"):
        score_run(tmp_path / "empty", _cfg(tmp_path))
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=1)
    next((run / "images").rglob("*.png")).unlink()
    with pytest.raises(FileNotFoundError, match="1 images listed"):
        score_run(run, _cfg(tmp_path))


def test_decode_chunks_keeps_order(tmp_path):
    from bench.metrics.score_run import decode_chunks

    paths = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        S.write_png(p, np.full((4, 4, 3), i, np.uint8))
        paths.append(p)
    batches = list(decode_chunks([paths[i:i + 3] for i in range(0, 7, 3)], workers=2))
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    assert np.concatenate(batches)[:, 0, 0, 0].tolist() == list(range(7))


def test_intervals_contain_their_estimates_and_metrics_json_names_every_method(tmp_path, monkeypatch):
    """fd / fd_excess / cmmd intervals (jackknife) hold their point estimates; fd_excess = fd - fd_real;
    fd_inf only from fd_inf_min_n images; PRDC and kid_se on every row with features; metrics.json states
    each estimator, interval method and convention."""
    import json

    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=4)
    t = score_run(run, _cfg(tmp_path, fd_inf_min_n=12)).set_index("category")
    for col in ("fd", "fd_excess", "cmmd"):
        assert ((t[f"{col}_ci_low"] <= t[col]) & (t[col] <= t[f"{col}_ci_high"])).all(), col
    assert np.allclose(t["fd_excess"], t["fd"] - t["fd_real"])
    assert np.isfinite(t.loc["all", "fd_inf"]) and t.drop("all")["fd_inf"].isna().all()  # 12 vs 4 images
    for col in ("precision", "recall", "density", "coverage"):
        assert t[col].between(0, 3).all(), col
    assert t["prdc_k"].eq(3).all() and (t["kid_se"] > 0).all()
    assert t["cmmd_estimator"].eq("unbiased").all()
    desc = json.loads((run / "metrics.json").read_text())
    assert "jackknife" in desc["definitions"]["fd_ci"] and "Chong & Forsyth" in desc["definitions"]["fd_inf"]
    assert "unbiased" in desc["definitions"]["cmmd"] and "jackknife" in desc["definitions"]["kid_se"]
    assert "without antialiasing" in desc["conventions"]["inception_resize"]
    assert "clamps the mean" in desc["conventions"]["clip_score_clamp"]

    biased = score_run(run, _cfg(tmp_path, cmmd_estimator="biased", fd_interval="bootstrap", prdc=False,
                                 fd_inf=False)).set_index("category")
    assert biased["cmmd_estimator"].eq("biased").all() and (biased["cmmd"] > t["cmmd"]).all()
    assert "percentile bootstrap" in json.loads((run / "metrics.json").read_text())["definitions"]["fd_ci"]
    assert biased["precision"].isna().all() and biased["fd_inf"].isna().all()
    assert biased["fd"].tolist() == t["fd"].tolist()


def test_command_line_rescoring_takes_the_runs_config_and_overrides(tmp_path, monkeypatch, capsys):
    """``python -m bench.metrics.score_run RUN metrics.KEY=VALUE``: the run's .hydra metrics group, then overrides."""
    from bench.metrics.score_run import main

    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=1)
    (run / ".hydra").mkdir()
    metrics = {"fd_extractor": "none", "clip_backbone": "none", "cmmd": False, "kid": False, "workers": 1,
               "cache_dir": str(tmp_path / "refcache"), "device": "cpu"}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"metrics": metrics}))
    assert main([str(run), "metrics.bootstrap=50", "metrics.alignment=false"]) == 0
    table = pd.read_csv(run / "metrics.csv")
    assert table["alignment"].isna().all() and json.loads((run / "metrics.json").read_text())["config"]["bootstrap"] == 50


def test_fd_real_is_the_mean_of_its_real_sets_and_their_error_widens_fd_excess(tmp_path, monkeypatch):
    """fd_real = the mean over fd_real_draws real sets (stored beside the reference); fd_excess's interval
    adds their standard error sd / sqrt(draws) to fd's jackknife error in quadrature."""
    from bench.metrics.jackknife import critical_value

    S.install_stub_shapes_clip(monkeypatch)
    run = tmp_path / "run"
    S.make_run(run, weights=(1.0,), per_category=4)
    t = score_run(run, _cfg(tmp_path, fd_real_draws=5)).set_index("category")
    key = "fd_real/all/n=12/streams=0:all:12+4"
    sides = [json.loads(p.read_text()) for p in (tmp_path / "refcache").glob("*.derived.json")]
    draws = np.array(next(d[key] for d in sides if key in d))
    assert len(draws) == 5 and draws.std() > 0
    assert t.loc["all", "fd_real"] == pytest.approx(draws.mean())
    tc = critical_value(12)  # G = min(fd_jackknife_groups, N) = 12
    half_fd = t.loc["all", "fd_ci_high"] - t.loc["all", "fd"]
    half_excess = t.loc["all", "fd_excess_ci_high"] - t.loc["all", "fd_excess"]
    se_real = draws.std(ddof=1) / np.sqrt(5)
    assert half_excess == pytest.approx(np.hypot(half_fd, tc * se_real), rel=1e-6)
