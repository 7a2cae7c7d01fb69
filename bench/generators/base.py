"""The generator interface: a fixed-shape micro-batch of jobs in, uint8 RGB images out.

Every way of making images (the built-in cascade, a diffusers pipeline, a Python callable)
implements ``Generator``. The harness (``bench.generate``) owns what makes images reproducible:
per-image seeds, fixed micro-batch shapes, resume; a generator only samples what it is given, and
states its identity (kind, weights digest, settings) so that a run directory refuses to be resumed
with another model (``generation.json``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from bench.rundir import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".onnx", ".gguf")


@dataclass(frozen=True)
class Job:
    """What one image needs from the generator: its prompt, its own seed and its guidance weight
    (Imagen / diffusers convention: w = 1 is no guidance)."""

    prompt: str
    seed: int
    guidance_weight: float


class NonFiniteSampleError(RuntimeError):
    """A generator produced NaN / inf pixels for row ``row`` of its micro-batch."""

    def __init__(self, message: str, row: int = 0) -> None:
        super().__init__(message)
        self.row = row


class Generator(Protocol):
    """Turns a micro-batch of jobs into images; ``micro_batch`` jobs per call, always."""

    image_size: int           # width = height of every image it makes
    random_weights: bool      # True when some weights are random (no trained checkpoint)

    def identity(self) -> dict[str, Any]:
        """Kind, weights digest and the settings that change pixels (flat JSON values)."""
        ...

    def info(self) -> dict[str, Any]:
        """What run_info.json records about the model (checkpoints, digests, device)."""
        ...

    def prepare(self, prompts: Sequence[str]) -> None:
        """Called once with every prompt of the run before sampling (e.g. to fill an embedding cache)."""
        ...

    def batch_group(self, job: Job) -> Any:
        """Jobs of one micro-batch share this value (e.g. the guidance weight, when it is one scalar per call)."""
        ...

    def __call__(self, jobs: Sequence[Job]) -> np.ndarray:
        """uint8 (B, H, W, 3) images, one per job, in order."""
        ...


def folder_digest(path: str | Path) -> str:
    """sha256 over a model folder: every config file's and weight file's relative name and sha256 (weights
    change the digest; caches, READMEs and timestamps do not)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if f.suffix in WEIGHT_SUFFIXES or f.suffix in (".json", ".txt", ".model"):
            h.update(f"{f.relative_to(root).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def as_uint8_images(images: Any, n: int, size: int | None, source: str) -> np.ndarray:
    """A generator's output as uint8 (n, H, W, 3): accepts uint8 arrays, float arrays in [0, 1], PIL images,
    or lists of them; anything else raises ValueError naming ``source``."""
    if isinstance(images, (list, tuple)):
        images = [np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in images]
        images = np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise ValueError(f"{source} returned {images.dtype} images; expected uint8 or floats in [0, 1]")
        images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    if images.ndim != 4 or images.shape[0] != n or images.shape[-1] != 3:
        raise ValueError(f"{source} returned images of shape {images.shape}; expected ({n}, H, W, 3)")
    if size is not None and images.shape[1:3] != (size, size):
        raise ValueError(f"{source} returned {images.shape[2]}x{images.shape[1]} images; expected {size}x{size}")
    return images
