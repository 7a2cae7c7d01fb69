"""The process group of a data-parallel run: which rank this process is, and its collectives.

    torchrun --nproc_per_node=N -m bench.run hydra.run.dir=DIR ...        # N processes, one run
    torchrun --nnodes=M --nproc_per_node=N --rdzv-endpoint=HOST:PORT -m bench.run ...  # M machines

Every rank plans the same image list and the same fixed-shape micro-batches, then takes
chunks ``rank::world`` (``bench.generate.generate(shard=...)``); an image depends only on its
seed, so the PNGs are byte-identical to a one-process run. Metric feature extraction is sharded
the same way, by whole batches of ``metrics.batch_size`` images (so every batch has the shape it
has in a one-process run), and the per-image features are gathered to rank 0, which computes the
metrics table: its bootstrap intervals, KID, CMMD and per-image CLIP scores need the per-image
features, and the float64 Fréchet states built from them equal the sum of the shards' states
(``FrechetStats.merge``; ``bench.metrics.score_run.score_run`` takes the ``Dist``). Rank 0 alone
writes the shared files of the run directory (``bench.rundir``: it also holds the run lock);
every image has exactly one writer.

Collectives: gloo on CPU; on GPU ``cpu:gloo,cuda:nccl`` (each rank on GPU ``LOCAL_RANK``).
Torch threads per rank: ``cpu_count // local_world`` unless ``threads`` is set.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist

from imagen.device import resolve_device

T = TypeVar("T")


class DistributedError(RuntimeError):
    """Another rank failed; this rank stops too."""


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
            tdist.barrier()

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (a picklable object)."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
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
    if not (tdist.is_available() and tdist.is_initialized()):
        return Dist()
    env = env_world()
    return Dist(tdist.get_rank(), tdist.get_world_size(), env.local_rank, env.local_world)


def uses_cuda(device: str) -> bool:
    return resolve_device(device).type == "cuda"


@contextmanager
def process_group(device: str = "auto", timeout_s: float = 3600.0) -> Iterator[Dist]:
    """Join the process group the launcher describes (env://), and leave it at the end.

    One process (no WORLD_SIZE > 1), or a group that is already initialised: nothing to do.
    GPU runs pin rank ``LOCAL_RANK`` to GPU ``LOCAL_RANK``.
    """
    env = env_world()
    if env.world == 1 or tdist.is_initialized():
        yield current()
        return
    backend = "gloo"
    if uses_cuda(device):
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
