"""File names of a run directory, atomic writers and file digests."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
from pathlib import Path
from typing import Any

MANIFEST = "manifest.csv"
GENERATION = "generation.json"
METRICS = "metrics.csv"
METRICS_JSON = "metrics.json"
IMAGE_SCORES = "image_scores.csv"
IMAGE_CACHE = "image_metrics.safetensors"
RUN_INFO = "run_info.json"
RANDOM_WEIGHTS = "RANDOM_WEIGHTS.txt"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
HYDRA_DIR = ".hydra"
HYDRA_CONFIG = f"{HYDRA_DIR}/config.yaml"


def atomic_write_bytes(data: bytes, path: str | os.PathLike, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` via a host- and process-unique temporary name (safe on a shared disk),
    fsync, then rename: readers see the old file or the new one, never half of one. ``mode`` (less the
    umask) applies from the first byte: 0o600 keeps a secret private during the write too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{socket.gethostname()}.{os.getpid()}")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: str | os.PathLike, mode: int = 0o666) -> None:
    atomic_write_bytes(text.encode("utf-8"), path, mode)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Indented, key-sorted JSON, written atomically."""
    atomic_write_bytes(json.dumps(data, indent=2, sort_keys=True, default=str).encode(), path)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file's object; {} when the file is absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """A matplotlib figure written atomically; the format comes from the file extension."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), **savefig_kwargs)
    atomic_write_bytes(buf.getvalue(), path)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_run_dir(path: str | os.PathLike) -> bool:
    """A folder holding a run: a manifest or a metrics table."""
    path = Path(path)
    return (path / MANIFEST).is_file() or (path / METRICS).is_file()
