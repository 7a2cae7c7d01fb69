"""Data parallelism inside a run (torchrun, gloo) and the run-directory lock.

The 2-process test runs the real command line, ``torchrun --nproc_per_node=2 -m bench.run``, on the
tiny cascade and checks byte-identical images and an identical metrics table against one process,
rank-0-only shared files, resume, and that a locked run directory stops every rank."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.distributed import Dist, DistributedError, default_threads
from bench.metrics.score_run import shard_indices
from bench.rundir import RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[1]


def test_shards_are_whole_batches_covering_every_row_once():
    for n, bs, world in ((10, 4, 2), (3, 4, 2), (17, 5, 3), (8, 4, 4)):
        parts = [shard_indices(n, bs, Dist(r, world)) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
        for p in parts:  # each shard is a run of whole batches of the one-process batching
            starts = [i for i in p.tolist() if i % bs == 0]
            assert all(set(range(s, min(s + bs, n))) <= set(p.tolist()) for s in starts)
            assert len(starts) == len(set(i // bs for i in p.tolist()))
    assert shard_indices(3, 4, Dist(1, 2)).size == 0  # more ranks than batches: an idle rank


def test_one_process_dist_is_a_no_op():
    d = Dist()
    assert d.is_main and d.broadcast(3) == 3 and d.all_gather("x") == ["x"] and d.gather(1) == [1]
    d.barrier()
    assert d.on_main(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(KeyError):
        d.on_main(lambda: {}["missing"])
    assert default_threads(Dist(0, 2, 0, 2)) == max(1, len(os.sched_getaffinity(0)) // 2)


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path) as lock:
        held = json.loads((tmp_path / ".lock").read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=rf"in use by pid {os.getpid()} on .*delete .*\.lock"):
            RunLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / ".lock").exists()


def test_stale_locks_are_taken_over_live_and_foreign_ones_are_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": None, "time": "t", "command": "old"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    # a live pid whose recorded start time differs: the pid was reused by another process
    reused = {**stale, "pid": os.getpid(), "started": "1"}
    (tmp_path / ".lock").write_text(json.dumps(reused))
    RunLock(tmp_path).acquire().release()
    # another machine's lock cannot be checked: refused while its owner keeps touching it
    (tmp_path / ".lock").write_text(json.dumps({**stale, "host": "another-node-xyz"}))
    with pytest.raises(RunLockedError, match="another-node-xyz"):
        RunLock(tmp_path).acquire()
    old = time.time() - 3600  # no heartbeat for an hour: that job is gone
    os.utime(tmp_path / ".lock", (old, old))
    RunLock(tmp_path).acquire().release()
    # a half-written lock is fresh for a minute, then a crash leftover
    (tmp_path / ".lock").write_text("")
    with pytest.raises(RunLockedError, match="being written"):
        RunLock(tmp_path).acquire()
    old = time.time() - 120
    os.utime(tmp_path / ".lock", (old, old))
    RunLock(tmp_path).acquire().release()
    # release never removes a lock that is not ours
    lock = RunLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text(json.dumps({**stale, "pid": 1}))
    lock.release()
    assert (tmp_path / ".lock").exists()


def test_the_holder_keeps_its_lock_fresh(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / ".lock", (old, old))
    deadline = time.time() + 10
    while time.time() - (tmp_path / ".lock").stat().st_mtime > 60 and time.time() < deadline:
        time.sleep(0.05)
    assert time.time() - (tmp_path / ".lock").stat().st_mtime < 60  # touched again by the heartbeat
    lock.release()
    assert not (tmp_path / ".lock").exists()


def test_run_refuses_a_directory_another_run_holds(tmp_path):
    from bench.run import run

    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": None, "time": "now", "command": "other run"}))
    with pytest.raises(RunLockedError, match="other run"):
        run({"seed": 0}, tmp_path)  # refused before reading any config or loading a model
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


# ---------------------------------------------------------------- two processes, real command line


def _overrides(ckpt: dict[str, Path], sclip: Path, cache: Path) -> list[str]:
    # 8 prompts x 2 weights = 16 images, micro-batches of 3 (uneven shards); metric batches of 5
    return ["model=imagen_tiny", f"model.stages.0.checkpoint={ckpt['base']}", f"model.stages.1.checkpoint={ckpt['sr']}",
            "prompts.n=8", "guidance.weights=[1,3]", "sampler.steps=3", "sampler.sr_steps=2", "sampler.micro_batch=3",
            "threads=1", "device=cpu", f"metrics.shapes_clip_path={sclip}", "metrics.ref_n=40",
            f"metrics.cache_dir={cache}", "metrics.kid_subsets=5", "metrics.bootstrap=100", "metrics.fd_bootstrap=5",
            "metrics.real_baseline=false", "metrics.batch_size=5", "metrics.workers=1"]


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "images").rglob("*.png"))}


def _torchrun(args: list[str], timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench.run",
           *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)  # a hang guard (a dead rank can block a collective)


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume(tmp_path, tiny_checkpoints, tiny_shapes_clip):
    from bench.run import run
    from conftest import resolved

    over = _overrides(tiny_checkpoints, tiny_shapes_clip, tmp_path / "refcache")
    cfg = resolved("config", over)
    one = tmp_path / "one"
    run(cfg, one)

    # ${now:...%f} differs between the two ranks: both must still write into rank 0's directory
    parent = tmp_path / "two"
    done = _torchrun(over + [f"hydra.run.dir={parent}/run-${{now:%H%M%S%f}}"])
    assert done.returncode == 0, done.stderr[-3000:]
    dirs = list(parent.iterdir())
    assert len(dirs) == 1, dirs
    two = dirs[0]

    assert len(_digests(one)) == 16 and _digests(two) == _digests(one)  # byte-identical PNGs
    pd.testing.assert_frame_equal(pd.read_csv(two / "metrics.csv"), pd.read_csv(one / "metrics.csv"))
    assert (two / "manifest.csv").read_text() == (one / "manifest.csv").read_text()
    info = json.loads((two / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["images_generated"] == 16 and info["images_resumed"] == 0
    assert (two / ".hydra" / "config.yaml").is_file()
    leftovers = [p for p in two.rglob("*") if ".tmp" in p.name or p.name == ".lock"]
    assert leftovers == []

    # resume: three images lost; a 2-process run in the same directory makes exactly those again
    lost = sorted((two / "images").rglob("*.png"))[::6]
    for p in lost:
        p.unlink()
    again = _torchrun(over + [f"hydra.run.dir={two}"])
    assert again.returncode == 0, again.stderr[-3000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["images_generated"] == len(lost) and info["images_resumed"] == 16 - len(lost)
    assert _digests(two) == _digests(one)
    pd.testing.assert_frame_equal(pd.read_csv(two / "metrics.csv"), pd.read_csv(one / "metrics.csv"))

    # a directory another live run holds: rank 0 refuses, and rank 1 stops with it
    (two / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": None,
                                           "time": "now", "command": "the other run"}))
    refused = _torchrun(over + [f"hydra.run.dir={two}"])
    assert refused.returncode != 0
    assert "RunLockedError" in refused.stderr and "the other run" in refused.stderr
    assert "DistributedError: rank 0 failed" in refused.stderr
    shutil.rmtree(parent)


def test_on_main_failure_reaches_every_rank():
    """Error propagation without processes: a fake two-rank Dist whose broadcast is the identity."""

    class Rank1(Dist):
        def broadcast(self, obj):
            return ("error", "ValueError: bad config")

    with pytest.raises(DistributedError, match="rank 0 failed: ValueError: bad config"):
        Rank1(1, 2).on_main(lambda: 1)


def test_ranks_with_different_generation_settings_all_stop():
    """A rank that resolved model.dtype=auto to bf16 beside one that resolved float32: every rank refuses."""
    from bench.run import RunConfigMismatch, check_ranks_agree

    mine = {"model.dtype": "float32", "seed": 0}

    class Mixed(Dist):
        def all_gather(self, obj):
            return [obj, {**obj, "model.dtype": "bfloat16", "generator.dtype": "bfloat16"}]

    with pytest.raises(RunConfigMismatch, match="generator.dtype, model.dtype"):
        check_ranks_agree(Mixed(0, 2), mine)

    class Same(Dist):
        def all_gather(self, obj):
            return [obj, dict(obj)]

    check_ranks_agree(Same(1, 2), mine)   # agreeing ranks pass
