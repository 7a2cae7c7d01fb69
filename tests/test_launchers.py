"""Hydra launchers for multirun over models / checkpoints / prompt sets: joblib (one machine) and
submitit (SLURM; ``submitit_local`` runs the same code path as local processes)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose_config  # the shared Hydra compose helper; tests/ is on sys.path (not a package)

REPO = Path(__file__).resolve().parents[1]
TINY = ["model=imagen_tiny", "metrics=none", "prompts.n=2", "guidance.weights=[1]", "sampler.steps=2",
        "sampler.sr_steps=2", "sampler.micro_batch=2", "threads=1", "device=cpu"]


@pytest.mark.parametrize("launcher, target", [
    ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
])
def test_launcher_configs_compose(launcher, target):
    extra = {"submitit_slurm": ["hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1",
                                "hydra.launcher.timeout_min=120"],
             "joblib": ["hydra.launcher.n_jobs=2"], "submitit_local": []}[launcher]
    cfg = compose_config("config", [f"hydra/launcher={launcher}", *extra], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.timeout_min == 120
        assert cfg.hydra.launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # on the shared disk


def _multirun(tmp_path: Path, launcher: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "bench.run", "-m", *launcher, *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def _check_jobs(sweep: Path) -> None:
    images = {}
    for job in ("0", "1"):
        d = sweep / job
        man = pd.read_csv(d / "manifest.csv")
        assert len(man) == 2 and (d / "run_info.json").is_file() and (d / ".hydra" / "config.yaml").is_file()
        assert all((d / p).is_file() for p in man["path"])
        images[job] = [(d / p).read_bytes() for p in man["path"]]
    assert images["0"] != images["1"]  # seed=0 and seed=1 were two jobs with their own run directories
    assert (sweep / "multirun.yaml").is_file()


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path):
    done = _multirun(tmp_path, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15"])
    assert done.returncode == 0, done.stderr[-3000:]
    _check_jobs(tmp_path / "sweep")
    logs = list((tmp_path / "sweep" / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # one submitit job per Hydra job


@pytest.mark.slow
def test_joblib_multirun(tmp_path):
    done = _multirun(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    _check_jobs(tmp_path / "sweep")
