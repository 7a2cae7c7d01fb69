"""Exact alignment scorer for the shapes domain: find the coloured shapes in an image and
check them against the scene's ground truth.

Detection, step by step:

1. Palette segmentation. Renders are anti-aliased: an edge pixel is a mix
   ``bg + a * (colour - bg)`` of the background and one palette colour. For every pixel and
   palette colour we fit that mix (``a`` in [0, 1]) and measure the residual distance (RGB
   units, 0..255). A pixel belongs to colour ``c`` when ``a_c >= 0.5`` and ``c`` has the
   smallest residual among such colours, below ``max_residual``; otherwise it is background
   when it is within ``max_residual`` of the background colour, else "other" (nothing).
   Fitting the mix line, rather than taking the nearest palette entry, keeps half-covered
   edge pixels of a red shape from reading as orange (the nearest entry to a red/grey mix).
2. Connected components of each colour (``scipy.ndimage.label``, 4-connectivity);
   components whose coverage is below ``min_area`` of the canvas are dropped as noise.
3. Soft moments: each component, grown by one pixel, is weighted by its coverage ``a_c``, so
   centre, area and second/third moments are sub-pixel accurate even at 32 px.
4. Shape class from moment invariants of the (axis-aligned, apex-up) shapes:
   ``skew`` = mu03 / mu02^1.5 (a triangle's mass lies low: about -0.57; 0 for circle and
   square) and ``corner`` = mu22 / (mu20 mu02) (1.0 for a square, whose x and y are
   independent; 2/3 for a disc; 0.8 for the triangle). Nearest prototype wins. Coverage-
   weighted moments stay exact at 32 px, where a bounding-box fill ratio is off by a pixel
   of a 7-pixel box.

Scoring follows DrawBench's three shapes categories; see ``score``.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from .scene import BACKGROUND, COLORS, Scene

PALETTE_NAMES: tuple[str, ...] = tuple(COLORS)
PALETTE = np.array([COLORS[c] for c in PALETTE_NAMES], dtype=np.float32)            # (6, 3)
BG = np.array(BACKGROUND, dtype=np.float32)
# (skew, corner) of each ideal shape, computed in closed form
PROTOTYPES: dict[str, tuple[float, float]] = {"circle": (0.0, 0.667), "square": (0.0, 1.0), "triangle": (-0.566, 0.8)}
FEATURE_SCALE = (0.2, 0.1)
BG_EPS = 4.0                 # RGB distance under which a pixel is plain background (coverage < 0.02)   # how far (skew, corner) may drift before a class is doubtful


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str
    cx: float    # centre, fraction of the canvas width (0 = left)
    cy: float    # centre, fraction of the canvas height (0 = top)
    area: float  # covered area, fraction of the canvas


def segment(image: np.ndarray, max_residual: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel palette index (H, W) int (-1 background, -2 other, else index into COLORS)
    and the coverage ``a`` of every palette colour (6, H, W) in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    h, w, _ = image.shape
    p = image.reshape(-1, 3).astype(np.float32) - BG                  # (N, 3)
    pp = (p * p).sum(-1)
    labels = np.full(h * w, -1, dtype=np.int64)
    cover = np.zeros((len(PALETTE), h * w), dtype=np.float32)
    idx = np.flatnonzero(pp > BG_EPS ** 2)        # the rest is background with coverage ~0
    if idx.size:
        q, qq = p[idx], pp[idx]
        v = PALETTE - BG                                                # (6, 3)
        vv = (v * v).sum(1)[:, None]
        qv = v @ q.T                                                    # (6, M)
        a = np.clip(qv / vv, 0.0, 1.0)
        # |q - a v|^2 = |q|^2 - 2 a q.v + a^2 |v|^2
        resid = np.sqrt(np.maximum(qq[None] - 2 * a * qv + a * a * vv, 0.0))
        resid_core = np.where(a >= 0.5, resid, np.inf)
        best = resid_core.argmin(0)
        best_resid = resid_core[best, np.arange(idx.size)]
        lab = np.where(best_resid < max_residual, best, -2)
        lab[(lab == -2) & (qq < max_residual ** 2)] = -1
        labels[idx] = lab
        cover[:, idx] = a
    return labels.reshape(h, w), cover.reshape(-1, h, w)


def _moments(w: np.ndarray) -> tuple[float, float, float, float, float]:
    """Area, centre (x, y) in pixels and (skew, corner) invariants of a weight map."""
    h, wd = w.shape
    ys, xs = np.mgrid[0:h, 0:wd].astype(np.float64)
    xs += 0.5
    ys += 0.5
    m = w.sum()
    cx, cy = (w * xs).sum() / m, (w * ys).sum() / m
    dx, dy = xs - cx, ys - cy
    # a pixel is a unit square, not a point: add its own variance (1/12) to mu20, mu02
    mu20 = (w * dx * dx).sum() / m + 1 / 12
    mu02 = (w * dy * dy).sum() / m + 1 / 12
    mu22 = (w * dx * dx * dy * dy).sum() / m + (mu20 + mu02) / 12 - 1 / 144
    mu03 = (w * dy ** 3).sum() / m
    return float(m), float(cx), float(cy), float(mu03 / mu02 ** 1.5), float(mu22 / (mu20 * mu02))


def classify_shape(skew: float, corner: float) -> str:
    """Nearest prototype in (skew, corner) space, each axis scaled by FEATURE_SCALE."""
    def dist(proto: tuple[float, float]) -> float:
        return ((skew - proto[0]) / FEATURE_SCALE[0]) ** 2 + ((corner - proto[1]) / FEATURE_SCALE[1]) ** 2

    return min(PROTOTYPES, key=lambda s: dist(PROTOTYPES[s]))


def detect(image: np.ndarray, min_area: float = 0.004, max_residual: float = 60.0) -> list[Detection]:
    """Coloured shapes in an RGB uint8 image (H, W, 3), largest first."""
    labels, cover = segment(image, max_residual)
    h, w = labels.shape
    out: list[Detection] = []
    for k, name in enumerate(PALETTE_NAMES):
        comp, n = ndimage.label(labels == k)
        if n == 0:
            continue
        for i, sl in enumerate(ndimage.find_objects(comp), start=1):
            y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
            x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
            core = comp[y0:y1, x0:x1] == i
            grown = ndimage.binary_dilation(core, structure=np.ones((3, 3), bool))
            lab = labels[y0:y1, x0:x1]
            # the one-pixel rim may hold only this colour's edge pixels, background or "other"
            rim_ok = grown & ((lab == k) | (lab < 0)) & ((comp[y0:y1, x0:x1] == 0) | core)
            weight = np.where(rim_ok, cover[k, y0:y1, x0:x1], 0.0)
            area, cx, cy, skew, corner = _moments(weight)
            if area < min_area * h * w:
                continue
            out.append(Detection(name, classify_shape(skew, corner), (cx + x0) / w, (cy + y0) / h, area / (h * w)))
    return sorted(out, key=lambda d: -d.area)


# -- scoring --------------------------------------------------------------------------------
def requested_count(scene: Scene) -> int:
    return scene.count if scene.count is not None else len(scene.objects)


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """'a <relation> b' between centres (y down): the offset is on the relation's axis and dominant."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if relation == "left of":
        return dx < 0 and abs(dx) > abs(dy)
    if relation == "right of":
        return dx > 0 and abs(dx) > abs(dy)
    if relation == "above":
        return dy < 0 and abs(dy) > abs(dx)
    if relation == "below":
        return dy > 0 and abs(dy) > abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


def score(image: np.ndarray, scene: Scene, detections: list[Detection] | None = None) -> dict[str, Any]:
    """Exact alignment of an image with its scene, by category:

    - Colors: ``correct`` = the detected (colour, shape) multiset equals the requested one
      (every requested object present, no extra object); ``color_correct`` = every requested
      colour is present (shapes ignored, extra objects allowed).
    - Counting: ``correct`` = number of detected objects of the requested colour and shape
      equals the count (objects of other kinds are ignored); ``count_detected``;
      ``color_correct`` = the count is right when shapes are ignored.
    - Positional: ``correct`` = both objects found (largest detection of each kind) and the
      relation holds between their centres (``relation_holds``); ``found`` (0-2);
      ``color_correct`` = both colours present.

    Every result has ``category``, ``correct``, ``color_correct``, ``num_detected`` and
    ``detections`` (JSON list of the detections).
    """
    dets = detect(image) if detections is None else detections
    kinds = Counter((d.color, d.shape) for d in dets)
    want = Counter((o.color, o.shape) for o in scene.objects)
    res: dict[str, Any] = {"category": scene.category, "num_detected": len(dets),
                           "detections": json.dumps([asdict(d) for d in dets])}
    if scene.category == "Colors":
        colors = Counter(d.color for d in dets)
        res["correct"] = kinds == want
        res["color_correct"] = all(colors[c] >= n for c, n in Counter(o.color for o in scene.objects).items())
        res["missing"] = sum((want - kinds).values())
        res["extra"] = sum((kinds - want).values())
    elif scene.category == "Counting":
        o = scene.objects[0]
        n = kinds[(o.color, o.shape)]
        res["count_detected"] = n
        res["correct"] = n == requested_count(scene)
        res["color_correct"] = sum(1 for d in dets if d.color == o.color) == requested_count(scene)
    elif scene.category == "Positional":
        a_obj, b_obj = scene.objects[0], scene.objects[1]
        a = next((d for d in dets if (d.color, d.shape) == (a_obj.color, a_obj.shape)), None)
        b = next((d for d in dets if (d.color, d.shape) == (b_obj.color, b_obj.shape)), None)
        res["found"] = (a is not None) + (b is not None)
        res["relation_correct"] = bool(a and b and relation_holds(a, b, scene.relation or ""))
        res["correct"] = res["relation_correct"]
        res["color_correct"] = {a_obj.color, b_obj.color} <= {d.color for d in dets}
    else:
        raise ValueError(f"unknown shapes category {scene.category!r}")
    return res


def score_batch(images: np.ndarray | Sequence[np.ndarray], scenes: Sequence[Scene]) -> pd.DataFrame:
    """One row per image: ``score`` results plus the caption."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    rows = []
    for img, sc in zip(images, scenes):
        rows.append({"caption": sc.caption, **score(np.asarray(img), sc)})
    return pd.DataFrame(rows)
