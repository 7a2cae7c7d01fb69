"""bench.regress: baselines that document themselves, verdicts, clear errors, and proof that the check
bites on real metric computations (a model that ignores the text; a tiny cascade with corrupted weights)."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.regress import (BaselineMismatch, RegressError, ToleranceRule, compare, failures,
                           load_baseline, make_baseline, run_check, write_baseline)

REPO = Path(__file__).resolve().parents[1]
CATS = ("Colors", "Counting", "Positional")


# ---------------------------------------------------------------- a run directory with fake metrics


def fake_run(run_dir: Path, weights=(1.0, 3.0), per_category: int = 4, shift: dict | None = None,
             clip_shift: dict | None = None, wrong: dict | None = None, seed: int = 0) -> Path:
    """manifest.csv + generation.json + metrics.json + metrics.csv with intervals + image_scores.csv (no images).

    Per image: clip_score = 20 + w + a per-prompt offset (+ ``clip_shift[w]``); correct = True except every
    third prompt (and, with ``wrong[w] = k``, the first k prompts at w). The metrics.csv rows of clip_score /
    alignment are the means of these; ``shift`` then moves metrics.csv cells only (set-level metrics)."""
    from bench.shapes import sample_scene

    rng = random.Random("regress-fake")
    run_dir.mkdir(parents=True, exist_ok=True)
    scenes = [sample_scene(rng, c) for c in CATS for _ in range(per_category)]
    man = [{"path": f"images/w{w:g}/p{i}_s0.png", "prompt_id": f"p{i}", "prompt": s.caption, "category": s.category,
            "seed": 1000 * (seed + 1) + i, "guidance_weight": f"{w:g}", "sample_index": 0, "image_index": j,
            "truth": s.to_json(), "width": 32, "height": 32}
           for j, (w, (i, s)) in enumerate((w, x) for w in weights for x in enumerate(scenes))]
    pd.DataFrame(man).to_csv(run_dir / "manifest.csv", index=False)
    (run_dir / "generation.json").write_text(json.dumps({"guidance.weights": list(weights), "sampler.steps": 4,
                                                         "seed": seed, "model.name": "imagen_tiny"}))
    (run_dir / "metrics.json").write_text(json.dumps({"config": {"ref_n": 60, "bootstrap": 200, "seed": 0,
                                                                 "device": "cpu"}}))
    offsets = np.random.default_rng(7).normal(0, 1.0, len(scenes))
    per = []
    for m in man:
        i, w = int(m["prompt_id"][1:]), float(m["guidance_weight"])
        per.append({"path": m["path"], "prompt_id": m["prompt_id"], "guidance_weight": w, "category": m["category"],
                    "seed": m["seed"], "clip_score": 20 + w + offsets[i] + (clip_shift or {}).get(w, 0.0),
                    "correct": not (i % 3 == 0 or i < (wrong or {}).get(w, 0)), "color_correct": True})
    per = pd.DataFrame(per)
    per.to_csv(run_dir / "image_scores.csv", index=False)
    rows = []
    for w in weights:
        for cat in ("all",) + CATS:
            sel = per[(per.guidance_weight == w) & ((per.category == cat) if cat != "all" else True)]
            a, c = float(sel.correct.mean()), float(sel.clip_score.mean())
            rows.append({"guidance_weight": w, "category": cat, "num_images": len(sel),
                         "fd": 40.0 - w, "fd_ci_low": 38.0 - w, "fd_ci_high": 46.0 - w,
                         "clip_score": c, "clip_score_ci_low": c - 1.0, "clip_score_ci_high": c + 1.0,
                         "alignment": a, "alignment_ci_low": a - 0.1, "alignment_ci_high": a + 0.1,
                         "cmmd": 2.0, "cmmd_ci_low": 1.9, "cmmd_ci_high": 2.1,
                         "kid": np.nan, "kid_std": np.nan, "kid_se": np.nan, "fd_extractor": "x", "clip_model": "y"})
    table = pd.DataFrame(rows)
    for (metric, w, cat), delta in (shift or {}).items():
        table.loc[(table.guidance_weight == w) & (table.category == cat), metric] += delta
    table.to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


def test_conf_mirrors_the_tolerance_defaults():
    from bench.regress import PairedSettings

    d = yaml.safe_load((REPO / "conf" / "regress.yaml").read_text())
    assert dataclasses.asdict(ToleranceRule.from_dict(d["tolerance"])) == dataclasses.asdict(ToleranceRule())
    assert PairedSettings(**d["paired"]) == PairedSettings() and d["allow_other_seeds"] is False
    with pytest.raises(ValueError, match="unknown tolerance keys"):
        ToleranceRule.from_dict({"kk": 2})
    with pytest.raises(ValueError, match="seed_runs"):
        ToleranceRule(method="seeds")


def test_baseline_documents_values_floors_images_and_provenance(tmp_path):
    run = fake_run(tmp_path / "run")
    b = make_baseline(run)
    e = {(x["metric"], x["guidance_weight"], x["category"]): x for x in b["entries"]}
    # 2 weights x 4 rows x 4 metrics with a value (kid is empty: not gated, and said so)
    assert len(e) == 32 and any("kid" in s for s in b["not_gated"])
    al = e[("alignment", 3.0, "all")]
    assert al["direction"] == "higher" and al["value"] == pytest.approx(8 / 12)
    assert al["floor"] == pytest.approx(0.02) and al["half_width"] == pytest.approx(0.1)
    assert "paired bootstrap" in al["interval"] and "alignment_ci_low" in al["half_width_from"]
    fd = e[("fd", 1.0, "Colors")]
    assert fd["direction"] == "lower" and fd["floor"] == pytest.approx(0.02 * 39.0) and fd["half_width"] == 4.0
    assert "ignores the pairing" in fd["interval"]
    assert e[("cmmd", 1.0, "all")]["half_width"] == pytest.approx(0.1)
    # per-image values for the paired bootstrap: every image, the documented fields
    assert len(b["images"]) == 24
    assert set(b["images"][0]) == {"prompt_id", "sample_index", "guidance_weight", "category", "clip_score",
                                   "correct"}
    assert b["fingerprint"]["guidance_weights"] == [1.0, 3.0]
    assert b["fingerprint"]["categories"] == {c: 4 for c in CATS}
    assert b["fingerprint"]["generation"] == {"guidance.weights": [1.0, 3.0], "sampler.steps": 4, "seed": 0}
    assert b["source"]["config"]["generation"]["model.name"] == "imagen_tiny"
    assert "git_revision" in b["source"] and b["made_with_git_revision"]
    assert "worse side of 0 AND" in b["tolerance_rule"]["description"]
    path = tmp_path / "baselines" / "b.json"
    write_baseline(b, path)
    assert load_baseline(path) == json.loads(json.dumps(b))


def test_verdicts_paired_interval_and_floor(tmp_path):
    b = make_baseline(fake_run(tmp_path / "base"))
    same = compare(fake_run(tmp_path / "same"), b)
    assert (same["verdict"] == "ok").all() and failures(same) == []
    assert (same["diff"] == 0).all() and (same.loc[same.metric == "clip_score", "ci_low"] == 0).all()

    shift = {("fd", 1.0, "Counting"): +9.0,        # interval 9 +- 4 sqrt(2) excludes 0, > floor: regressed
             ("fd", 1.0, "Colors"): +5.0,          # 5 +- 5.66 contains 0: no evidence, ok
             ("fd", 3.0, "all"): -9.0,             # much better
             ("cmmd", 3.0, "Colors"): np.nan}      # could not be computed any more
    got = compare(fake_run(tmp_path / "worse", shift=shift, clip_shift={3.0: -0.5}, wrong={1.0: 6}), b)
    got = got.set_index(["metric", "guidance_weight", "category"])
    # every image at w=3 lost 0.5 CLIP score: the paired interval is [-0.5, -0.5], far from 0; the
    # independent row intervals (+-1 each) would have said nothing
    assert got.loc[("clip_score", 3.0, "all"), "verdict"] == "REGRESSED"
    assert got.loc[("clip_score", 3.0, "all"), "ci_high"] == pytest.approx(-0.5)
    assert got.loc[("clip_score", 1.0, "all"), "verdict"] == "ok"
    # 4 more prompts wrong at w=1 (p1, p2, p4, p5)
    assert got.loc[("alignment", 1.0, "all"), "verdict"] == "REGRESSED"
    assert got.loc[("alignment", 1.0, "all"), "paired"] == "worse"
    assert got.loc[("alignment", 3.0, "all"), "verdict"] == "ok"
    assert got.loc[("fd", 1.0, "Counting"), "verdict"] == "REGRESSED"
    assert got.loc[("fd", 1.0, "Colors"), "verdict"] == "ok"
    assert got.loc[("fd", 1.0, "Colors"), "paired"] == "no evidence"
    assert got.loc[("fd", 3.0, "all"), "verdict"] == "improved"
    assert got.loc[("cmmd", 3.0, "Colors"), "verdict"] == "MISSING"
    lines = failures(got.reset_index())
    assert any("clip_score at w=3, category all" in s for s in lines)
    assert any("fd at w=1, category Counting" in s for s in lines)


def test_practical_floor_keeps_a_tiny_clear_change_ok(tmp_path):
    b = make_baseline(fake_run(tmp_path / "base"))
    got = compare(fake_run(tmp_path / "tiny", clip_shift={1.0: -0.05}), b)  # floor 0.1
    row = got[(got.metric == "clip_score") & (got.guidance_weight == 1.0) & (got.category == "all")].iloc[0]
    assert row.paired == "worse" and row.verdict == "ok"


def test_a_baseline_from_before_a_new_generation_key_still_compares(tmp_path):
    """A baseline made before generation.json had ``sampler.grid`` matches a run on the grid it was made with
    (``time``) and refuses another grid."""
    b = make_baseline(fake_run(tmp_path / "base"))
    assert "sampler.grid" not in b["fingerprint"]["generation"]
    run = fake_run(tmp_path / "now")
    gen = json.loads((run / "generation.json").read_text())
    (run / "generation.json").write_text(json.dumps({**gen, "sampler.grid": "time"}))
    assert (compare(run, b)["verdict"] == "ok").all()
    (run / "generation.json").write_text(json.dumps({**gen, "sampler.grid": "logsnr"}))
    with pytest.raises(BaselineMismatch, match="sampler.grid"):
        compare(run, b)


def test_another_seed_needs_allow_other_seeds_and_pairs_by_prompt(tmp_path):
    b = make_baseline(fake_run(tmp_path / "base"))
    other = fake_run(tmp_path / "seed1", seed=1)
    with pytest.raises(BaselineMismatch, match="allow_other_seeds=true"):
        compare(other, b)
    got = compare(other, b, allow_other_seeds=True)
    assert (got["verdict"] == "ok").all()
    assert got["method"].str.contains("4 prompts").any()
    # other prompts are still refused
    with pytest.raises(BaselineMismatch, match="prompts_sha256"):
        compare(fake_run(tmp_path / "n5", per_category=5, seed=1), b, allow_other_seeds=True)


def test_command_prints_the_table_and_exits_nonzero_naming_the_metric(tmp_path, capsys):
    base_path = tmp_path / "baseline.json"
    assert run_check(fake_run(tmp_path / "base"), base_path, update=True) == 0
    out = io.StringIO()
    assert run_check(fake_run(tmp_path / "same"), base_path, out=out) == 0
    table = out.getvalue()
    for col in ("metric", "baseline", "now", "diff", "ci", "floor", "verdict", "no regression"):
        assert col in table
    out = io.StringIO()
    assert run_check(fake_run(tmp_path / "worse", wrong={3.0: 6}), base_path, out=out) == 1
    assert "REGRESSED" in out.getvalue()
    assert "REGRESSED: alignment at w=3, category all" in capsys.readouterr().err
    # another seed: refused (2) unless allowed
    assert run_check(fake_run(tmp_path / "s1", seed=1), base_path, out=io.StringIO()) == 2
    assert run_check(tmp_path / "s1", base_path, out=io.StringIO(), allow_other_seeds=True) == 0


def test_clear_errors(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    b = make_baseline(run)
    with pytest.raises(RegressError, match="baseline .*nope.json not found.*update=true"):
        load_baseline(tmp_path / "nope.json")
    with pytest.raises(RegressError, match="metrics.csv not found"):
        make_baseline(tmp_path / "empty")
    # another guidance sweep, other prompts, other sampler settings
    with pytest.raises(BaselineMismatch, match=r"guidance_weights: baseline \[1.0, 3.0\], run \[1.0, 5.0\]"):
        compare(fake_run(tmp_path / "w5", weights=(1.0, 5.0)), b)
    with pytest.raises(BaselineMismatch, match="prompts_sha256"):
        compare(fake_run(tmp_path / "n5", per_category=5), b)
    other = fake_run(tmp_path / "steps")
    (other / "generation.json").write_text(json.dumps({"guidance.weights": [1.0, 3.0], "sampler.steps": 8, "seed": 0}))
    with pytest.raises(BaselineMismatch, match="generation.sampler.steps: baseline 4, run 8"):
        compare(other, b)
    # a missing column
    cut = fake_run(tmp_path / "cut")
    pd.read_csv(cut / "metrics.csv").drop(columns=["clip_score"]).to_csv(cut / "metrics.csv", index=False)
    with pytest.raises(RegressError, match=r"lacks the columns \['clip_score'\]"):
        compare(cut, b)
    # the command reports these as bad input (2), not as a regression (1)
    write_baseline(b, tmp_path / "b.json")
    assert run_check(tmp_path / "w5", tmp_path / "b.json", out=io.StringIO()) == 2
    assert run_check(cut, tmp_path / "nope.json", out=io.StringIO()) == 2
    assert "another configuration" in capsys.readouterr().err
    # the same settings measured with another metric model (a retrained shapes-CLIP)
    weights = tmp_path / "shapes_clip.safetensors"
    weights.write_bytes(b"first")
    scored = fake_run(tmp_path / "scored")
    (scored / "metrics.json").write_text(json.dumps({"config": {"fd_extractor": "shapes_clip",
                                                                "shapes_clip_path": str(weights)}}))
    b2 = make_baseline(scored)
    assert len(b2["fingerprint"]["metric_weights"]["shapes_clip"]) == 16
    assert (compare(scored, b2)["verdict"] == "ok").all()
    weights.write_bytes(b"retrained")
    with pytest.raises(BaselineMismatch, match="metric_weights.shapes_clip"):
        compare(scored, b2)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RegressError, match="format"):
        load_baseline(tmp_path / "bad.json")
    (tmp_path / "v1.json").write_text(json.dumps({"format": "imagen-bench/regression-baseline/v1", "entries": []}))
    with pytest.raises(RegressError, match="update=true"):  # an old baseline: remake it
        load_baseline(tmp_path / "v1.json")


def test_tolerance_from_repeated_seeds(tmp_path):
    runs = [fake_run(tmp_path / f"s{i}", shift={("alignment", 1.0, "all"): d}) for i, d in enumerate((0.0, 0.1, -0.1))]
    rule = ToleranceRule(method="seeds", seed_runs=[str(runs[1]), str(runs[2])])
    b = make_baseline(runs[0], rule)
    al = next(e for e in b["entries"] if (e["metric"], e["guidance_weight"], e["category"]) == ("alignment", 1.0, "all"))
    assert al["half_width"] == pytest.approx(1.959963984540054 * 0.1) and al["floor"] == pytest.approx(0.02)
    assert "std 0.1 over 3 seeds" in al["half_width_from"]
    assert b["tolerance_rule"]["method"] == "seeds"


# ---------------------------------------------------------------- proof it bites: real metric computations


def metrics_cfg(tmp_path: Path, shapes_clip: Path, **kw) -> dict:
    return {"shapes_clip_path": str(shapes_clip), "ref_n": 60, "cache_dir": str(tmp_path / "refcache"),
            "bootstrap": 200, "fd_bootstrap": 10, "kid": False, "real_baseline": False, "batch_size": 16,
            "workers": 1, "device": "cpu", **kw}


def rendered_run(run_dir: Path, follow_text: bool, noise: float = 0.0, size: int = 32, per_category: int = 6) -> Path:
    """A run of a stand-in generator that renders, for each prompt, its own scene (follows the text) or
    another scene of the same category (ignores the text: what guidance off / a broken text path does);
    ``noise``: pixel noise of this standard deviation on every image (a sampler that stops too early)."""
    from bench.generate import atomic_write_png, manifest_rows, plan_jobs
    from bench.rundir import write_manifest
    from bench.prompts.records import PromptRecord
    from bench.shapes import render_batch, sample_scene

    rng = random.Random("regress-rendered")
    scenes = [sample_scene(rng, c) for c in CATS for _ in range(per_category)]
    decoys = [sample_scene(rng, s.category) for s in scenes]
    prompts = [PromptRecord(f"shapes-{i:04d}", s.caption, s.category, s.to_json()) for i, s in enumerate(scenes)]
    jobs = plan_jobs(prompts, [3.0], 1, 0)
    images = render_batch([s if follow_text else d for s, d in zip(scenes, decoys)], size)
    if noise:
        jitter = np.random.default_rng(0).normal(0.0, noise, images.shape)
        images = np.clip(images + jitter, 0, 255).astype(np.uint8)
    for j, img in zip(jobs, images):
        atomic_write_png(img, run_dir / j.path)
    write_manifest(run_dir, manifest_rows(jobs, size))
    return run_dir


def test_real_metrics_catch_a_generator_that_ignores_the_text(tmp_path, tiny_shapes_clip):
    from bench.metrics.score_run import MetricsConfig, score_run

    cfg = MetricsConfig(**metrics_cfg(tmp_path, tiny_shapes_clip))
    runs = {name: rendered_run(tmp_path / name, follow, noise) for name, follow, noise in
            (("good", True, 0.0), ("again", True, 0.0), ("ignores_text", False, 0.0), ("noisy", True, 80.0))}
    for run in runs.values():
        score_run(run, cfg)
    b = make_baseline(runs["good"])
    assert all(r.verdict == "ok" for r in compare(runs["again"], b).itertuples())

    def regressed(name: str) -> pd.DataFrame:
        got = compare(runs[name], b)
        return got[got.verdict == "REGRESSED"].set_index(["metric", "category"])

    bad = regressed("ignores_text")
    # exact detector: every category collapses (1.0 -> at most 0.5); the images are still good shapes
    assert {("alignment", c) for c in ("all",) + CATS} <= set(bad.index)
    assert bad.loc[("alignment", "all"), "baseline"] == 1.0 and bad.loc[("alignment", "all"), "now"] < 0.5
    assert ("fd", "all") not in bad.index  # same image distribution: FD alone would have missed it
    noisy = regressed("noisy")  # the right scenes under heavy pixel noise: every distance sees it
    assert {("fd", "all"), ("alignment", "all")} <= set(noisy.index)
    # CMMD moves the right way, but its jackknife interval over 18 images per side (in quadrature, which
    # ignores the pairing) is too wide to call it: the verdict rule does not overclaim
    cmmd = compare(runs["noisy"], b).set_index(["metric", "category"]).loc[("cmmd", "all")]
    assert (cmmd["diff"] > 0).all()


TINY_RUN = ["model=imagen_tiny", "prompts.n=12", "guidance.weights=[1,4]", "sampler.steps=4", "sampler.sr_steps=3",
            "sampler.micro_batch=4", "threads=1", "device=cpu"]


def run_tiny(run_dir: Path, ckpt: dict[str, Path], metrics: dict) -> dict:
    """bench.run.run on the tiny cascade (in this process), composed through Hydra like the command line."""
    from bench.run import run
    from conftest import resolved

    overrides = TINY_RUN + [f"model.stages.0.checkpoint={ckpt['base']}", f"model.stages.1.checkpoint={ckpt['sr']}"]
    overrides += [f"metrics.{k}={v}" for k, v in metrics.items()]
    return run(resolved("config", overrides), run_dir)


@pytest.mark.slow
def test_tiny_cascade_unchanged_passes_and_corrupted_weights_are_caught(tmp_path, tiny_checkpoints,
                                                                       tiny_shapes_clip):
    from safetensors.torch import load_file, save_file

    m = metrics_cfg(tmp_path, tiny_shapes_clip)
    run_tiny(tmp_path / "base", tiny_checkpoints, m)
    baseline = tmp_path / "baseline.json"
    assert run_check(tmp_path / "base", baseline, update=True, out=io.StringIO()) == 0
    # the same model, a fresh run directory: deterministic, so it passes exactly
    run_tiny(tmp_path / "same", tiny_checkpoints, m)
    same = compare(tmp_path / "same", load_baseline(baseline))
    assert (same["now"] == same["baseline"]).all() and (same["verdict"] == "ok").all()
    # a corrupted super-resolution checkpoint (output bias off by +3): its images come out dark (mean pixel
    # about 50 instead of 120; shapes scenes have a (240, 240, 240) background). A random-weight cascade
    # has no quality to lose in finer ways; the rendered stand-in generator above covers those.
    state = load_file(str(tiny_checkpoints["sr"]))
    bad = {k: v + 3.0 if k == "out.bias" else v for k, v in state.items()}
    path = tmp_path / "corrupt_sr.safetensors"
    save_file(bad, str(path), metadata=_metadata(tiny_checkpoints["sr"]))  # same architecture metadata
    run_tiny(tmp_path / "corrupt", {**tiny_checkpoints, "sr": path}, m)
    got = compare(tmp_path / "corrupt", load_baseline(baseline)).set_index(["metric", "guidance_weight", "category"])
    for w in (1.0, 4.0):
        assert got.loc[("fd", w, "all"), "verdict"] == "REGRESSED", got.to_string()
        # CMMD's interval sees it too, but this random-weight cascade's CMMD (~0.006 -> 0.011) moves less than
        # the absolute practical floor (0.01): "worse", not REGRESSED, by the documented rule
        assert got.loc[("cmmd", w, "all"), "paired"] == "worse", got.to_string()
    assert run_check(tmp_path / "corrupt", baseline, out=io.StringIO()) == 1


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


@pytest.mark.slow
def test_command_line(tmp_path):
    run = fake_run(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench.regress", f"run={run}", f"baseline={tmp_path / 'b.json'}"]
    made = subprocess.run(cmd + ["update=true"], cwd=REPO, env=env, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert json.loads((tmp_path / "b.json").read_text())["entries"]
    ok = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "no regression" in ok.stdout
    fake_run(run, wrong={1.0: 12})  # every prompt at w=1 now wrong: 8 of 12 changed, paired interval < 0
    bad = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "REGRESSED: alignment at w=1, category all" in bad.stderr
    fake_run(run, seed=1)
    seeds = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert seeds.returncode == 2 and "allow_other_seeds=true" in seeds.stderr
    allowed = subprocess.run(cmd + ["allow_other_seeds=true"], cwd=REPO, env=env, capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stderr
    assert "REGRESSED" in bad.stdout  # the table
    missing = subprocess.run(cmd[:4] + [f"baseline={tmp_path / 'none.json'}"], cwd=REPO, env=env,
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "none.json not found" in missing.stderr
    usage = subprocess.run(cmd[:4], cwd=REPO, env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "missing baseline" in usage.stderr
    assert not list(REPO.glob("outputs")), "bench.regress must not leave Hydra output folders"


def test_ci_regression_experiment_only_overrides_and_is_balanced():
    from collections import Counter

    from bench.prompts.registry import load_prompts
    from bench.run import flatten
    from conftest import resolved

    path = REPO / "conf" / "experiment" / "ci_regression.yaml"
    assert path.read_text().startswith("# @package _global_")
    base = resolved("config")
    ci = resolved("config", ["+experiment=ci_regression"])
    own = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}
    assert set(flatten(own)) <= set(flatten(base))  # overrides existing keys only
    assert ci["model"]["name"] == "imagen_base" and ci["prompts"]["name"] == "shapes"
    assert ci["guidance"]["weights"] == [1, 3, 7.5] and ci["seed"] == 0
    assert ci["metrics"]["ref_n"] == 1000 and ci["metrics"]["kid"] is False and ci["metrics"]["enabled"]
    assert ci["sampler"]["kind"] == "ddim" and ci["sampler"]["grid"] == "time"  # pinned: the baseline's sampler
    assert ci["sampler"]["steps"] + ci["sampler"]["sr_steps"] <= 2 * base["sampler"]["steps"]
    prompts = load_prompts(**ci["prompts"])
    assert Counter(p.category for p in prompts) == {"Colors": 12, "Counting": 12, "Positional": 12}
