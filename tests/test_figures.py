"""Paper-figure configs compose into the intended run configs, fit the time budget, and one figure
runs end to end at a tiny size (random tiny cascade, stand-in shapes-CLIP) and resumes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from bench.figures import (REF_STEPS, FigureError, FigureSpec, Variant, VariantResult, compose_run_config,
                           figure_plot, image_steps, make_figure, num_images, plan, steps_table)

import metrics_support  # shared stand-ins; tests/ is on sys.path (not a package)
from conftest import resolved  # the shared Hydra compose helper

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
FIGURES = sorted(p.stem for p in (CONF / "figure").glob("*.yaml"))
BUDGET_S = 30 * 60
SEC_PER_IMAGE = 2.0  # the slow end of the shipped cascade on 2 CPU cores (25 + 20 steps)


def _figure(name: str, overrides: list[str] = ()) -> FigureSpec:
    d = resolved("figures", [f"figure={name}", *overrides])
    return FigureSpec.from_dict(d["figure"], d["run"])


def test_required_figures_exist():
    assert {"guidance", "thresholding", "aug_level", "text_encoder", "sampler_steps"} <= set(FIGURES)


@pytest.mark.parametrize("name", FIGURES)
def test_figure_config_composes_into_run_configs_within_budget(name):
    spec = _figure(name)
    assert spec.name == name and spec.paper and spec.expect and spec.model == "imagen_base"
    runs = [(v, compose_run_config(o)) for v, o in plan(spec)]
    assert runs
    for v, cfg in runs:
        assert cfg["model"]["name"] == "imagen_base" and cfg["prompts"]["limit"] == spec.size.prompts
        assert spec.size.prompts <= cfg["prompts"]["n"]  # the shapes set has that many prompts to take
        assert cfg["guidance"]["weights"] == [float(w) for w in spec.size.weights]
        assert spec.size.steps is None or cfg["sampler"]["steps"] == spec.size.steps
        assert cfg["metrics"]["enabled"] is True
    # the default size finishes within the 30-minute budget, with room left for metrics (the estimate scales
    # SEC_PER_IMAGE, stated at 25 + 20 steps, by each variant's base + SR steps)
    assert image_steps(spec) * SEC_PER_IMAGE / REF_STEPS <= BUDGET_S - 5 * 60, image_steps(spec)
    if spec.size.steps is not None and spec.size.sr_steps is not None:  # every variant at the figure's steps
        assert image_steps(spec) == num_images(spec) * (spec.size.steps + spec.size.sr_steps)
    if name == "thresholding":
        assert [c["guidance"]["thresholding"] for _, c in runs] == ["none", "static", "dynamic"]
    if name == "aug_level":
        assert [c["sampler"]["aug_level"] for _, c in runs] == [0.0, 0.1, 0.25, 0.5]
    if name == "sampler_steps":
        assert spec.x_axis == "steps" and [float(w) for w in spec.size.weights] == [1.0, 3.0, 5.0]
        grids = [("ddim", "time"), ("ddpm", "time"), ("dpmpp_2m", "time"), ("dpmpp_2m", "logsnr")]
        assert sorted((c["sampler"]["kind"], c["sampler"]["grid"], c["sampler"]["steps"]) for _, c in runs) == sorted(
            (k, g, n) for k, g in grids for n in (5, 10, 15, 25, 50))
        assert all(c["sampler"]["sr_steps"] is None for _, c in runs)  # SR stage at the same steps
    if name == "guidance":
        assert len(runs) == 1 and min(spec.size.weights) == 1 and max(spec.size.weights) >= 7.5


def test_text_encoder_control_arm_takes_a_second_checkpoint():
    spec = _figure("text_encoder", ["figure.control.base_checkpoint=null"])
    arms = plan(spec)
    cfgs = [compose_run_config(o) for _, o in arms]
    assert [c["model"]["text_encoder"]["kind"] for c in cfgs] == ["minilm", "random", "minilm"]
    assert [c["guidance"]["sr_weight"] for c in cfgs] == [1.0, 1.0, 0.0]
    assert "sensitivity" in arms[1][0].note and "trained" in spec.note  # stated honestly
    spec = _figure("text_encoder")  # the shipped control base makes the retrained arms by default
    arms = plan(spec)
    assert len(arms) == 5 and (REPO / "checkpoints/base_random/ema.safetensors").is_file()
    # the text-free SR pair differs only in the base stage's checkpoint and encoder
    a, b = (compose_run_config(arms[i][1]) for i in (3, 4))
    assert a["guidance"]["sr_weight"] == b["guidance"]["sr_weight"] == 0.0
    assert a["model"]["stages"][1] == b["model"]["stages"][1]
    assert (a["model"]["text_encoder"]["kind"], b["model"]["text_encoder"]["kind"]) == ("minilm", "random")
    assert b["model"]["stages"][0]["checkpoint"] == "checkpoints/base_random/ema.safetensors"
    cfg = compose_run_config(arms[2][1])
    assert cfg["model"]["text_encoder"]["kind"] == "random"
    assert cfg["model"]["stages"][0]["checkpoint"] == "checkpoints/base_random/ema.safetensors"
    assert cfg["model"]["stages"][1]["checkpoint"] == "checkpoints/sr/ema.safetensors"  # not given: shipped
    assert image_steps(spec) * SEC_PER_IMAGE / REF_STEPS <= BUDGET_S - 5 * 60
    spec = _figure("text_encoder", ["figure.control.model=imagen_tiny"])
    assert compose_run_config(plan(spec)[2][1])["model"]["name"] == "imagen_tiny"


def test_unknown_figure_keys_are_named():
    with pytest.raises(FigureError, match="unknown keys \\['sizes'\\]"):
        FigureSpec.from_dict({"name": "x", "title": "", "paper": "", "expect": "", "sizes": {}, "variants": []})
    with pytest.raises(FigureError, match="conf/figure/x.yaml"):
        FigureSpec.from_dict({"name": "x", "title": "", "paper": "", "expect": "",
                              "size": {"prompts": 1, "weights": [1], "steps": 1}, "variants": [{"lable": "a"}]})


def _fake_result(kind: str, steps: int, tmp: Path, grid: str | None = None) -> VariantResult:
    rows = []
    for w in (1.0, 3.0):
        for cat in ("all", "Colors"):
            v = 100.0 / steps + w
            rows.append({"guidance_weight": w, "category": cat, "num_images": 4, "fd": v, "fd_ci_low": v - 1,
                         "fd_ci_high": v + 1, "fd_extractor": "x", "clip_score": 20 + steps / 10, "clip_model": "m",
                         "alignment": min(steps / 50, 1.0)})
    cfg = {"sampler": {"kind": kind, "steps": steps, "sr_steps": None, **({"grid": grid} if grid else {})}}
    return VariantResult(Variant(f"{kind} {grid} {steps}"), tmp, cfg, [], pd.DataFrame(rows), 1.0, False, {})


def test_sampler_steps_plot_draws_metrics_against_steps(tmp_path):
    spec = _figure("sampler_steps")
    results = [_fake_result(k, n, tmp_path) for k in ("ddim", "dpmpp_2m") for n in (25, 5, 10)]
    results += [_fake_result("dpmpp_2m", n, tmp_path, "logsnr") for n in (10, 5)]  # a grid of its own: a line
    table = steps_table(results)
    assert len(table) == 16 and set(table["category"]) == {"all"}
    assert table.loc[table["sampler"] == "ddim", "steps"].tolist() == [5, 5, 10, 10, 25, 25]
    assert table.loc[table["sampler"] == "dpmpp_2m (logsnr)", "steps"].tolist() == [5, 5, 10, 10]
    png = figure_plot(spec, results, tmp_path / "s.png", tmp_path / "s.svg")
    assert png == tmp_path / "s.png"
    with Image.open(png) as im:
        assert im.size[0] < im.size[1] * 1.5  # 3 metric rows x 2 weight columns
    svg = (tmp_path / "s.svg").read_text()
    assert "DPM-Solver++(2M)" in svg and "logSNR grid" in svg and "sampler steps per stage" in svg and "w = 3" in svg
    empty = [VariantResult(Variant("a"), tmp_path, {"sampler": {"kind": "ddim", "steps": 5}}, [], None, 1.0, False, {})]
    assert figure_plot(spec, empty, tmp_path / "e.png") is None and not (tmp_path / "e.png").exists()


TINY = ["run.model=imagen_tiny", "figure.size.prompts=2", "figure.size.weights=[1,3]", "figure.size.steps=2",
        "figure.size.sr_steps=2", "run.threads=1"]


@pytest.mark.slow
def test_thresholding_figure_end_to_end_tiny_and_resumes(tmp_path, monkeypatch):
    metrics_support.install_stub_shapes_clip(monkeypatch)  # a stand-in shapes-CLIP: FD, CLIP score and CMMD work
    cheap = ["metrics.ref_n=40", f"metrics.cache_dir={tmp_path / 'ref'}", "metrics.bootstrap=50",
             "metrics.fd_bootstrap=5", "metrics.kid=false", "metrics.real_baseline=false", "metrics.device=cpu",
             "device=cpu", "sampler.micro_batch=2"]
    spec = _figure("thresholding", TINY)
    spec.overrides = cheap
    out = tmp_path / "fig"
    paths = make_figure(spec, out)
    assert set(paths) == {"csv", "png", "svg", "samples", "readme"}
    with Image.open(paths["samples"]) as im:
        assert im.size[1] > im.size[0]  # 2 prompts x 3 variants = 6 rows, 2 weights
    with Image.open(paths["png"]) as im:
        im.verify()
    assert "<svg" in paths["svg"].read_text()[:2000]
    table = pd.read_csv(paths["csv"])
    assert table["label"].unique().tolist() == ["no thresholding", "static thresholding",
                                                "dynamic thresholding (p=0.995)"]
    allrows = table[table["category"] == "all"]
    assert len(allrows) == 6 and sorted(set(allrows["guidance_weight"])) == [1.0, 3.0]
    assert allrows["num_images"].eq(2).all() and allrows["fd"].notna().all() and allrows["clip_score"].notna().all()
    assert allrows["alignment"].between(0, 1).all() and allrows["random_weights"].all()
    assert "guidance.thresholding=static" in table.loc[table["variant"] == 1, "overrides"].iloc[0]
    for d in table["run_dir"].unique():  # every variant is a full run directory with its report
        assert (Path(d) / "manifest.csv").is_file() and (Path(d) / "report.html").is_file()
        assert (Path(d) / "pareto.png").is_file() and (Path(d) / ".hydra" / "config.yaml").is_file()
    readme = paths["readme"].read_text()
    assert "dynamic thresholding" in readme and "RANDOM WEIGHTS" in readme and "Fig. A.11" in readme

    # rerun: finished variants are reused, nothing is generated or scored again
    import bench.run

    def boom(*a, **k):
        raise AssertionError("a finished variant ran again")

    monkeypatch.setattr(bench.run, "run", boom)
    again = make_figure(spec, out)
    assert pd.read_csv(again["csv"])[["label", "guidance_weight", "category", "fd"]].equals(
        table[["label", "guidance_weight", "category", "fd"]])

    # images made with other checkpoint files are never mixed with new ones
    import json

    record = out / "runs" / "static-thresholding" / "figure_variant.json"
    data = json.loads(record.read_text())
    data["checkpoints"] = ["0" * 64, "none"]
    record.write_text(json.dumps(data))
    with pytest.raises(FigureError, match="other checkpoint files"):
        make_figure(spec, out)
    assert len(list((out / "runs" / "static-thresholding" / "images").rglob("*.png"))) == 4  # kept


def test_cli_dry_run_prints_plan_and_estimate(tmp_path):
    cmd = [sys.executable, "-m", "bench.figures", "figure=text_encoder", "dry_run=true", f"out_dir={tmp_path / 'o'}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "5 variant(s), 960 images; estimate about" in out.stdout
    assert "model.text_encoder.kind=random" in out.stdout


def test_a_rescore_keeps_the_generation_time_of_the_images_it_resumed():
    from bench.figures import _earlier_generation_s

    prev = {"info": {"num_images": 540, "wall_time_s": {"generation": 211.7, "metrics": 3.6}}}
    assert _earlier_generation_s(prev, {"images_resumed": 540, "num_images": 540}) == pytest.approx(211.7)
    assert _earlier_generation_s(prev, {"images_resumed": 270, "num_images": 540}) == pytest.approx(105.85)
    assert _earlier_generation_s(prev, {"images_resumed": 0, "num_images": 540}) == 0.0
    assert _earlier_generation_s(None, {"images_resumed": 540, "num_images": 540}) == 0.0
