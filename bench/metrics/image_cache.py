"""Per-image results of the metric phase, kept in the run directory as ``RUN/image_metrics.safetensors``.

Rescoring a run (a repeat ``bench.run``, a metric phase resumed after a crash, other CI or KID
settings) then embeds and checks only images it has not seen; the reference side is cached
elsewhere (``bench.metrics.refstats``).

What a cached number is keyed by, so that a reused value is bit-identical to a fresh one:

- a feature: the image file's sha256, the extractor (``name``: backbone + weights; ``resize``;
  device) and the *batch* it was extracted in (sha256 of the batch's image digests and the batch
  size). CPU kernels differ with batch shape, so a feature is reused only where a fresh pass would
  compute exactly the same batch: batches are fixed slices of the manifest order (``batch_size``).
- an exact-scorer verdict: the image's sha256, the scene (prompt + truth JSON) and the scorer's
  source file (sha256).

A missing, unreadable or foreign file is an empty cache (warned, then rewritten); nothing in it
is ever trusted without its key matching. Written atomically (safetensors, no pickle).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from bench.rundir import IMAGE_CACHE as FILE
from bench.rundir import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "imagen-bench image metrics v1"


def batch_key(digests: list[str], batch_size: int) -> str:
    """Names one batch of the image pass: its images in order and the batch size."""
    return hashlib.sha256(f"{batch_size}:{','.join(digests)}".encode()).hexdigest()


def scene_key(prompt: str, truth: str, scorer: str) -> str:
    """Names one verdict: the scene asked for and the scorer's code (``code_digest``)."""
    return hashlib.sha256(f"{scorer}\n{prompt}\n{truth}".encode()).hexdigest()


def code_digest(fn: Any) -> str:
    """sha256 of the source file defining ``fn``: a changed scorer never reads its old verdicts."""
    return hashlib.sha256(Path(inspect.getsourcefile(fn) or "").read_bytes()).hexdigest()[:16]


def extractor_key(ext: Any) -> str:
    return json.dumps({"name": ext.name, "resize": ext.resize, "dim": int(ext.dim),
                       "device": str(getattr(ext, "device", "cpu"))}, sort_keys=True)


@dataclass
class ImageCache:
    """``features[extractor_key][(image sha256, batch key)] -> vector``; ``verdicts[(sha256, scene key)]``."""

    features: dict[str, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict)
    verdicts: dict[tuple[str, str], dict] = field(default_factory=dict)
    dirty: bool = False  # anything added or removed since load

    # ------------------------------------------------------------------------------------------ lookups
    def feature(self, ext_key: str, digest: str, batch: str) -> np.ndarray | None:
        return self.features.get(ext_key, {}).get((digest, batch))

    def put_feature(self, ext_key: str, digest: str, batch: str, x: np.ndarray) -> None:
        rows = self.features.setdefault(ext_key, {})
        if (digest, batch) not in rows:
            rows[(digest, batch)] = np.asarray(x, dtype=np.float32)
            self.dirty = True

    def verdict(self, digest: str, scene: str) -> dict | None:
        return self.verdicts.get((digest, scene))

    def put_verdict(self, digest: str, scene: str, v: dict) -> None:
        if (digest, scene) not in self.verdicts:
            self.verdicts[(digest, scene)] = v
            self.dirty = True

    def keep_only(self, digests: set[str]) -> None:
        """Drop every entry of an image not in ``digests`` (a replaced image leaves nothing stale behind)."""
        for rows in self.features.values():
            for k in [k for k in rows if k[0] not in digests]:
                del rows[k]
                self.dirty = True
        for k in [k for k in self.verdicts if k[0] not in digests]:
            del self.verdicts[k]
            self.dirty = True

    def __len__(self) -> int:
        return sum(len(f) for f in self.features.values()) + len(self.verdicts)

    # ------------------------------------------------------------------------------------------- files
    @classmethod
    def load(cls, run_dir: Path) -> "ImageCache":
        path = Path(run_dir) / FILE
        if not path.is_file():
            return cls()
        try:
            return cls._read(path)
        except Exception as e:  # truncated, foreign or hand-edited: recomputed, never trusted
            log.warning("ignoring %s (%s: %s); its images are embedded and scored again", path,
                        type(e).__name__, e)
            return cls()

    @classmethod
    def _read(cls, path: Path) -> "ImageCache":
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        tensors = load_file(str(path))
        out = cls()
        for i, spec in enumerate(json.loads(meta["extractors"])):
            x = tensors[f"features.{i}"]
            keys = spec["keys"]
            if x.ndim != 2 or x.shape[0] != len(keys):
                raise ValueError(f"features.{i} has shape {x.shape} for {len(keys)} keys")
            out.features[spec["extractor"]] = {(d, b): x[j] for j, (d, b) in enumerate(keys)}
        for d, s, v in json.loads(meta["verdicts"]):
            out.verdicts[(d, s)] = v
        return out

    def save(self, run_dir: Path) -> Path:
        specs, tensors = [], {}
        for i, (ext_key, rows) in enumerate(sorted(self.features.items())):
            keys = list(rows)
            specs.append({"extractor": ext_key, "keys": [list(k) for k in keys]})
            tensors[f"features.{i}"] = np.stack([rows[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        meta = {"format": FORMAT, "extractors": json.dumps(specs),
                "verdicts": json.dumps([[d, s, v] for (d, s), v in self.verdicts.items()])}
        path = Path(run_dir) / FILE
        atomic_write_bytes(save(tensors, metadata=meta), path)
        self.dirty = False
        return path
