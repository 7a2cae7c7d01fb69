"""Every config group composes; the CLI contract of DESIGN section 5 holds."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import compose_config  # the shared Hydra compose helper; tests/ is on sys.path (not a package)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
GROUPS = ["model", "guidance", "prompts", "sampler", "metrics"]


def _compose(overrides, name="config"):
    return compose_config(name, overrides)


def test_default_composes_to_the_main_job():
    cfg = _compose(["model=imagen_base", "guidance=sweep"])
    assert cfg.model.name == "imagen_base"
    w = list(cfg.guidance.weights)
    assert min(w) == 1 and max(w) >= 10 and cfg.guidance.thresholding == "dynamic"
    assert 0 < cfg.guidance.percentile < 1
    assert cfg.prompts.name == "shapes"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, group
    for opt in options:
        cfg = _compose([f"{group}={opt}"])
        OmegaConf.to_container(cfg, resolve=True)  # interpolations resolve too
        assert cfg[group] is not None


def test_required_options_exist():
    have = {g: {p.stem for p in (CONF / g).glob("*.yaml")} for g in GROUPS}
    assert {"imagen_base", "imagen_tiny", "imagen_paper"} <= have["model"]
    assert {"sweep", "single"} <= have["guidance"]
    assert {"shapes", "drawbench", "coco", "parti"} <= have["prompts"]


def test_paper_model_has_the_paper_cascade():
    cfg = _compose(["model=imagen_paper"])
    sizes = [s.image_size for s in cfg.model.stages]
    assert sizes == [64, 256, 1024] and cfg.model.text_encoder.kind == "t5"


def test_standard_overrides():
    cfg = _compose(["prompts=drawbench", "prompts.limit=5", "sampler.steps=7", "seed=3"])
    assert (cfg.prompts.limit, cfg.sampler.steps, cfg.seed) == (5, 7, 3)


def test_unknown_keys_fail_with_hydras_error():
    with pytest.raises(ConfigCompositionException):
        _compose(["sampler.stepz=3"])
    with pytest.raises(ConfigCompositionException):
        _compose(["model=imagen_huge"])


def test_training_recipes_compose():
    from bench.train import Recipe

    for recipe in ("base", "sr"):
        cfg = _compose([f"recipe={recipe}"], name="train")
        assert cfg.recipe.stage == recipe and cfg.recipe.text_drop == 0.1
    for path in sorted((REPO / "conf" / "recipe").glob("*.yaml")):   # every recipe is a valid Recipe
        r = Recipe(**OmegaConf.to_container(_compose([f"recipe={path.stem}"], name="train").recipe, resolve=True))
        assert r.stage in ("base", "sr") and r.arch, path.name
        if r.init_from:   # a committed file, or one `make` writes out of git (the v1 bases: Makefile V1_*)
            assert (REPO / r.init_from).exists() or r.init_from in _makefile_v1_files(), path.name


def _makefile_v1_files() -> set[str]:
    """The files the Makefile's V1_BASE / V1_RANDOM rules write with `git show COMMIT:PATH`."""
    makefile = (REPO / "Makefile").read_text()
    names = dict(re.findall(r"^(V1_\w+) := (\S+)$", makefile, flags=re.M))
    assert all(f"$({n}):\n\tmkdir -p $(@D) && git show " in makefile for n in names), "a V1 file without its rule"
    return set(names.values())


def test_cli_run_end_to_end_with_random_tiny_model(tmp_path):
    """`python -m bench.run` writes the run-directory contract, and says loudly when weights are random."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench.run", "model=imagen_tiny", "guidance=sweep", "guidance.weights=[1,4]",
           "prompts=shapes", "prompts.limit=3", "sampler.steps=2", "sampler.sr_steps=2", "metrics=none",
           f"hydra.run.dir={run_dir}", "threads=1"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    import pandas as pd

    m = pd.read_csv(run_dir / "manifest.csv")
    assert len(m) == 6 and set(m.guidance_weight) == {1.0, 4.0}
    assert all((run_dir / p).exists() for p in m.path)
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "run_info.json").exists()
    assert (run_dir / "RANDOM_WEIGHTS.txt").exists()
    assert "RANDOM WEIGHTS" in out.stdout + out.stderr
    # the same command again resumes: nothing regenerated
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "(0 generated, 6 resumed)" in again.stdout
    # other pixel-changing settings into the same directory are refused, images kept
    clash = subprocess.run(cmd[:-2] + ["seed=5", f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True,
                           text=True)
    assert clash.returncode != 0 and "other settings" in clash.stderr
    assert len(list((run_dir / "images").rglob("*.png"))) == 6


def test_shipped_checkpoints_match_the_configured_architecture_and_recipe():
    """conf/model/imagen_base.yaml's ``arch`` is what a missing checkpoint is rebuilt as, and the recipes
    read it (conf/train.yaml's shipped_model): both must describe the shipped file."""
    from imagen.checkpoint import arch_of, build_stage, read_meta

    model = OmegaConf.to_container(_compose(["model=imagen_base"]).model, resolve=True)
    for stage in model["stages"]:
        meta = read_meta(REPO / stage["checkpoint"])
        recipe = OmegaConf.to_container(_compose([f"recipe={stage['kind']}"], name="train").recipe, resolve=True)
        assert meta["kind"] == stage["kind"]
        shipped = json.loads(json.dumps(arch_of(build_stage(stage["kind"], meta["arch"]))))  # legacy keys dropped
        for arch in (stage["arch"], recipe["arch"]):  # in full, defaults included
            assert json.loads(json.dumps(arch_of(build_stage(stage["kind"], arch)))) == shipped, stage["kind"]
        assert (meta["image_size"], meta["lowres_size"]) == (stage["image_size"], stage["lowres_size"])
        assert meta["prediction"] == stage["prediction"] == recipe["prediction"]


def test_the_shipped_base_is_the_last_phase_of_the_chain_the_makefile_trains():
    """checkpoints/base/recipe.json (make ship-base) names the phases of `make train-layout` in order, and
    its last phase's recipe is the one in the shipped weights' own metadata."""
    from imagen.checkpoint import read_meta

    record = json.loads((REPO / "checkpoints/base/recipe.json").read_text())
    makefile = (REPO / "Makefile").read_text()
    train_layout = makefile[makefile.index("\ntrain-layout:"):makefile.index("\nship-base:")]
    assert list(record["phases"]) == re.findall(r"out_dir=\$\(LAYOUT_DIR\)/(\w+)", train_layout)
    last = list(record["phases"].values())[-1]["recipe"]
    assert read_meta(REPO / "checkpoints/base/ema.safetensors")["recipe"] == json.loads(json.dumps(last))
    assert record["started_from"]["path"] == "runs/base_v1/ema.safetensors"
