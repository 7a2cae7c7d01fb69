"""Render a shapes scene at any resolution (anti-aliased by 4x supersampling)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .scene import BACKGROUND, COLORS, KINDS, Scene, ShapeObject

SUPERSAMPLE = 4
# Bump when the rendered pixels change for the same scene (drawing, supersampling, downsampling,
# colours): it is part of the shapes reference-statistics key (bench.metrics.refstats), so a bump
# makes cached references recompute instead of being reused for images they no longer describe.
RENDER_VERSION = 1


def _triangle(cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    return [(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)]


def _draw(draw: ImageDraw.ImageDraw, o: ShapeObject, big: int, fill) -> None:
    cx, cy, half = o.cx * big, o.cy * big, o.size * big / 2
    box = [cx - half, cy - half, cx + half, cy + half]
    if o.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif o.shape == "square":
        draw.rectangle(box, fill=fill)
    elif o.shape == "triangle":
        draw.polygon(_triangle(cx, cy, half), fill=fill)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def render(scene: Scene, size: int) -> Image.Image:
    """An RGB PIL image of ``scene`` at ``size`` x ``size`` pixels."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o, big, COLORS[o.color])
    return img.resize((size, size), Image.Resampling.BOX)


def render_kinds(scene: Scene, size: int) -> np.ndarray:
    """uint8 (size, size): per pixel, 1 + the ``KINDS`` index of the object covering most of it, 0 background
    (the same geometry as ``render``; objects never overlap)."""
    big = size * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        _draw(draw, o, big, 1 + KINDS.index((o.color, o.shape)))
    blocks = np.asarray(img).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(size, size, SUPERSAMPLE**2)
    votes = np.stack([(blocks == k).sum(-1) for k in range(len(KINDS) + 1)])
    return votes.argmax(0).astype(np.uint8)


def render_batch(scenes: list[Scene], size: int) -> np.ndarray:
    """uint8 array (N, H, W, 3)."""
    return np.stack([np.asarray(render(s, size)) for s in scenes])
