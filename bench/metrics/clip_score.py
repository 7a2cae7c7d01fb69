"""CLIP score (Hessel et al. 2021, torchmetrics' formula): per image max(100 * cos(E_I, E_C), 0).

We clamp each image's score at 0 and then average (the formula torchmetrics documents).
torchmetrics' code averages the unclamped 100 * cos and clamps the mean instead; the two agree
whenever every cosine is non-negative, which is the normal case for a trained CLIP. The number
depends on the backbone, so every row names it (``clip_model``); the scale is 0..100.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import as_float64


def cosine_rows(a: Any, b: Any) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays."""
    a, b = as_float64(a), as_float64(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"CLIP score needs paired (N, D) image and text features, got {a.shape} and {b.shape}")
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def clip_score_per_image(image_features: Any, text_features: Any) -> np.ndarray:
    """max(100 * cos(image_i, text_i), 0) for each pair (float64, shape (N,))."""
    return np.maximum(100.0 * cosine_rows(image_features, text_features), 0.0)


def clip_score(image_features: Any, text_features: Any) -> float:
    """Mean over images of max(100 * cos, 0); nan for no images."""
    s = clip_score_per_image(image_features, text_features)
    return float(s.mean()) if s.size else float("nan")
