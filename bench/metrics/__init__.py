"""Metrics of imagen-bench: Fréchet distance (FID / FD-CLIP / FD on shapes-CLIP; FD-infinity), KID, CMMD,
precision / recall / density / coverage, CLIP score, exact shapes alignment, reference statistics, and
jackknife and bootstrap intervals.

Nothing is imported or loaded until used: the names below import their module on first access.
Functions named like their module (``kid``, ``cmmd``, ``clip_score``, ``score_run``) are imported
from the module itself, e.g. ``from bench.metrics.score_run import score_run, MetricsConfig``.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FrechetStats": "frechet", "FrechetReference": "frechet", "frechet_distance": "frechet",
    "fd_bootstrap": "frechet", "fd_jackknife": "frechet", "fd_inf": "frechet", "PRDCReference": "prdc",
    "KIDReference": "kid",
    "CMMDReference": "cmmd", "clip_score_per_image": "clip_score",
    "FeatureExtractor": "extractors", "ImageTextEncoder": "extractors", "InceptionExtractor": "extractors",
    "OpenClipExtractor": "extractors", "ShapesClipExtractor": "extractors", "build_extractor": "extractors",
    "RefKey": "refstats", "RefStats": "refstats", "shapes_refstats": "refstats", "coco_refstats": "refstats",
    "npz_refstats": "refstats", "real_vs_real": "refstats",
    "bootstrap_mean_ci": "bootstrap",
    "MetricsConfig": "score_run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
