"""Crash and resume: ``python -m bench.run`` SIGKILLed mid-generation or mid-metrics, then rerun into the
same run directory, ends with the same manifest, image bytes and metrics as an uninterrupted run.

The killed process is the real CLI. To kill it at a known point rather than by luck, it runs through
a small wrapper that only pauses it (it changes no result): just before the rename that finishes an
image (the image's bytes are written and fsynced to a temporary name at that moment), or while
metrics read the run's images (after the reference statistics were computed and cached). A finished
PNG is then also truncated by hand, as a torn copy would leave it: resume must regenerate it, never
count it as finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 1800  # generous: a loaded CI machine; an idle one needs seconds

# Pauses the CLI at a chosen point (then waits to be killed); everything else is `python -m bench.run`.
PAUSING_CLI = r'''
import os, sys, time, types
pause, marker = os.environ["BENCH_TEST_PAUSE"], os.environ["BENCH_TEST_MARKER"]

def stop_here():
    open(marker, "w").close()
    time.sleep(3600)

if pause == "before_png_rename":
    import bench.rundir.files as files
    after, renames = int(os.environ["BENCH_TEST_AFTER"]), []

    class Os(types.ModuleType):
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if str(dst).endswith(".png"):
                renames.append(dst)
                if len(renames) == after + 1:
                    stop_here()
            os.replace(src, dst)

    files.os = Os("os")
elif pause == "metrics_reading_images":
    import bench.metrics.score_run as score_run
    real_decode = score_run.decode_chunks

    def decode_chunks(*args, **kwargs):
        for i, batch in enumerate(real_decode(*args, **kwargs)):
            if i == 1:
                stop_here()
            yield batch

    score_run.decode_chunks = decode_chunks
import runpy
runpy.run_module("bench.run", run_name="__main__", alter_sys=True)  # exactly what `python -m bench.run` does
'''


def cli_args(ckpt: dict[str, Path], run_dir: Path, cache: Path) -> list[str]:
    """A small run: 6 shapes prompts x 2 weights (12 images, 6 micro-batches of 2), cheap metrics."""
    return ["model=imagen_tiny", f"model.stages.0.checkpoint={ckpt['base']}",
            f"model.stages.1.checkpoint={ckpt['sr']}", "prompts.n=6", "guidance.weights=[1,3]", "sampler.steps=3",
            "sampler.sr_steps=2", "sampler.micro_batch=2", "metrics.ref_n=40", "metrics.bootstrap=50",
            "metrics.fd_bootstrap=5", "metrics.kid_subsets=5", "metrics.batch_size=4", "metrics.workers=1",
            f"metrics.cache_dir={cache}", "metrics.device=cpu", "device=cpu", "threads=1",
            f"hydra.run.dir={run_dir}"]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def run_cli(args: list[str], log: Path) -> None:
    with open(log, "wb") as out:
        rc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, env=env(), stdout=out,
                            stderr=subprocess.STDOUT, timeout=WAIT_S).returncode
    assert rc == 0, log.read_text(errors="replace")[-3000:]


def run_and_kill(args: list[str], log: Path, pause: str, **extra: str) -> None:
    """Start the CLI paused at ``pause``, wait until it gets there, SIGKILL it."""
    marker = log.with_suffix(".paused")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PAUSING_CLI, *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=env(BENCH_TEST_PAUSE=pause, BENCH_TEST_MARKER=str(marker), **extra))
        try:
            deadline = time.monotonic() + WAIT_S
            while not marker.exists():
                assert proc.poll() is None, f"exited {proc.returncode} before {pause}:\n" + \
                    log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, f"never reached {pause}"
                time.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def pngs(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "images").rglob("*.png"))}


def same_outputs(run_dir: Path, ref: Path) -> None:
    assert pngs(run_dir) == pngs(ref) and len(pngs(ref)) == 12
    assert (run_dir / "manifest.csv").read_bytes() == (ref / "manifest.csv").read_bytes()
    assert (run_dir / "metrics.csv").read_bytes() == (ref / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tiny_checkpoints, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("uninterrupted")
    run_cli(cli_args(tiny_checkpoints, d / "run", d / "refcache"), d / "log.txt")
    import pandas as pd

    m = pd.read_csv(d / "run" / "metrics.csv")
    assert len(m) == 8 and m["fd"].notna().all() and m["clip_score"].notna().all() and m["alignment"].notna().all()
    return d / "run"


@pytest.mark.slow
def test_sigkill_mid_generation_then_resume(uninterrupted, tiny_checkpoints, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "refcache"
    args = cli_args(tiny_checkpoints, run_dir, cache)
    run_and_kill(args, tmp_path / "killed.txt", "before_png_rename", BENCH_TEST_AFTER="3")

    # killed with 3 images finished and the 4th written to its temporary name, not yet renamed
    done = pngs(run_dir)
    assert len(done) == 3 and done == {k: v for k, v in pngs(uninterrupted).items() if k in done}
    temps = [p for p in (run_dir / "images").rglob("*") if p.is_file() and not p.name.endswith(".png")]
    assert len(temps) == 1 and temps[0].name.startswith(".") and ".png.tmp" in temps[0].name
    final = temps[0].with_name(temps[0].name[1:temps[0].name.index(".png.tmp") + 4])
    assert not final.exists()
    assert not (run_dir / "manifest.csv").exists() and not (run_dir / "metrics.csv").exists()
    assert (run_dir / ".lock").exists()  # left by the dead process; the rerun takes it over

    # a torn copy of a finished image must not pass for finished
    torn = run_dir / sorted(done)[0]
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])

    run_cli(args, tmp_path / "resumed.txt")
    same_outputs(run_dir, uninterrupted)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["images_resumed"], info["images_generated"]) == (2, 10)
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_sigkill_mid_metrics_then_resume(uninterrupted, tiny_checkpoints, tmp_path):
    from bench.metrics.refstats import RefStats

    run_dir, cache = tmp_path / "run", tmp_path / "refcache"
    args = cli_args(tiny_checkpoints, run_dir, cache)
    run_and_kill(args, tmp_path / "killed.txt", "metrics_reading_images")

    # generation had finished: every image and the manifest are complete; no metrics.csv yet
    assert pngs(run_dir) == pngs(uninterrupted)
    assert (run_dir / "manifest.csv").read_bytes() == (uninterrupted / "manifest.csv").read_bytes()
    assert not (run_dir / "metrics.csv").exists() and not (run_dir / "metrics.json").exists()
    cached = sorted(cache.glob("*.npz"))
    assert cached, "reference statistics are computed before the images are read"
    for f in cached:  # only complete files under their final names
        ref = RefStats.load(f)
        assert ref.groups["all"].n == 40 and np.isfinite(ref.groups["all"].sum_outer).all()

    run_cli(args, tmp_path / "resumed.txt")
    same_outputs(run_dir, uninterrupted)  # cached reference stats give the same numbers as fresh ones
    info = json.loads((run_dir / "run_info.json").read_text())
    assert (info["images_resumed"], info["images_generated"]) == (12, 0)
