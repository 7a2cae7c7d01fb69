"""Where sampling decides a Positional scene's order: the guided x0 estimate at the first step.

    python -m bench.binding_gap checkpoint=FILE            # prints this after the binding gap table

A sample's layout is drawn at its first steps, from pure noise, where only the caption can say which
object goes left (or on top). For each Positional probe scene with two colours, x_T ~ N(0, I) at
t = ``t`` (0.97: inside the shipped sampler's first step), the guided prediction (paper 2.2)
``v = v_uncond + w (v_cond - v_uncond)`` and its x0 estimate ``x0 = alpha_t x_t - sigma_t v``,
averaged over ``draws`` noises. Each pixel's mass is shared among the two objects' palette colours and the
background (a softmax of minus the squared distances, ``SCALE``); ``margin`` is how far along the relation's
axis the right-hand (lower) object's colour is centred beyond the left-hand (upper) one's, and the scene's
order is ``correct`` when the margin is positive (beyond float error, ``TIE``). A model that reads only
which words occur puts both colours everywhere alike (margin 0; ``correct`` about 0.5, by chance of the
noise); one that reads the relation centres each colour on its side (1.0; the rendered scene itself
scores > 0, tested).
"""
from __future__ import annotations

import pandas as pd
import torch
from scipy.stats import binomtest

from bench.shapes.scene import BACKGROUND, COLORS, RELATIONS, Scene
from imagen.guidance import guide
from imagen.schedule import to_x0_eps

# the width (palette units, images in [-1, 1]) within which a pixel counts as a colour: a pixel's mass is
# shared among the two objects' colours and the background by exp(-|x - c|^2 / (2 SCALE^2))
SCALE = 0.25
# margins within this of 0 (float error of a model with no order) are ties, not in order
TIE = 1e-6


def order_margin(scene: Scene, x0: torch.Tensor, scale: float = SCALE) -> float:
    """How far along the relation's axis the right-hand (lower) object's colour is centred beyond the left-hand
    (upper) one's in ``x0`` (3, H, W), in image widths (> 0: the order the caption says, 0: no order)."""
    a, b = scene.objects
    horizontal = scene.relation in ("left of", "right of")
    def place(o):
        return o.cx if horizontal else o.cy
    first, second = (a, b) if place(a) < place(b) else (b, a)
    palette = torch.tensor([COLORS[first.color], COLORS[second.color], BACKGROUND], dtype=x0.dtype) / 127.5 - 1
    d2 = (x0[None] - palette[:, :, None, None]).pow(2).sum(1)          # (3, H, W)
    mass = torch.softmax(-d2 / (2 * scale ** 2), dim=0)[:2]              # each pixel shared among the colours
    along = mass.mean(1) if horizontal else mass.mean(2)                 # (2, axis): per column or per row
    pos = torch.linspace(0, 1, along.shape[1], dtype=x0.dtype)
    centre = (along * pos).sum(1) / along.sum(1)
    return float(centre[1] - centre[0])


def order_scenes(scenes: list) -> list:
    """The Positional scenes whose two objects differ in colour (the order shows in the colours)."""
    return [s for s in scenes if s.category == "Positional" and s.objects[0].color != s.objects[1].color]


@torch.no_grad()
def first_step_order(model: torch.nn.Module, enc, scenes: list, t: float = 0.97, w: float = 3.0,
                     draws: int = 4, seed: int = 0) -> pd.DataFrame:
    """One row per Positional scene with two colours: caption, margin, correct (module docstring)."""
    scenes = order_scenes(scenes)
    if not scenes:
        return pd.DataFrame({"caption": [], "relation": [], "margin": [], "correct": []})
    tokens, n, size = enc.encode([s.caption for s in scenes]), len(scenes), model.cfg.image_size
    g, tt, every = torch.Generator().manual_seed(seed), torch.full((n,), float(t)), torch.ones(n, dtype=torch.bool)
    x0 = torch.zeros(n, 3, size, size)
    for _ in range(draws):
        x_t = torch.randn(n, 3, size, size, generator=g)
        v = guide(model(x_t, tt, *tokens), model(x_t, tt, *tokens, drop_text=every), w)
        x0 += to_x0_eps(v, x_t, tt, "v")[0] / draws
    margins = [order_margin(s, x) for s, x in zip(scenes, x0)]
    return pd.DataFrame({"caption": [s.caption for s in scenes], "relation": [s.relation for s in scenes],
                         "margin": margins, "correct": [m > TIE for m in margins]})


def order_summary(rows: pd.DataFrame) -> dict:
    """n, the share of scenes in the caption's order with its 95% Wilson interval, the mean margin."""
    k, n = int(rows["correct"].sum()), len(rows)
    ci = binomtest(k, n).proportion_ci(method="wilson") if n else None
    lo, hi = (float(ci.low), float(ci.high)) if ci else (float("nan"), float("nan"))
    return {"n": n, "order": k / n if n else float("nan"), "order_lo": lo, "order_hi": hi,
            "margin": float(rows["margin"].mean())}


def order_by_relation(rows: pd.DataFrame) -> pd.DataFrame:
    """``order_summary`` per relation (one row each, in the order of ``RELATIONS``): a base that
    has learnt "left of" but not yet "above" shows it here, not in the pooled share."""
    present = [r for r in RELATIONS if r in set(rows["relation"])]
    return pd.DataFrame([{"relation": r, **order_summary(rows[rows["relation"] == r])} for r in present])
