"""Render a shapes scene at any resolution (anti-aliased by 4x supersampling)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .scene import BACKGROUND, COLORS, Scene

SUPERSAMPLE = 4
# Bump when the rendered pixels change for the same scene (drawing, supersampling, downsampling,
# colours): it is part of the shapes reference-statistics key (bench.metrics.refstats), so a bump
# makes cached references recompute instead of being reused for images they no longer describe.
RENDER_VERSION = 1


def _triangle(cx: float, cy: float, half: float) -> list[tuple[float, float]]:
    return [(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)]


def render(scene: Scene, size: int) -> Image.Image:
    """An RGB PIL image of ``scene`` at ``size`` x ``size`` pixels."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        cx, cy, half = o.cx * big, o.cy * big, o.size * big / 2
        box = [cx - half, cy - half, cx + half, cy + half]
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        elif o.shape == "triangle":
            draw.polygon(_triangle(cx, cy, half), fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}")
    return img.resize((size, size), Image.Resampling.BOX)


def render_batch(scenes: list[Scene], size: int) -> np.ndarray:
    """uint8 array (N, H, W, 3)."""
    return np.stack([np.asarray(render(s, size)) for s in scenes])
