"""Determinism: the same config and seeds give byte-identical images, manifest and metrics.csv
on the same machine, run by two separate ``python -m bench.run`` processes into two directories
(each computing its own reference statistics from scratch)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as out:
        rc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, env=env, stdout=out,
                            stderr=subprocess.STDOUT).returncode
    assert rc == 0, log.read_text(errors="replace")[-3000:]


def files(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run_dir / "images").rglob("*.png"))}


@pytest.mark.slow
def test_two_cli_runs_are_byte_identical(tiny_checkpoints, tmp_path):
    runs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        run_cli(["model=imagen_tiny", f"model.stages.0.checkpoint={tiny_checkpoints['base']}",
                 f"model.stages.1.checkpoint={tiny_checkpoints['sr']}", "prompts.n=6", "guidance.weights=[1,2.5,6]",
                 "samples_per_prompt=2", "sampler.steps=3", "sampler.sr_steps=2", "sampler.micro_batch=4",
                 "seed=7", "metrics.ref_n=40", "metrics.bootstrap=50", "metrics.fd_bootstrap=5",
                 "metrics.kid_subsets=5", "metrics.batch_size=8", f"metrics.cache_dir={tmp_path / name}-refcache",
                 "metrics.device=cpu", "device=cpu", "threads=1", f"hydra.run.dir={run_dir}"], tmp_path / f"{name}.log")
        runs.append(run_dir)
    a, b = runs
    assert len(files(a)) == 6 * 2 * 3 and files(a) == files(b)
    assert len(set(files(a).values())) == 36  # every image differs (seeds per prompt and sample, w matters)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    m = pd.read_csv(a / "metrics.csv")
    assert len(m) == 3 * 4  # the comparison covers real numbers, not empty columns
    for col in ("fd", "fd_ci_low", "kid", "cmmd", "clip_score", "alignment"):
        assert m[col].notna().all(), col
