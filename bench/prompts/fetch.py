"""Where prompt data lives, and the explicit, sha256-checked download of a missing file.

Files are looked up in :func:`data_dir` (``$BENCH_DATA_DIR``, else the user cache
``~/.cache/imagen-bench/data``). A missing file is downloaded from its public origin only
when the caller allows it (``download=True``, config ``prompts.download=true``) and the
environment is not offline (``HF_HUB_OFFLINE`` or ``BENCH_OFFLINE`` set to 1/true). The
downloaded bytes are converted to the project's format where the origin differs (see each
``DataFile.normalize``), checked against a pinned sha256 and written atomically. A file that
is already present is used as it is.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import PromptDownloadError, PromptFileError

OFFLINE_ENV = ("HF_HUB_OFFLINE", "BENCH_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DataFile:
    """A prompt file the project knows: its name in the data directory, its public origin,
    the sha256 of the file as the project reads it (after ``normalize``), and a one-line
    description used in error messages."""

    name: str
    url: str
    sha256: str
    description: str
    normalize: Callable[[bytes], bytes] | None = None  # origin bytes -> project bytes


def data_dir() -> Path:
    """``$BENCH_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/imagen-bench/data`` (default
    ``~/.cache/imagen-bench/data``). Nothing is created here."""
    env = os.environ.get("BENCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "imagen-bench" / "data"


def offline() -> str | None:
    """The name of the environment variable that forbids downloads, or None."""
    for name in OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return name
    return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _how_to_provide(spec: DataFile, dest: Path) -> str:
    return (f"Put {spec.name} ({spec.description}; origin {spec.url}) at {dest}, "
            f"or point BENCH_DATA_DIR at a directory that holds it "
            f"(export BENCH_DATA_DIR=/path/to/data)")


def ensure_data_file(spec: DataFile, *, download: bool = False,
                     opener: Callable[..., Any] | None = None) -> Path:
    """The path of ``spec.name`` in :func:`data_dir`, downloading it first when it is missing
    and ``download`` is allowed. Raises :class:`PromptFileError` saying which file to put
    where when it is missing and may not be downloaded."""
    dest = data_dir() / spec.name
    if dest.is_file():
        return dest
    if not download:
        raise PromptFileError(f"prompt file missing. {_how_to_provide(spec, dest)}, or allow a download "
                              "from the origin with prompts.download=true (download=True)", dest)
    blocker = offline()
    if blocker:
        raise PromptDownloadError(f"prompt file missing and downloads are disabled because {blocker}="
                                  f"{os.environ[blocker]}. {_how_to_provide(spec, dest)}, or unset "
                                  f"{blocker} to download it", dest)
    return download_data_file(spec, dest.parent, opener=opener)


def download_data_file(spec: DataFile, dest_dir: str | Path, *,
                       opener: Callable[..., Any] | None = None, timeout_s: float = 60.0) -> Path:
    """Download ``spec.url``, convert it with ``spec.normalize``, check the pinned sha256 and
    write ``dest_dir/spec.name`` atomically. ``opener`` defaults to ``urllib.request.urlopen``
    (which also reads ``file://`` URLs). Raises :class:`PromptDownloadError` on a network
    failure or a sha256 mismatch; nothing is written then."""
    dest = Path(dest_dir) / spec.name
    open_url = opener or urllib.request.urlopen
    try:
        with open_url(spec.url, timeout=timeout_s) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise PromptDownloadError(f"could not download {spec.url} ({reason}); without network access "
                                  f"{_how_to_provide(spec, dest)}", dest) from None
    if spec.normalize is not None:
        try:
            data = spec.normalize(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise PromptDownloadError(f"the file downloaded from {spec.url} is not in the expected origin "
                                      f"format ({e}). {_how_to_provide(spec, dest)}", dest) from None
    got = sha256_bytes(data)
    if got != spec.sha256:
        raise PromptDownloadError(f"sha256 mismatch for {spec.name} downloaded from {spec.url}: got {got}, "
                                  f"expected {spec.sha256} (the origin may have changed). Nothing was "
                                  f"written. {_how_to_provide(spec, dest)}", dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as e:
        raise PromptDownloadError(f"cannot write the downloaded file ({e}); set BENCH_DATA_DIR to a "
                                  "writable directory", dest) from None
    return dest
