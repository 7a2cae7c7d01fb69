"""The run-directory lock: one live run writes a run directory at a time.

``RUN/.lock`` holds the owner's pid, host and start time; created with O_EXCL (atomic, also on
NFS v3+) and touched by a heartbeat thread, so a crashed owner's lock is recognised as stale.
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
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
STALE_UNREADABLE_S = 60.0  # an empty / unreadable lock file older than this is a crash leftover
HEARTBEAT_S = 60.0         # the holder touches its lock this often
STALE_AFTER_S = 600.0      # a lock not touched for this long is stale, whichever host holds it


class Ranks(Protocol):
    """What the lock needs of a process group (``bench.distributed.Dist``)."""

    is_main: bool

    def on_main(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...


class RunLockedError(RuntimeError):
    """The run directory is in use by another live run."""



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
def run_lock(run_dir: Path, d: Ranks) -> Iterator[None]:
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
