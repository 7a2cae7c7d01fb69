"""Sweep generation: prompts x samples x guidance weights -> PNGs + manifest.csv.

Determinism by construction (DESIGN section 4, style rule 2):
- every image has its own seed, derived from (run seed, prompt id, sample index) and not
  from the guidance weight, so all weights of the sweep start from identical noise;
- forwards always run at one fixed micro-batch shape (``micro_batch`` images, padded by
  repeating the last image); images with w = 1 (no unconditional pass) and w != 1 are never
  mixed in one micro-batch. CPU kernels give different bits for different batch shapes but
  identical bits for any rows at a fixed shape, so an image never depends on the batch size,
  the sweep it belongs to, the number of processes or which images were already done.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from bench.prompts.records import PromptRecord
from imagen.cascade import Cascade, to_uint8

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ["path", "prompt_id", "prompt", "category", "seed", "guidance_weight", "sample_index",
                    "image_index", "truth", "width", "height"]


class NonFiniteSampleError(RuntimeError):
    pass


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


def micro_batches(jobs: Sequence[ImageJob], micro_batch: int) -> list[list[ImageJob]]:
    """Chunks of exactly ``micro_batch`` jobs (the last padded by repeating its last job);
    jobs with w == 1 and w != 1 go to separate chunks."""
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    out = []
    for group in ([j for j in jobs if j.guidance_weight == 1.0], [j for j in jobs if j.guidance_weight != 1.0]):
        for i in range(0, len(group), micro_batch):
            chunk = list(group[i : i + micro_batch])
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


def atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{socket.gethostname()}.{os.getpid()}")  # unique on a shared disk
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(run_dir: Path, jobs: Iterable[ImageJob], size: int) -> Path:
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(MANIFEST_COLUMNS)
    for j in jobs:
        wr.writerow([j.path, j.prompt.id, j.prompt.text, j.prompt.category, j.seed, f"{j.guidance_weight:g}",
                     j.sample_index, j.image_index, j.prompt.truth or "", size, size])
    out = run_dir / "manifest.csv"
    atomic_write_bytes(buf.getvalue().encode("utf-8"), out)
    return out


@dataclass
class GenerationSettings:
    steps: int = 25
    kind: str = "ddim"
    thresholding: str = "dynamic"
    percentile: float = 0.995
    sr_steps: int | None = None
    sr_weight: float | None = None
    aug_level: float = 0.0
    micro_batch: int = 8


def generate(cascade: Cascade, jobs: Sequence[ImageJob], run_dir: Path, settings: GenerationSettings,
             shard: tuple[int, int] = (0, 1), progress: bool = True,
             sync: Callable[[], None] | None = None) -> dict[str, int]:
    """Generate every job whose PNG is missing or broken; returns counts (done, skipped).

    ``shard=(rank, world)``: this process makes micro-batches ``rank::world``. ``sync`` (a barrier)
    runs after the list of missing images is made and before any image is written, so that every
    rank shards the same list.
    """
    from tqdm import tqdm

    size = cascade.image_size
    todo = [j for j in jobs if not png_ok(run_dir / j.path, size)]
    if sync is not None:
        sync()
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("resume: %d of %d images already finished and verified", skipped, len(jobs))
    chunks = micro_batches(todo, settings.micro_batch)
    rank, world = shard
    chunks = chunks[rank::world]
    texts = sorted({j.prompt.text for c in chunks for j in c})
    if texts:
        cascade.text_encoder.encode(texts)  # fills the embedding cache once for the whole sweep
    bar = tqdm(total=sum(len({j.image_index for j in c}) for c in chunks), desc="generate", unit="img",
               disable=not progress, dynamic_ncols=True)
    done = 0
    for chunk in chunks:
        tokens, mask = cascade.text_encoder.encode([j.prompt.text for j in chunk])
        w = torch.tensor([j.guidance_weight for j in chunk], dtype=torch.float32)
        x = cascade.sample(tokens, mask, w, [j.seed for j in chunk], steps=settings.steps, kind=settings.kind,
                           thresholding=settings.thresholding, percentile=settings.percentile,
                           sr_steps=settings.sr_steps, sr_weight=settings.sr_weight, aug_level=settings.aug_level)
        finite = torch.isfinite(x.flatten(1)).all(1)
        if not bool(finite.all()):
            bad = chunk[int((~finite).nonzero()[0])]
            raise NonFiniteSampleError(
                f"non-finite pixels sampled for prompt {bad.prompt.id!r} ({bad.prompt.text!r}), seed {bad.seed}, "
                f"w={bad.guidance_weight:g}; finished images are kept in {run_dir}")
        images = to_uint8(x)
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
