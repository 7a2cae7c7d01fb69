"""Where sampling decides a Positional scene's order: the guided x0 estimate at the first step.

    python -m bench.binding_gap checkpoint=FILE            # prints this after the binding gap table

A sample's layout is drawn at its first steps, from pure noise, where only the caption can say which
object goes left (or on top). For each Positional probe scene with two colours, x_T ~ N(0, I) at
t = ``t`` (0.97: inside the shipped sampler's first step), the guided prediction (paper 2.2)
``v = v_uncond + w (v_cond - v_uncond)`` and its x0 estimate ``x0 = alpha_t x_t - sigma_t v``,
averaged over ``draws`` noises. Its colour is projected on the line from the right-hand (or lower)
object's palette colour to the left-hand (upper) one's; ``margin`` is that projection's mean over the
left (upper) half of the image minus its mean over the other half along the relation's axis, and the
scene's order is ``correct`` when the margin is positive. A model that reads only which words occur
puts both colours everywhere alike (margin 0, ``correct`` 0.5 by chance of the noise); one that reads
the relation puts the right colour on the right side (1.0).
"""
from __future__ import annotations

import pandas as pd
import torch
from scipy.stats import binomtest

from bench.shapes.scene import COLORS, Scene
from imagen.guidance import guide
from imagen.schedule import to_x0_eps


def order_margin(scene: Scene, x0: torch.Tensor) -> float:
    """How much more of the left (upper) object's colour than the other's ``x0`` (3, H, W) puts on its
    left (upper) half than on the other half (palette units, > 0: the order the caption says)."""
    a, b = scene.objects
    horizontal = scene.relation in ("left of", "right of")
    def place(o):
        return o.cx if horizontal else o.cy
    first, second = (a, b) if place(a) < place(b) else (b, a)
    c1, c2 = (torch.tensor(COLORS[o.color], dtype=x0.dtype) / 127.5 - 1 for o in (first, second))
    d = c1 - c2
    proj = torch.einsum("chw,c->hw", x0 - ((c1 + c2) / 2)[:, None, None], d / d.norm())
    along = proj.mean(0) if horizontal else proj.mean(1)
    half = along.shape[0] // 2
    return float(along[:half].mean() - along[-half:].mean())


def order_scenes(scenes: list) -> list:
    """The Positional scenes whose two objects differ in colour (the order shows in the colours)."""
    return [s for s in scenes if s.category == "Positional" and s.objects[0].color != s.objects[1].color]


@torch.no_grad()
def first_step_order(model: torch.nn.Module, enc, scenes: list, t: float = 0.97, w: float = 3.0,
                     draws: int = 4, seed: int = 0) -> pd.DataFrame:
    """One row per Positional scene with two colours: caption, margin, correct (module docstring)."""
    scenes = order_scenes(scenes)
    tokens, n, size = enc.encode([s.caption for s in scenes]), len(scenes), model.cfg.image_size
    g, tt, every = torch.Generator().manual_seed(seed), torch.full((n,), float(t)), torch.ones(n, dtype=torch.bool)
    x0 = torch.zeros(n, 3, size, size)
    for _ in range(draws):
        x_t = torch.randn(n, 3, size, size, generator=g)
        v = guide(model(x_t, tt, *tokens), model(x_t, tt, *tokens, drop_text=every), w)
        x0 += to_x0_eps(v, x_t, tt, "v")[0] / draws
    margins = [order_margin(s, x) for s, x in zip(scenes, x0)]
    return pd.DataFrame({"caption": [s.caption for s in scenes], "margin": margins,
                         "correct": [m > 0 for m in margins]})


def order_summary(rows: pd.DataFrame) -> dict:
    """n, the share of scenes in the caption's order with its 95% Wilson interval, the mean margin."""
    k, n = int(rows["correct"].sum()), len(rows)
    ci = binomtest(k, n).proportion_ci(method="wilson") if n else None
    lo, hi = (float(ci.low), float(ci.high)) if ci else (float("nan"), float("nan"))
    return {"n": n, "order": k / n if n else float("nan"), "order_lo": lo, "order_hi": hi,
            "margin": float(rows["margin"].mean())}
