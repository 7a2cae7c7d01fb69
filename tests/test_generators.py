"""Any generator through the same harness: a diffusers pipeline, a DeepFloyd-IF-style cascade and a Python
callable, each built offline with random weights and run through bench.run's real path."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.generators import DiffusersGenerator, DiffusersSettings, Job
from bench.pairs import export_pairs, read_key
from bench.run import run
from bench.rundir import RunConfigMismatch, read_manifest

import benchmarks.tiny_pipelines as D
from conftest import resolved

COMMON = ["metrics=none", "device=cpu", "threads=1", "sampler.steps=2", "sampler.micro_batch=2"]


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return D.save_sd(tmp_path_factory.mktemp("sd") / "pipe")


def diffusers_cfg(path: str, n: int, weights: str = "[1,5]", *extra: str) -> dict:
    return resolved("config", ["model=diffusers", f"model.path={path}", f"prompts.n={n}",
                               f"guidance.weights={weights}", *COMMON, *extra])


def digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "images").rglob("*.png"))}


def test_diffusers_sweep_differs_by_weight_and_images_do_not_depend_on_the_run(sd_dir, tmp_path):
    full, small = tmp_path / "full", tmp_path / "small"
    info = run(diffusers_cfg(str(sd_dir), 3), full)["info"]
    assert info["generator"]["kind"] == "diffusers" and info["num_images"] == 6
    man = read_manifest(full)
    assert set(man["width"]) == {"16"}
    a = digests(full)
    by_w = {w: {k.split("/")[-1]: v for k, v in a.items() if f"/w{w}/" in k} for w in (1, 5)}
    assert all(by_w[1][name] != by_w[5][name] for name in by_w[1])  # guidance changes every image
    run(diffusers_cfg(str(sd_dir), 1, "[5]"), small)  # one prompt, one weight: other batch contents
    b = digests(small)
    assert b and all(a[k] == v for k, v in b.items())


def test_diffusers_resume_after_deleting_half_gives_identical_bytes(sd_dir, tmp_path):
    run_dir = tmp_path / "run"
    run(diffusers_cfg(str(sd_dir), 2), run_dir)
    ref = digests(run_dir)
    for p in sorted((run_dir / "images").rglob("*.png"))[::2]:
        p.unlink()
    info = run(diffusers_cfg(str(sd_dir), 2), run_dir)["info"]
    assert (info["images_generated"], info["images_resumed"]) == (2, 2)
    assert digests(run_dir) == ref


def test_a_run_directory_refuses_a_different_pipeline(sd_dir, tmp_path):
    run_dir = tmp_path / "run"
    run(diffusers_cfg(str(sd_dir), 1, "[5]"), run_dir)
    other = D.save_sd(tmp_path / "other", seed=1)  # same architecture, other weights
    with pytest.raises(RunConfigMismatch, match="generator.stage0_sha256"):
        run(diffusers_cfg(str(other), 1, "[5]"), run_dir)


def test_if_style_cascade_runs_both_stages(tmp_path):
    first, second = D.save_if_cascade(tmp_path / "if")
    cfg = resolved("config", ["model=diffusers", f"model.path=[{first},{second}]", "prompts.n=2",
                              "guidance.weights=[1,4]", "sampler.sr_steps=2", "guidance.sr_weight=2", *COMMON])
    info = run(cfg, tmp_path / "run")["info"]
    assert info["generator"]["stage0_class"] == "IFPipeline"
    assert info["generator"]["stage1_class"] == "IFSuperResolutionPipeline"
    assert set(read_manifest(tmp_path / "run")["width"]) == {"16"}  # stage II's size
    d = digests(tmp_path / "run")
    assert len(set(d.values())) == 4


def test_a_pipeline_that_is_not_text_to_image_fails_at_load_naming_its_class(tmp_path):
    path = D.save_img2img(tmp_path / "img2img")
    with pytest.raises(ValueError, match="StableDiffusionImg2ImgPipeline is not a text-to-image pipeline.*image"):
        DiffusersGenerator(DiffusersSettings(paths=(str(path),)))


def test_an_unknown_scheduler_name_is_an_error(sd_dir):
    with pytest.raises(ValueError, match="model.scheduler='NoSuchScheduler'"):
        DiffusersGenerator(DiffusersSettings(paths=(str(sd_dir),), scheduler="NoSuchScheduler"))


def test_scheduler_swap_by_class_name(sd_dir):
    g = DiffusersGenerator(DiffusersSettings(paths=(str(sd_dir),), scheduler="DPMSolverMultistepScheduler", steps=2))
    assert g.identity()["stage0_scheduler"] == "DPMSolverMultistepScheduler"
    assert g([Job("a red circle", 1, 3.0), Job("a red circle", 1, 3.0)]).shape == (2, 16, 16, 3)


def test_pairs_between_a_diffusers_run_and_a_built_in_run(sd_dir, tiny_checkpoints, tmp_path):
    a, b = tmp_path / "sd", tmp_path / "imagen"
    run(diffusers_cfg(str(sd_dir), 2, "[5]"), a)
    run(resolved("config", ["model=imagen_tiny", f"model.stages.0.checkpoint={tiny_checkpoints['base']}",
                            f"model.stages.1.checkpoint={tiny_checkpoints['sr']}", "prompts.n=2",
                            "guidance.weights=[5]", *COMMON]), b)
    ex = export_pairs(a, b, tmp_path / "pairs", k=1)
    assert ex.num_pairs == 2 and len(read_key(tmp_path / "pairs")) == 2


def test_python_callable_generator(tmp_path):
    cfg = resolved("config", ["model=python", "model.target=stand_in_sampler:sample", "model.resolution=12",
                              "+model.kwargs.contrast=0.5", "prompts.n=2", "guidance.weights=[1,3]", *COMMON])
    info = run(cfg, tmp_path / "run")["info"]
    assert info["generator"]["kind"] == "python" and info["images_generated"] == 4
    assert set(read_manifest(tmp_path / "run")["width"]) == {"12"}
    one = tmp_path / "one"
    cfg1 = resolved("config", ["model=python", "model.target=stand_in_sampler:sample", "model.resolution=12",
                               "+model.kwargs.contrast=0.5", "prompts.n=1", "guidance.weights=[3]", *COMMON])
    run(cfg1, one)
    ref = digests(tmp_path / "run")
    assert all(ref[k] == v for k, v in digests(one).items())


@pytest.mark.parametrize("target, message", [
    ("stand_in_sampler:wrong_size", "13x13 images; expected 12x12"),
    ("stand_in_sampler:missing_args", "lacks the arguments"),
    ("stand_in_sampler:nope", "has no function 'nope'"),
    ("no_such_module_xyz:sample", "cannot import"),
    ("stand_in_sampler", "expected 'package.module:function'"),
])
def test_python_callable_errors_name_the_target(tmp_path, target, message):
    cfg = resolved("config", ["model=python", f"model.target={target}", "model.resolution=12", "prompts.n=1",
                              "guidance.weights=[3]", *COMMON])
    with pytest.raises(ValueError, match=message):
        run(cfg, tmp_path / "run")
