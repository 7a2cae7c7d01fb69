"""Scenes of coloured shapes with captions mirroring DrawBench's Colors, Counting and
Positional categories, and the ground truth needed to score a generated image exactly.

Coordinates are fractions of the canvas (0..1, y down), so one scene renders at any
resolution.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 130, 20),
}
BACKGROUND: tuple[int, int, int] = (240, 240, 240)
SHAPES = ("circle", "square", "triangle")
# The kinds of object, (colour, shape); ``render_kinds`` labels a pixel 1 + its kind's index, 0 background.
KINDS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLORS for s in SHAPES)
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}

Category = Literal["Colors", "Counting", "Positional"]
CATEGORY_MIX: dict[str, float] = {"Colors": 0.3, "Counting": 0.35, "Positional": 0.35}
SIZE_RANGE = (0.22, 0.3)  # bounding-box side as a fraction of the canvas
# Bump when sample_scene draws other scenes from the same random stream (categories, mix, layout,
# sizes, colours, the order of random calls): it is part of the shapes reference-statistics key
# (bench.metrics.refstats), so a bump makes cached references recompute.
SCENE_VERSION = 1


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    category: str
    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # Positional: objects[0] <relation> objects[1]
    count: int | None = None     # Counting: how many of objects[0]'s kind
    caption: str = field(default="", compare=False)

    def to_json(self) -> str:
        return json.dumps({"category": self.category, "relation": self.relation, "count": self.count,
                           "objects": [asdict(o) for o in self.objects]}, sort_keys=True)

    @staticmethod
    def from_json(text: str, caption: str = "") -> "Scene":
        d = json.loads(text)
        return Scene(d["category"], tuple(ShapeObject(**o) for o in d["objects"]), d.get("relation"),
                     d.get("count"), caption)


def _place(rng: random.Random, sizes: list[float], gap: float = 0.06, tries: int = 200) -> list[tuple[float, float]]:
    """Non-overlapping centres with a clear ``gap`` (a fraction of the canvas) between bounding boxes, so
    every object is one connected component."""
    for _ in range(tries):
        pts: list[tuple[float, float]] = []
        for s in sizes:
            for _ in range(50):
                x, y = rng.uniform(s / 2 + 0.04, 1 - s / 2 - 0.04), rng.uniform(s / 2 + 0.04, 1 - s / 2 - 0.04)
                if all(max(abs(x - px), abs(y - py)) > (s + ps) / 2 + gap for (px, py), ps in zip(pts, sizes)):
                    pts.append((x, y))
                    break
            else:
                break
        if len(pts) == len(sizes):
            return pts
    raise RuntimeError("could not place objects")


def _place_pair(rng: random.Random, relation: str, s0: float, s1: float) -> list[tuple[float, float]]:
    """Centres for 'A <relation> B': a clear offset on the relation's axis, a small one across it."""
    while True:
        lo0, hi0 = s0 / 2 + 0.04, 1 - s0 / 2 - 0.04
        lo1, hi1 = s1 / 2 + 0.04, 1 - s1 / 2 - 0.04
        a_main, b_main = rng.uniform(lo0, hi0), rng.uniform(lo1, hi1)
        gap = (s0 + s1) / 2 + 0.1
        first_smaller = relation in ("left of", "above")
        if (b_main - a_main if first_smaller else a_main - b_main) < gap:
            continue
        across = rng.uniform(max(lo0, lo1), min(hi0, hi1))
        a_x, b_x = across + rng.uniform(-0.05, 0.05), across + rng.uniform(-0.05, 0.05)
        a_x, b_x = min(max(a_x, lo0), hi0), min(max(b_x, lo1), hi1)
        if relation in ("left of", "right of"):
            return [(a_main, a_x), (b_main, b_x)]
        return [(a_x, a_main), (b_x, b_main)]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def scene_caption(scene: Scene) -> str:
    o = scene.objects
    if scene.category == "Counting":
        n = scene.count or len(o)
        noun = o[0].shape if n == 1 else PLURAL[o[0].shape]
        return f"{COUNT_WORDS[n]} {o[0].color} {noun}"
    if scene.category == "Positional":
        rel = scene.relation if scene.relation in ("above", "below") else f"to the {scene.relation}"
        return (f"{_article(o[0].color)} {o[0].color} {o[0].shape} {rel} "
                f"{_article(o[1].color)} {o[1].color} {o[1].shape}")
    parts = [f"{_article(x.color)} {x.color} {x.shape}" for x in o]
    return " and ".join(parts)


def positional_relations(relations=None) -> tuple[str, ...]:
    """The relations a Positional scene draws from: ``relations`` (a non-empty subset of ``RELATIONS``), or
    all four when None."""
    if relations is None:
        return RELATIONS
    if not relations or set(relations) - set(RELATIONS):
        raise ValueError(f"relations must be a non-empty subset of {list(RELATIONS)}, got {list(relations)}")
    return tuple(relations)


def sample_scene(rng: random.Random, category: str | None = None, mix: dict[str, float] | None = None,
                 single_object: float = 0.6, relations=None, count_gap: float = 0.06) -> Scene:
    """Draw a random scene (and its caption) from the shapes grammar.

    ``mix`` weights the categories when ``category`` is None (default ``CATEGORY_MIX``);
    ``single_object`` is the share of one-object scenes in Colors (the rest bind two colours);
    ``relations`` are those a Positional scene draws from (``positional_relations``; None: all four);
    ``count_gap`` is the clear gap between a Counting scene's objects.
    """
    relations = positional_relations(relations)
    if category is None:
        mix = mix or CATEGORY_MIX
        category = rng.choices(list(mix), weights=list(mix.values()))[0]
    colors, shapes = list(COLORS), list(SHAPES)
    size = lambda: rng.uniform(*SIZE_RANGE)  # noqa: E731
    if category == "Counting":
        n = rng.randint(1, 4)
        shape, color = rng.choice(shapes), rng.choice(colors)
        s = size()
        pts = _place(rng, [s] * n, gap=count_gap)
        objs = tuple(ShapeObject(shape, color, x, y, s) for x, y in pts)
        scene = Scene("Counting", objs, count=n)
    elif category == "Positional":
        relation = rng.choice(relations)
        while True:
            a = (rng.choice(shapes), rng.choice(colors))
            b = (rng.choice(shapes), rng.choice(colors))
            if a != b:
                break
        s0, s1 = size(), size()
        (x0, y0), (x1, y1) = _place_pair(rng, relation, s0, s1)
        objs = (ShapeObject(a[0], a[1], x0, y0, s0), ShapeObject(b[0], b[1], x1, y1, s1))
        scene = Scene("Positional", objs, relation=relation)
    elif category == "Colors":
        n = 1 if rng.random() < single_object else 2
        kinds = []
        while len(kinds) < n:
            k = (rng.choice(shapes), rng.choice(colors))
            if k not in kinds and (not kinds or k[1] != kinds[0][1]):
                kinds.append(k)
        sizes = [size() for _ in kinds]
        pts = _place(rng, sizes)
        objs = tuple(ShapeObject(k[0], k[1], x, y, s) for k, (x, y), s in zip(kinds, pts, sizes))
        scene = Scene("Colors", objs)
    else:
        raise ValueError(f"unknown shapes category {category!r}")
    return Scene(scene.category, scene.objects, scene.relation, scene.count, scene_caption(scene))


EXCHANGES = ("colors", "shapes")


def reading_order(scene: Scene) -> Scene:
    """A two-object Colors scene captioned in reading order: the object further left named first (the
    image is unchanged). "A and B" then says where each object goes as "A to the left of B" does, so a
    base that binds a Positional caption's nouns to places can bind a Colors caption's the same way.
    Any other scene is returned as it is."""
    if scene.category != "Colors" or len(scene.objects) != 2 or scene.objects[0].cx <= scene.objects[1].cx:
        return scene
    ordered = replace(scene, objects=scene.objects[::-1])
    return replace(ordered, caption=scene_caption(ordered))


def count_twin(scene: Scene) -> Scene | None:
    """A Counting scene of two or more objects with its last object taken away (n - 1 of the same kind
    at the same places), or None (one object, or not a Counting scene). On the same noise the two images
    differ only where that object is, and their captions only in the count word, so a base that ignores
    the number cannot tell the pair apart."""
    if scene.category != "Counting" or len(scene.objects) < 2:
        return None
    fewer = replace(scene, objects=scene.objects[:-1], count=len(scene.objects) - 1)
    return replace(fewer, caption=scene_caption(fewer))


def drop_twin(scene: Scene) -> Scene | None:
    """A two-object Colors scene with its second object taken away ("a red circle and a blue square" ->
    "a red circle", the circle where it was), or None. On the same noise the pair differs only where the
    second object is, and the captions by "and" and one more object: a base that draws a third object, or
    the second one's shape for both, is told apart from one that draws what the caption names."""
    if scene.category != "Colors" or len(scene.objects) != 2:
        return None
    one = replace(scene, objects=scene.objects[:1])
    return replace(one, caption=scene_caption(one))


def binding_swap(scene: Scene, flip_relation: bool = True, exchange: str = "colors") -> str | None:
    """The caption of ``swapped_scene``: the same words bound differently, or None."""
    swapped = swapped_scene(scene, flip_relation, exchange)
    return None if swapped is None else swapped.caption


def swapped_scene(scene: Scene, flip_relation: bool = True, exchange: str = "colors") -> Scene | None:
    """The scene whose caption has the same words bound differently, or None where none exists.

    Positional: the relation reversed (``flip_relation``; the objects exchange places, so the scene
    is true to its caption) or the two colours (else shapes) exchanged;
    two-object Colors: the colours exchanged, when the shapes differ ("a red circle and a blue circle"
    swapped describes the same images). One-object and Counting scenes bind nothing and give None.
    ``exchange="shapes"`` exchanges the shapes first (colours and places stay, so the twins differ
    only where a shape is drawn); a two-object Colors scene then needs both colours and shapes to differ.
    """
    if exchange not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}, not {exchange!r}")
    if len(scene.objects) != 2 or scene.category == "Counting":
        return None
    a, b = scene.objects
    colors = (replace(a, color=b.color), replace(b, color=a.color)) if a.color != b.color else None
    shapes = (replace(a, shape=b.shape), replace(b, shape=a.shape)) if a.shape != b.shape else None
    first, second = (shapes, colors) if exchange == "shapes" else (colors, shapes)
    if scene.category == "Positional" and flip_relation:
        objects, relation = (replace(a, cx=b.cx, cy=b.cy), replace(b, cx=a.cx, cy=a.cy)), OPPOSITE[scene.relation]
    elif scene.category == "Positional":
        objects, relation = first or second or (a, b), scene.relation  # (a, b): both alike, nothing to exchange
    elif colors and shapes:
        objects, relation = first, scene.relation
    else:
        return None
    swapped = Scene(scene.category, objects, relation)
    return replace(swapped, caption=scene_caption(swapped))


def probe_scenes(n: int, seed: int) -> list[Scene]:
    """n scenes that have a binding swap: two-colour Colors with two shapes, and Positional, alternating
    (``bench.binding_gap``'s probes; ``bench.first_step`` reads their Positional half)."""
    rng, scenes = random.Random(f"binding-gap:{seed}"), []
    while len(scenes) < n:
        s = sample_scene(rng, category=("Colors", "Positional")[len(scenes) % 2], single_object=0.0)
        if binding_swap(s) is not None:
            scenes.append(s)
    return scenes
