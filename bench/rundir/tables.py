"""The run directory's tables and settings: manifest.csv, metrics.csv, generation.json, .hydra/.

One reader and one writer each. Readers keep text as text (no NaN for empty cells) and name the
file in every error.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml
from omegaconf import OmegaConf

from .files import GENERATION, HYDRA_CONFIG, HYDRA_DIR, MANIFEST, METRICS, atomic_write_text, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "prompt_id", "prompt", "category", "seed", "guidance_weight", "sample_index",
                    "image_index", "truth", "width", "height"]
METRICS_COLUMNS = ["guidance_weight", "category", "num_images",
                   "fd", "fd_ci_low", "fd_ci_high", "fd_real", "fd_excess", "fd_excess_ci_low", "fd_excess_ci_high",
                   "fd_inf", "fd_extractor", "fd_reference",
                   "kid", "kid_std", "kid_se", "kid_subset_size",
                   "precision", "recall", "density", "coverage", "prdc_k",
                   "cmmd", "cmmd_ci_low", "cmmd_ci_high", "cmmd_estimator", "cmmd_model",
                   "clip_score", "clip_score_ci_low", "clip_score_ci_high", "clip_model",
                   "alignment", "alignment_ci_low", "alignment_ci_high", "color_alignment", "out_of_domain"]
METRICS_TEXT_COLUMNS = ("category", "fd_extractor", "fd_reference", "cmmd_estimator", "cmmd_model", "clip_model")
MANIFEST_REQUIRED = ("path", "prompt", "guidance_weight")


class ManifestError(ValueError):
    """A manifest that cannot be used: wrong columns or values (the message names the file)."""


class RunConfigMismatch(RuntimeError):
    """A run directory asked to take images made with other settings."""


def _as_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir)


# ---------------------------------------------------------------- manifest.csv


def read_manifest(run_dir: str | os.PathLike, required: Iterable[str] = MANIFEST_REQUIRED) -> pd.DataFrame:
    """``RUN/manifest.csv``: every column as text ('' for empty cells) except ``guidance_weight`` (float);
    ``category`` and ``truth`` are '' when the file lacks them. Missing file: FileNotFoundError;
    missing ``required`` columns or a non-numeric weight: ManifestError."""
    path = _as_dir(run_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: not a run directory (python -m bench.run writes it)")
    man = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in required if c not in man.columns]
    if missing:
        raise ManifestError(f"{path} lacks columns {missing}")
    if "guidance_weight" in man.columns:
        weights = pd.to_numeric(man["guidance_weight"], errors="coerce")
        bad = weights.isna().to_numpy().nonzero()[0]
        if bad.size:  # line = row + 2 (header, 1-based), exact for rows without line breaks inside fields
            raise ManifestError(f"{path}, line {bad[0] + 2}: guidance_weight "
                                f"{man['guidance_weight'].iloc[bad[0]]!r} is not a number")
        man["guidance_weight"] = weights.astype(float)
    for col in ("category", "truth"):
        if col not in man.columns:
            man[col] = ""
    return man


def write_manifest(run_dir: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``RUN/manifest.csv`` from one mapping per image (keys: MANIFEST_COLUMNS; more keys are kept
    as extra columns after them, in first-seen order)."""
    rows = list(rows)
    extra = list(dict.fromkeys(k for r in rows for k in r if k not in MANIFEST_COLUMNS))
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + extra)
    out = _as_dir(run_dir) / MANIFEST
    atomic_write_text(table.to_csv(index=False, lineterminator="\n"), out)
    return out


# ---------------------------------------------------------------- metrics.csv


def read_metrics(path: str | os.PathLike) -> pd.DataFrame:
    """A metrics table (``RUN/metrics.csv``, or the path of any such CSV): numeric columns as float
    (empty -> NaN), text columns as str ('' if empty)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"no metrics table at {path} (python -m bench.metrics.score_run RUN_DIR writes it)")
    df = pd.read_csv(path, keep_default_na=True, dtype={c: object for c in METRICS_TEXT_COLUMNS})
    need = {"guidance_weight", "category"}
    if not need <= set(df.columns):
        raise ValueError(f"{path} lacks columns {sorted(need - set(df.columns))}")
    for c in df.columns:
        if c in METRICS_TEXT_COLUMNS:
            df[c] = df[c].fillna("").astype(str)
        elif c != "out_of_domain":
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def write_metrics(run_dir: str | os.PathLike, table: pd.DataFrame) -> Path:
    out = _as_dir(run_dir) / METRICS
    atomic_write_text(table.to_csv(index=False), out)
    return out


# ---------------------------------------------------------------- generation.json


# generation.json keys added after run directories were first written, with the value that the images of a
# run directory without the key were made with (so older run directories resume and compare as before)
ADDED_GENERATION_KEYS: dict[str, Any] = {"sampler.grid": "time", "model.dtype": "float32", "guidance.interval": None}


def with_added_keys(settings: dict[str, Any], present: dict[str, Any]) -> dict[str, Any]:
    """A generation.json's flat settings completed with the ``ADDED_GENERATION_KEYS`` it lacks and the settings
    it is compared with (``present``) have: a scored folder, which has no sampler, gains none."""
    return {**{k: v for k, v in ADDED_GENERATION_KEYS.items() if k in present}, **settings}


def differing_keys(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys of two flat settings dicts whose values differ (a key missing on one side differs), sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in ignore)


def check_generation(run_dir: str | os.PathLike, settings: dict[str, Any], resume: bool,
                     may_differ: tuple[str, ...] = ("guidance.weights", "prompts")) -> None:
    """Refuse to mix images of different settings in one run directory. ``settings`` is the flat dict of
    what changes pixels (model identity, sampler, seeds); keys in ``may_differ`` only add images."""
    old = read_json(_as_dir(run_dir) / GENERATION)
    if not old:
        return
    old = with_added_keys(old, settings)
    if not resume:
        raise RunConfigMismatch(f"{run_dir} already holds a run and resume=false: choose another hydra.run.dir")
    diff = differing_keys(old, settings, may_differ)
    if diff:
        raise RunConfigMismatch(
            f"{run_dir} holds images made with other settings ({', '.join(diff)}); its images are kept. "
            "Use a new hydra.run.dir, or the same settings to resume.")


def write_generation(run_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    write_json(_as_dir(run_dir) / GENERATION, settings)


# ---------------------------------------------------------------- .hydra/


def read_config_text(run_dir: str | os.PathLike) -> str | None:
    """The resolved configuration as Hydra saved it (``RUN/.hydra/config.yaml``); None when absent."""
    path = _as_dir(run_dir) / HYDRA_CONFIG
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def read_config(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``RUN/.hydra/config.yaml`` as a plain dict, interpolations resolved (left as written where they
    cannot be); None when absent or unreadable."""
    text = read_config_text(run_dir)
    if text is None:
        return None
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:  # noqa: BLE001 - omegaconf / yaml raise several error types
        log.warning("%s: unreadable config (%s)", _as_dir(run_dir) / HYDRA_CONFIG, e)
        return None
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation this process cannot resolve (e.g. a Hydra resolver)
        data = OmegaConf.to_container(cfg, resolve=False)
    return data if isinstance(data, dict) else None


def read_hydra_file(run_dir: str | os.PathLike, name: str) -> Any:
    """``RUN/.hydra/<name>.yaml`` (``hydra`` or ``overrides``) as plain data; None when absent."""
    path = _as_dir(run_dir) / HYDRA_DIR / f"{name}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_hydra_files(run_dir: str | os.PathLike, cfg: dict[str, Any], overrides: list[str]) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml`` for a run composed outside a Hydra app (bench.figures)."""
    d = _as_dir(run_dir) / HYDRA_DIR
    atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), d / "config.yaml")
    atomic_write_text(yaml.safe_dump(overrides, sort_keys=False), d / "overrides.yaml")
