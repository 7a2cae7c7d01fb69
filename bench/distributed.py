"""Data parallelism inside one run, and the lock that keeps two runs out of one run directory.

    torchrun --nproc_per_node=N -m bench.run hydra.run.dir=DIR ...        # N processes, one run
    torchrun --nnodes=M --nproc_per_node=N --rdzv-endpoint=HOST:PORT -m bench.run ...  # M machines

Every rank plans the same image list and the same fixed-shape micro-batches, then takes
chunks ``rank::world`` (``bench.generate.generate(shard=...)``); an image depends only on its
seed, so the PNGs are byte-identical to a one-process run. Metric feature extraction is sharded
the same way, by whole batches of ``metrics.batch_size`` images (so every batch has the shape it
has in a one-process run), and the per-image features are gathered to rank 0, which computes the
metrics table: its bootstrap intervals, KID, CMMD and per-image CLIP scores need the per-image
features, and the float64 Fréchet states built from them equal the sum of the shards' states
(``FrechetStats.merge``). Rank 0 alone writes the shared files (``generation.json``,
``manifest.csv``, ``metrics.csv``, ``run_info.json``, ``.hydra/``); every image has exactly one
writer, and every file is written to a per-process temporary name and renamed.

Collectives: gloo on CPU; on GPU ``cpu:gloo,cuda:nccl`` (each rank on GPU ``LOCAL_RANK``).
Torch threads per rank: ``cpu_count // local_world`` unless ``threads`` is set.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from bench.metrics.score_run import MetricsConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_NAME = ".lock"
STALE_UNREADABLE_S = 60.0  # an empty / unreadable lock file older than this is a crash leftover
HEARTBEAT_S = 60.0         # the holder touches its lock this often
STALE_AFTER_S = 600.0      # a lock not touched for this long is stale, whichever host holds it


class DistributedError(RuntimeError):
    """Another rank failed; this rank stops too."""


class RunLockedError(RuntimeError):
    """The run directory is in use by another live run."""


def _torch_dist() -> Any:
    import torch.distributed as tdist

    return tdist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (``local_*``: on this machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a one-process run)."""
        if self.world > 1:
            _torch_dist().barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (a picklable object)."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        _torch_dist().broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        _torch_dist().all_gather_object(out, obj)
        return out

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        _torch_dist().gather_object(obj, out, dst=0)
        return out

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on rank 0 only; every rank gets its result, and every rank raises if it failed."""
        if self.world == 1:
            return fn(*args, **kwargs)
        outcome: tuple[str, Any] | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn(*args, **kwargs))
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error, outcome = e, ("error", f"{type(e).__name__}: {e}")
        outcome = self.broadcast(outcome)
        if outcome[0] == "error":
            if error is not None:
                raise error
            raise DistributedError(f"rank 0 failed: {outcome[1]}")
        return outcome[1]


def env_world() -> Dist:
    """The place torchrun (or any launcher setting RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE) gives us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Dist(rank, world, local_rank, local_world)


def current() -> Dist:
    """The running process group's place, or a one-process ``Dist()`` when there is none."""
    tdist = _torch_dist()
    if not (tdist.is_available() and tdist.is_initialized()):
        return Dist()
    env = env_world()
    return Dist(tdist.get_rank(), tdist.get_world_size(), env.local_rank, env.local_world)


def uses_cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@contextmanager
def process_group(device: str = "auto", timeout_s: float = 3600.0) -> Iterator[Dist]:
    """Join the process group the launcher describes (env://), and leave it at the end.

    One process (no WORLD_SIZE > 1), or a group that is already initialised: nothing to do.
    GPU runs pin rank ``LOCAL_RANK`` to GPU ``LOCAL_RANK``.
    """
    env = env_world()
    tdist = _torch_dist()
    if env.world == 1 or tdist.is_initialized():
        yield current()
        return
    backend = "gloo"
    if uses_cuda(device):
        import torch

        torch.cuda.set_device(env.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    tdist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield current()
    finally:
        tdist.destroy_process_group()


def default_threads(d: Dist) -> int:
    """Torch threads per rank: this machine's usable cores shared by its ranks."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, d.local_world))


def agree_run_dir(d: Dist, run_dir: Path) -> Path:
    """Rank 0's run directory on every rank. A rank whose own (e.g. ``${now:...}``) directory differs
    removes it when it is empty (with ``hydra.output_subdir=null`` it is)."""
    chosen = Path(d.broadcast(str(run_dir)))
    if chosen != run_dir and run_dir.is_dir():
        try:
            run_dir.rmdir()
            if run_dir.parent != chosen.parent:
                run_dir.parent.rmdir()  # a ${now:%Y-%m-%d} parent made only for this rank
        except OSError:
            pass
    return chosen


# ---------------------------------------------------------------- run-directory lock


def _start_time(pid: int) -> str | None:
    """The process start time (clock ticks since boot, /proc/PID/stat field 22), to tell reused pids apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    if pid <= 0:  # not a process id (kill(0 or -1, ...) would address process groups)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return started is None or now is None or now == started


class RunLock:
    """An exclusive lock on a run directory: the file ``RUN/.lock`` holding the owner's pid, host and
    start time, created with O_EXCL (atomic, also on NFS v3+); the owner touches it every
    ``HEARTBEAT_S`` seconds.

    A lock is stale, and taken over with a warning, when its owner is on this host and no longer
    runs (or its pid now names another process), or when nobody has touched it for ``STALE_AFTER_S``
    seconds (an owner on another machine that died, e.g. a preempted cluster job). Otherwise the
    error names the owner and the file to delete once that job is known to be gone.
    """

    def __init__(self, run_dir: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)}
        self.held = False
        self.heartbeat_s = heartbeat_s
        self._stop: threading.Event | None = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        try:
            idle = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder is None:  # empty or half-written: a crash between create and write, or a writer just now
            return idle > STALE_UNREADABLE_S
        if idle > STALE_AFTER_S:
            return True
        if holder.get("host") != self.info["host"]:
            return False
        return not _alive(int(holder.get("pid", -1)), holder.get("started"))

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if self._stale(holder) and self._break(holder):
                    continue
                self._refuse(holder)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.info))
            self.held = True
            self._start_heartbeat()
            return self
        self._refuse(self._read())
        raise AssertionError("unreachable")

    def _break(self, holder: dict[str, Any] | None) -> bool:
        """Remove a stale lock, unless another process replaced it meanwhile (then put it back)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{self.info['host']}.{self.info['pid']}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else removed it: try again
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved != holder:  # a fresh lock: restore it (unless yet another one exists)
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("removed the stale lock %s of pid %s on %s (that process is gone)", self.path,
                    (holder or {}).get("pid"), (holder or {}).get("host"))
        return True

    def _refuse(self, holder: dict[str, Any] | None) -> None:
        who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('time')} "
               f"({holder.get('command')})" if holder else "another process (lock file being written)")
        raise RunLockedError(
            f"{self.path.parent} is in use by {who}: two runs must not write one run directory. "
            f"Wait for it, or use another hydra.run.dir; if that process is gone, delete {self.path}.")

    def _start_heartbeat(self) -> None:
        self._stop = stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        threading.Thread(target=beat, name="run-lock-heartbeat", daemon=True).start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self.held and self._read() == self.info:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextmanager
def run_lock(run_dir: Path, d: Dist) -> Iterator[None]:
    """Rank 0 holds ``RUN/.lock`` for the whole run; every rank fails if it cannot."""
    lock = RunLock(run_dir)

    def acquire() -> None:  # returns nothing: on_main broadcasts the result, and a lock does not pickle
        lock.acquire()

    d.on_main(acquire)
    try:
        yield
    finally:
        if d.is_main:
            lock.release()


# ---------------------------------------------------------------- sharded metrics


def shard_indices(n: int, batch_size: int, d: Dist) -> np.ndarray:
    """Row indices of this rank: whole batches ``rank::world`` of the one-process batching."""
    starts = list(range(0, n, batch_size))[d.rank::d.world]
    return np.asarray([i for s in starts for i in range(s, min(s + batch_size, n))], dtype=np.int64)


def score_run_sharded(run_dir: Path, cfg: "MetricsConfig", d: Dist) -> "pd.DataFrame | None":
    """``score_run`` with the image pass (decoding, feature extraction, exact scorer) split over ranks.

    Every rank builds the models (a missing weights file fails everywhere at once) and extracts
    its batches; rank 0 gathers the per-image features, computes the reference statistics and the
    table, and writes ``metrics.csv`` / ``metrics.json`` / ``image_scores.csv`` and the per-image
    cache (``image_metrics.safetensors``). Returns the table on rank 0, None elsewhere.
    The numbers equal a one-process ``score_run`` at the same thread count.
    """
    from bench.metrics import score_run as sr

    if d.world == 1:
        return sr.score_run(run_dir, cfg)
    run_dir = Path(run_dir)
    man = sr._read_manifest(run_dir)
    if len(man) == 0:
        raise ValueError(f"{run_dir / 'manifest.csv'} lists no images")
    models = sr._build_models(cfg, needs_alignment=bool((man["truth"] != "").any()))
    resolution = sr._resolution(run_dir, man)
    mine = shard_indices(len(man), cfg.batch_size, d)
    part: tuple[np.ndarray, dict[str, np.ndarray], list] = (mine, {}, [])
    cache = sr.ImageCache.load(run_dir)  # each rank reads the per-image results of an earlier scoring
    if mine.size:
        feats, verdicts = sr._extract_all(run_dir, man.iloc[mine].reset_index(drop=True), cfg, models, resolution,
                                          cache)
        part = (mine, feats, verdicts)
    parts = d.gather(part)
    if not d.is_main:
        return None
    feats_all: dict[str, np.ndarray] = {}
    verdicts_all: list[dict | None] = [None] * len(man)
    for idx, feats, verdicts in parts:
        for name, x in feats.items():
            if name not in feats_all:
                feats_all[name] = np.empty((len(man), x.shape[1]), dtype=x.dtype)
            feats_all[name][idx] = x
        for i, v in zip(idx.tolist(), verdicts):
            verdicts_all[i] = v
    sr.remember(cache, run_dir, man, cfg, models, feats_all, verdicts_all)
    refs = sr._references(cfg, models, resolution)
    scorer = sr._Scorer(cfg, man, models, feats_all, verdicts_all, refs, resolution)
    table = sr.write_outputs(run_dir, cfg, models, refs, scorer)
    return table
