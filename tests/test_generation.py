"""Per-image seeds, batch-shape independence, sweep batching and resume (byte-identical PNGs)."""
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.generate import generate, manifest_rows, micro_batches, plan_jobs, png_ok
from bench.generators import CascadeGenerator, SamplerSettings
from bench import rundir
from bench.rundir import write_manifest
from bench.prompts.records import PromptRecord
from bench.shapes import sample_scene

SETTINGS = SamplerSettings(steps=4, sr_steps=3)
MICRO_BATCH = 4


def _prompts(n: int) -> list[PromptRecord]:
    rng = random.Random("test-gen")
    out = []
    for i in range(n):
        sc = sample_scene(rng)
        out.append(PromptRecord(f"shapes-{i:04d}", sc.caption, sc.category, sc.to_json()))
    return out


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*.png"))}


def test_plan_seeds_are_shared_across_weights_and_stable():
    jobs = plan_jobs(_prompts(3), [1.0, 5.0], 2, run_seed=0)
    assert len(jobs) == 12
    by = {}
    for j in jobs:
        by.setdefault((j.prompt.id, j.sample_index), set()).add(j.seed)
    assert all(len(s) == 1 for s in by.values())  # same noise at every w
    assert len({next(iter(s)) for s in by.values()}) == 6
    assert [j.seed for j in plan_jobs(_prompts(3), [1.0, 5.0], 2, 0)] == [j.seed for j in jobs]
    assert jobs[0].seed != plan_jobs(_prompts(3), [1.0], 1, run_seed=1)[0].seed


@pytest.mark.parametrize("weights", [[], [-1.0], [2.0, 2.0], [float("nan")]])
def test_plan_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="guidance"):
        plan_jobs(_prompts(1), weights, 1, 0)


def test_micro_batches_have_fixed_shape_and_never_mix_w1():
    jobs = plan_jobs(_prompts(3), [1.0, 2.0, 3.0], 1, 0)
    chunks = micro_batches(jobs, 4)
    assert all(len(c) == 4 for c in chunks)
    for c in chunks:
        assert len({j.guidance_weight == 1.0 for j in c}) == 1
    assert sorted({j.image_index for c in chunks for j in c}) == list(range(9))


def test_image_independent_of_batch_and_sweep(tiny_cascade, tmp_path):
    prompts = _prompts(5)
    # the whole sweep, batched
    full = tmp_path / "full"
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [1.0, 3.0, 7.0], 1, 0), full, MICRO_BATCH, progress=False)
    ref = _digests(full)
    assert len(ref) == 15
    # each weight alone
    for w in (1.0, 3.0, 7.0):
        one = tmp_path / f"w{w}"
        generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [w], 1, 0), one, MICRO_BATCH, progress=False)
        assert _digests(one) == {k: v for k, v in ref.items() if k.startswith(f"images/w{w:g}/")}
    # one prompt alone (other batch neighbours, padding)
    solo = tmp_path / "solo"
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts[3:4], [3.0], 1, 0), solo, MICRO_BATCH, progress=False)
    got = _digests(solo)
    assert got == {k: ref[k] for k in got}


def test_same_seed_same_image_and_seed_matters(tiny_cascade, tmp_path):
    prompts = _prompts(2)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [2.0], 1, 0), a, MICRO_BATCH, progress=False)
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [2.0], 1, 0), b, MICRO_BATCH, progress=False)
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [2.0], 1, 1), c, MICRO_BATCH, progress=False)
    assert _digests(a) == _digests(b)
    assert set(_digests(a).values()).isdisjoint(_digests(c).values())


def test_guidance_changes_images(tiny_cascade, tmp_path):
    prompts = _prompts(2)
    generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(prompts, [1.0, 8.0], 1, 0), tmp_path, MICRO_BATCH, progress=False)
    a = np.asarray(Image.open(tmp_path / "images/w1/shapes-0000_s0.png"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "images/w8/shapes-0000_s0.png"), dtype=float)
    assert a.shape == (32, 32, 3) and np.abs(a - b).mean() > 0.5


def test_resume_after_deleting_half_gives_identical_files(tiny_cascade, tmp_path):
    jobs = plan_jobs(_prompts(4), [1.0, 4.0], 1, 0)
    counts = generate(CascadeGenerator(tiny_cascade, SETTINGS), jobs, tmp_path, MICRO_BATCH, progress=False)
    write_manifest(tmp_path, manifest_rows(jobs, 32))
    ref = _digests(tmp_path)
    manifest = (tmp_path / "manifest.csv").read_bytes()
    assert counts == {"generated": 8, "skipped": 0}
    files = sorted(tmp_path.rglob("*.png"))
    for f in files[::2]:
        f.unlink()
    files[1].write_bytes(files[1].read_bytes()[:50])  # a truncated PNG is not "finished"
    assert not png_ok(files[1], 32)
    counts = generate(CascadeGenerator(tiny_cascade, SETTINGS), jobs, tmp_path, MICRO_BATCH, progress=False)
    write_manifest(tmp_path, manifest_rows(jobs, 32))
    assert counts == {"generated": 5, "skipped": 3}
    assert _digests(tmp_path) == ref
    assert (tmp_path / "manifest.csv").read_bytes() == manifest


def test_manifest_columns(tiny_cascade, tmp_path):
    import pandas as pd

    jobs = plan_jobs(_prompts(2), [1.0, 2.0], 1, 0)
    generate(CascadeGenerator(tiny_cascade, SETTINGS), jobs, tmp_path, MICRO_BATCH, progress=False)
    df = pd.read_csv(write_manifest(tmp_path, manifest_rows(jobs, 32)), keep_default_na=False)
    assert list(df.columns[:6]) == ["path", "prompt_id", "prompt", "category", "seed", "guidance_weight"]
    assert len(df) == 4 and all((tmp_path / p).exists() for p in df.path)
    assert set(df.guidance_weight) == {1.0, 2.0}


def test_nonfinite_samples_fail_with_prompt_and_seed(tiny_cascade, tmp_path, monkeypatch):
    from bench import generate as gen

    def broken(*a, **k):
        return torch.full((4, 3, 32, 32), float("nan"))

    monkeypatch.setattr(tiny_cascade, "sample", broken)
    with pytest.raises(gen.NonFiniteSampleError, match="seed"):
        generate(CascadeGenerator(tiny_cascade, SETTINGS), plan_jobs(_prompts(1), [2.0], 1, 0), tmp_path, MICRO_BATCH, progress=False)


def test_run_directories_from_before_a_new_generation_key_still_resume(tmp_path):
    """generation.json written before ``sampler.grid`` existed: its images were made on the uniform-t grid,
    so the same settings with grid=time resume, and grid=logsnr is refused by name."""
    old = {"sampler.kind": "ddim", "sampler.steps": 25, "seed": 0}
    rundir.write_generation(tmp_path, old)
    rundir.check_generation(tmp_path, {**old, "sampler.grid": "time"}, True)
    with pytest.raises(rundir.RunConfigMismatch, match="sampler.grid"):
        rundir.check_generation(tmp_path, {**old, "sampler.grid": "logsnr"}, True)
    # and before ``guidance.interval``: every step was guided
    rundir.check_generation(tmp_path, {**old, "sampler.grid": "time", "guidance.interval": None}, True)
    with pytest.raises(rundir.RunConfigMismatch, match="guidance.interval"):
        rundir.check_generation(tmp_path, {**old, "guidance.interval": [0.3, 0.8]}, True)
