"""bench.targets: the shipped cascade's quality table, on runs of a rendering stand-in generator."""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from bench.targets import main, targets_table, verdicts

CATS = ("Colors", "Counting", "Positional")


def rendered_run(run_dir: Path, swap_positional: bool, per_category: int = 12) -> Path:
    """Images rendered from each prompt's own scene at w = 1 and w = 5; with ``swap_positional``, the
    Positional images at w = 1 show the two objects swapped (the relation fails)."""
    from bench.generate import atomic_write_png, manifest_rows, plan_jobs
    from bench.rundir import write_manifest
    from bench.prompts.records import PromptRecord
    from bench.shapes import render_batch, sample_scene
    from bench.shapes.scene import Scene

    rng = random.Random("targets")
    scenes = [sample_scene(rng, c) for c in CATS for _ in range(per_category)]
    prompts = [PromptRecord(f"shapes-{i:04d}", s.caption, s.category, s.to_json()) for i, s in enumerate(scenes)]
    jobs = plan_jobs(prompts, [1.0, 5.0], 1, 0)
    by_id = {p.id: s for p, s in zip(prompts, scenes)}
    shown = []
    for j in jobs:
        s = by_id[j.prompt.id]
        if swap_positional and s.category == "Positional" and j.guidance_weight == 1.0:
            a, b = s.objects
            a2 = type(a)(a.shape, a.color, b.cx, b.cy, a.size)
            b2 = type(b)(b.shape, b.color, a.cx, a.cy, b.size)
            s = Scene(s.category, (a2, b2), s.relation, s.count, s.caption)
        shown.append(s)
    for j, img in zip(jobs, render_batch(shown, 64)):
        atomic_write_png(img, run_dir / j.path)
    write_manifest(run_dir, manifest_rows(jobs, 64))
    return run_dir


def test_real_renders_meet_every_target_and_a_broken_relation_is_seen(tmp_path, capsys):
    run = rendered_run(tmp_path / "run", swap_positional=True)
    table = targets_table(run).set_index("guidance_weight")
    assert (table.loc[5.0, ["colors", "color_single", "color_exact_single", "counting", "positional"]] == 1.0).all()
    assert (table.loc[1.0, ["colors", "color_single", "counting"]] == 1.0).all()
    assert table.loc[1.0, "positional"] == 0.0  # every relation reversed
    assert table.loc[1.0, "n_images"] == 36
    lines = verdicts(table.reset_index())
    assert lines[0].startswith("best guidance weight (highest positional): w = 5")
    assert any("positional" in ln and "met" in ln and "NOT" not in ln for ln in lines)
    assert main([str(run)]) == 0
    assert pd.read_csv(run / "targets.csv").shape[0] == 2
    from PIL import Image

    with Image.open(run / "targets.png") as im:  # accuracy bands and FD ratio against w
        assert im.size[0] > im.size[1] > 300
    assert "color_single" in capsys.readouterr().out


def test_errors(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main([]) == 2
    (tmp_path / "manifest.csv").write_text("path,prompt,category,guidance_weight,truth\n")
    with pytest.raises(ValueError, match="no shapes images"):
        targets_table(tmp_path)


def test_verdicts_of_the_metric_phase_are_read_not_detected_again(tmp_path, monkeypatch):
    """After score_run, targets reads each image's verdict from RUN/image_metrics.safetensors; an image
    changed since is detected again."""
    import metrics_support as S
    from bench.metrics.score_run import MetricsConfig, score_run
    from bench import targets

    S.install_stub_shapes_clip(monkeypatch)
    run = rendered_run(tmp_path / "run", swap_positional=True, per_category=3)
    expected = targets_table(run)
    score_run(run, MetricsConfig(ref_n=30, cache_dir=str(tmp_path / "refcache"), bootstrap=20, fd_bootstrap=3,
                                 kid_subsets=3, device="cpu", real_baseline=False))
    calls = []
    real = targets.score

    def counted(image, scene):
        calls.append(scene.caption)
        return real(image, scene)

    monkeypatch.setattr(targets, "score", counted)
    cols = ["colors", "color_single", "color_exact_single", "counting", "positional", "n_images"]
    pd.testing.assert_frame_equal(targets_table(run)[cols], expected[cols])
    assert calls == []
    man = pd.read_csv(run / "manifest.csv", keep_default_na=False)
    (run / man["path"][0]).write_bytes((run / man["path"].iloc[-1]).read_bytes())  # another scene's image
    targets_table(run)
    assert calls == [man["prompt"][0]]


def test_runs_pool_and_accuracies_carry_wilson_intervals(tmp_path, capsys):
    a = rendered_run(tmp_path / "a", swap_positional=True, per_category=4)
    b = rendered_run(tmp_path / "b", swap_positional=False, per_category=4)
    one = targets_table(a).set_index("guidance_weight")
    both = targets_table([a, b]).set_index("guidance_weight")
    assert both.loc[1.0, "n_images"] == 2 * one.loc[1.0, "n_images"] == 24
    assert one.loc[1.0, "positional"] == 0.0 and both.loc[1.0, "positional"] == 0.5  # b's relations hold
    # Wilson 95%: 0 of 4 -> (0, 0.49); 4 of 8 -> (0.22, 0.78); 4 of 4 -> (0.51, 1)
    assert one.loc[1.0, "positional_low"] == 0.0 and one.loc[1.0, "positional_high"] == pytest.approx(0.490, abs=1e-3)
    assert (both.loc[1.0, "positional_low"], both.loc[1.0, "positional_high"]) == pytest.approx((0.215, 0.785), abs=1e-3)
    assert one.loc[5.0, "counting_low"] == pytest.approx(0.510, abs=1e-3) and one.loc[5.0, "counting_high"] == pytest.approx(1.0)
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "2 run(s)" in out and "0.500 (0.22-0.78)" in out
    # w = 5: every image of both runs right; with no spread to read, the 4 prompts count, not the 8 images
    assert "positional    1.000  target >= 0.60  met  (95% interval 0.51-1.00: undecided)" in out
    assert (a / "targets.csv").is_file() and not (b / "targets.csv").exists()
    assert main([str(a), str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_effective_n_of_pooled_seeds():
    from bench.targets import effective_n, wilson

    prompts = pd.Series(["p0", "p1", "p2", "p3"] * 3)
    same = pd.Series([True, False, True, True] * 3)  # three copies of one run: they move together
    assert effective_n(same, prompts) == 4.0  # as one run: copies add no trials (the design effect is 3)
    assert effective_n(same[:4], prompts[:4]) == 4.0
    mixed = pd.Series([True, False, True, True, False, True, True, True, True, False, False, True])
    assert 4.0 < effective_n(mixed, prompts) <= 12.0
    assert effective_n(pd.Series([True] * 12), prompts) == 4.0  # p = 1: no spread to read, the prompts count
    lo, hi = wilson(0.8, 20)  # scipy's binomtest(16, 20).proportion_ci(method="wilson"): 0.584-0.919
    assert (lo, hi) == pytest.approx((0.5840, 0.9193), abs=1e-4)


def test_a_run_without_a_category_and_runs_of_other_prompts(tmp_path):
    run = rendered_run(tmp_path / "run", swap_positional=False, per_category=2)
    man = pd.read_csv(run / "manifest.csv", keep_default_na=False)
    man[man.category != "Counting"].to_csv(run / "manifest.csv", index=False)
    table = targets_table(run)
    assert table["counting"].isna().all() and table["colors"].notna().all()
    assert not any("counting" in ln for ln in verdicts(table))
    other = rendered_run(tmp_path / "other", swap_positional=False, per_category=3)
    with pytest.raises(ValueError, match="other prompts or guidance weights"):
        targets_table([run, other])
