"""Sweep generation: prompts x samples x guidance weights -> PNGs (any ``Generator``).

Determinism by construction:
- every image has its own seed, derived from (run seed, prompt id, sample index) and not
  from the guidance weight, so all weights of the sweep start from identical noise;
- generators always run at one fixed micro-batch shape (``micro_batch`` images, padded by
  repeating the last image); jobs of different ``Generator.batch_group`` (for the cascade: w = 1,
  which skips the unconditional pass, and w != 1) are never mixed in one micro-batch. CPU kernels
  give different bits for different batch shapes but identical bits for any rows at a fixed shape,
  so an image never depends on the batch size, the sweep it belongs to, the number of processes
  or which images were already done.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from bench.generators.base import Generator, Job, NonFiniteSampleError
from bench.prompts.records import PromptRecord
from bench.rundir import atomic_write_bytes

log = logging.getLogger(__name__)
__all__ = ["ImageJob", "NonFiniteSampleError", "generate", "image_seed", "manifest_rows", "micro_batches",
           "plan_jobs", "png_ok", "weight_tag"]


@dataclass(frozen=True)
class ImageJob:
    image_index: int
    prompt: PromptRecord
    sample_index: int
    guidance_weight: float
    seed: int
    path: str  # relative to the run directory


def image_seed(run_seed: int, prompt_id: str, sample_index: int) -> int:
    """A 31-bit seed from (run seed, prompt id, sample index); the same at every guidance weight."""
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def weight_tag(w: float) -> str:
    return f"w{w:g}"


def plan_jobs(prompts: Sequence[PromptRecord], weights: Sequence[float], samples_per_prompt: int,
              run_seed: int) -> list[ImageJob]:
    """All images of the run in canonical order: prompt, sample, guidance weight."""
    if not weights:
        raise ValueError("guidance.weights is empty: give at least one guidance weight")
    bad = [w for w in weights if not np.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"guidance weights must be finite and >= 0 (w = 1: no guidance), got {bad}")
    if len(set(weights)) != len(weights):
        raise ValueError(f"guidance weights repeat: {list(weights)}")
    tags = [weight_tag(w) for w in weights]
    if len(set(tags)) != len(tags):
        raise ValueError(f"guidance weights {list(weights)} share an image folder name ({tags}): give weights that "
                         "differ in their first 6 significant digits")
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    ids = [p.id for p in prompts]
    dup = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    if dup:
        raise ValueError(f"duplicate prompt ids: {sorted(dup)[:5]}")
    jobs = []
    for p in prompts:
        for s in range(samples_per_prompt):
            seed = image_seed(run_seed, p.id, s)
            for w in weights:
                jobs.append(ImageJob(len(jobs), p, s, float(w), seed, f"images/{weight_tag(w)}/{p.id}_s{s}.png"))
    return jobs


def unguided_first(job: ImageJob) -> int:
    """The cascade's grouping: w = 1 (no unconditional pass) apart from, and before, w != 1."""
    return 0 if job.guidance_weight == 1.0 else 1


def micro_batches(jobs: Sequence[ImageJob], micro_batch: int,
                  group: Callable[[ImageJob], Any] = unguided_first) -> list[list[ImageJob]]:
    """Chunks of exactly ``micro_batch`` jobs (the last of each group padded by repeating its last job);
    jobs of different ``group`` values go to separate chunks, groups in sorted order."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    groups: dict[Any, list[ImageJob]] = {}
    for j in jobs:
        groups.setdefault(group(j), []).append(j)
    out = []
    for key in sorted(groups):
        members = groups[key]
        for i in range(0, len(members), micro_batch):
            chunk = list(members[i : i + micro_batch])
            out.append(chunk + [chunk[-1]] * (micro_batch - len(chunk)))
    return out


def png_ok(path: Path, size: int) -> bool:
    """A finished image: a complete, decodable PNG of the expected size."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size == (size, size) and im.mode == "RGB"
    except Exception:
        return False


def atomic_write_png(array: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    atomic_write_bytes(buf.getvalue(), path)


def manifest_rows(jobs: Iterable[ImageJob], size: int) -> list[dict[str, Any]]:
    """One ``manifest.csv`` row per job (``bench.rundir.write_manifest`` writes them)."""
    return [{"path": j.path, "prompt_id": j.prompt.id, "prompt": j.prompt.text, "category": j.prompt.category,
             "seed": j.seed, "guidance_weight": f"{j.guidance_weight:g}", "sample_index": j.sample_index,
             "image_index": j.image_index, "truth": j.prompt.truth or "", "width": size, "height": size}
            for j in jobs]


def _job(j: ImageJob) -> Job:
    return Job(j.prompt.text, j.seed, j.guidance_weight)


def _sample(generator: Generator, chunk: list[ImageJob], run_dir: Path) -> np.ndarray:
    try:
        return generator([_job(j) for j in chunk])
    except NonFiniteSampleError as e:
        bad = chunk[e.row]
        raise NonFiniteSampleError(
            f"{e} for prompt {bad.prompt.id!r} ({bad.prompt.text!r}), seed {bad.seed}, w={bad.guidance_weight:g}; "
            f"finished images are kept in {run_dir}", e.row) from None


def generate(generator: Generator, jobs: Sequence[ImageJob], run_dir: Path, micro_batch: int,
             shard: tuple[int, int] = (0, 1), progress: bool = True,
             sync: Callable[[], None] | None = None) -> dict[str, int]:
    """Generate every job whose PNG is missing or broken; returns counts (generated, skipped).

    ``shard=(rank, world)``: this process makes micro-batches ``rank::world``. ``sync`` (a barrier)
    runs after the list of missing images is made and before any image is written, so that every
    rank shards the same list.
    """
    todo = [j for j in jobs if not png_ok(run_dir / j.path, generator.image_size)]
    if sync is not None:
        sync()
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("resume: %d of %d images already finished and verified", skipped, len(jobs))
    rank, world = shard
    chunks = micro_batches(todo, micro_batch, lambda j: generator.batch_group(_job(j)))[rank::world]
    generator.prepare([j.prompt.text for c in chunks for j in c])
    bar = tqdm(total=sum(len({j.image_index for j in c}) for c in chunks), desc="generate", unit="img",
               disable=not progress, dynamic_ncols=True)
    done = 0
    for chunk in chunks:
        images = _sample(generator, chunk, run_dir)
        seen = set()
        for j, img in zip(chunk, images):
            if j.image_index in seen:
                continue  # padding
            seen.add(j.image_index)
            atomic_write_png(img, run_dir / j.path)
            done += 1
            bar.update(1)
    bar.close()
    return {"generated": done, "skipped": skipped}
