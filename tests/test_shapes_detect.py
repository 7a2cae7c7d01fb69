"""The exact shapes scorer: accuracy on real renders and hand-made failure cases."""
from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from bench.shapes import COLORS, SHAPES, Scene, ShapeObject, render, render_batch, sample_scene, scene_caption
from bench.shapes.detect import Detection, detect, relation_holds, score, score_batch


def make_scene(category: str, objects: list[tuple[str, str, float, float]], size: float = 0.25,
               relation: str | None = None, count: int | None = None) -> Scene:
    objs = tuple(ShapeObject(shape, color, x, y, size) for shape, color, x, y in objects)
    s = Scene(category, objs, relation=relation, count=count)
    return Scene(s.category, s.objects, s.relation, s.count, scene_caption(s))


def img(scene: Scene, size: int = 64) -> np.ndarray:
    return np.asarray(render(scene, size))


def random_scenes(n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [sample_scene(rng) for _ in range(n)]


@pytest.mark.parametrize("size", [32, 64])
def test_right_on_real_renders(size):
    scenes = random_scenes(500, seed=0)
    df = score_batch(render_batch(scenes, size), scenes)
    assert len(df) == 500 and set(df.category) == {"Colors", "Counting", "Positional"}
    assert df.correct.mean() >= 0.99, df[~df.correct][["caption", "detections"]].head()


def test_right_on_real_renders_256():
    scenes = random_scenes(150, seed=1)
    assert score_batch(render_batch(scenes, 256), scenes).correct.mean() >= 0.99


@pytest.mark.parametrize("size", [32, 64, 256])
@pytest.mark.parametrize("shape", SHAPES)
def test_single_object_geometry(shape, size):
    for color in COLORS:
        sc = make_scene("Colors", [(shape, color, 0.37, 0.61)], size=0.26)
        (d,) = detect(img(sc, size))
        assert (d.color, d.shape) == (color, shape)
        assert abs(d.cx - 0.37) < 0.5 / size + 1e-3
        # the triangle's centroid lies a sixth of its height below the box centre
        expect_cy = 0.61 + (0.26 / 6 if shape == "triangle" else 0.0)
        assert abs(d.cy - expect_cy) < 0.5 / size + 1e-3
        expect_area = 0.26 ** 2 * {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}[shape]
        # PIL fills shapes inclusively (about one supersampled pixel more per edge): area runs
        # a few percent high at low resolution
        assert d.area == pytest.approx(expect_area, rel=0.03 + 3 / size)


def test_background_noise_and_foreign_colours_are_not_objects():
    rng = np.random.default_rng(0)
    bg = np.full((64, 64, 3), 240, np.uint8)
    noisy = np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8)
    assert detect(noisy) == []
    speck = bg.copy()
    speck[10:12, 10:12] = COLORS["red"]             # 4 pixels: below the noise threshold
    assert detect(speck) == []
    black = bg.copy()
    black[20:40, 20:40] = (10, 10, 10)               # far from every palette colour: "other"
    assert detect(black) == []


def test_antialiased_edges_do_not_make_extra_objects():
    # a red/grey mix is nearest to orange in RGB; fitting the mix line keeps it red
    sc = make_scene("Colors", [("circle", "red", 0.5, 0.5)], size=0.3)
    assert [(d.color, d.shape) for d in detect(img(sc, 256))] == [("red", "circle")]


def test_wrong_colour_is_caught():
    want = make_scene("Colors", [("circle", "red", 0.3, 0.5)])
    drawn = make_scene("Colors", [("circle", "blue", 0.3, 0.5)])
    r = score(img(drawn), want)
    assert r["category"] == "Colors" and not r["correct"] and not r["color_correct"]
    assert score(img(want), want)["correct"]


def test_wrong_shape_keeps_colour_correct():
    want = make_scene("Colors", [("circle", "red", 0.3, 0.5)])
    drawn = make_scene("Colors", [("square", "red", 0.3, 0.5)])
    r = score(img(drawn), want)
    assert not r["correct"] and r["color_correct"]


def test_missing_and_extra_objects_are_caught():
    want = make_scene("Colors", [("circle", "red", 0.25, 0.5), ("square", "blue", 0.75, 0.5)])
    only_red = make_scene("Colors", [("circle", "red", 0.25, 0.5)])
    r = score(img(only_red), want)
    assert not r["correct"] and r["missing"] == 1 and not r["color_correct"]
    extra = make_scene("Colors", [("circle", "red", 0.25, 0.3), ("square", "blue", 0.75, 0.3),
                                  ("triangle", "green", 0.5, 0.75)])
    r = score(img(extra), want)
    assert not r["correct"] and r["extra"] == 1 and r["color_correct"]
    assert score(img(want), want)["correct"]


def test_swapped_relation_is_caught():
    want = make_scene("Positional", [("circle", "red", 0.25, 0.5), ("square", "blue", 0.75, 0.52)], relation="left of")
    swapped = make_scene("Positional", [("circle", "red", 0.75, 0.5), ("square", "blue", 0.25, 0.52)], relation="left of")
    assert score(img(want), want)["correct"]
    r = score(img(swapped), want)
    assert r["found"] == 2 and not r["correct"]
    # same picture, relation asked the other way round
    right = Scene(want.category, want.objects, "right of", None, "")
    assert not score(img(want), right)["correct"] and score(img(swapped), right)["correct"]


def test_positional_missing_object():
    want = make_scene("Positional", [("circle", "red", 0.5, 0.25), ("square", "blue", 0.5, 0.75)], relation="above")
    only_a = make_scene("Colors", [("circle", "red", 0.5, 0.25)])
    r = score(img(only_a), want)
    assert r["found"] == 1 and not r["correct"]


def test_extra_object_changes_the_count():
    pts = [(0.2, 0.2), (0.7, 0.2), (0.2, 0.7)]
    want = make_scene("Counting", [("triangle", "green", x, y) for x, y in pts[:2]], count=2)
    three = make_scene("Counting", [("triangle", "green", x, y) for x, y in pts], count=3)
    ok = score(img(want), want)
    assert ok["correct"] and ok["count_detected"] == 2
    r = score(img(three), want)
    assert not r["correct"] and r["count_detected"] == 3
    # an object of another kind does not count
    other = make_scene("Colors", [("triangle", "green", 0.2, 0.2), ("triangle", "green", 0.7, 0.2),
                                  ("circle", "green", 0.2, 0.7)])
    r = score(img(other), want)
    assert r["correct"] and r["count_detected"] == 2


def test_relation_holds_uses_dominant_axis():
    a, b = Detection("red", "circle", 0.2, 0.5, 0.05), Detection("blue", "square", 0.8, 0.55, 0.05)
    assert relation_holds(a, b, "left of") and relation_holds(b, a, "right of")
    assert not relation_holds(a, b, "above") and not relation_holds(a, b, "below")
    diag = Detection("blue", "square", 0.3, 0.9, 0.05)     # mostly below, slightly right
    assert relation_holds(diag, a, "below") and not relation_holds(a, diag, "left of")
    with pytest.raises(ValueError):
        relation_holds(a, b, "near")


def test_score_batch_table():
    scenes = random_scenes(12, seed=3)
    df = score_batch(list(render_batch(scenes, 32)), scenes)
    assert isinstance(df, pd.DataFrame) and len(df) == 12
    assert {"caption", "category", "correct", "num_detected", "detections"} <= set(df.columns)
    assert df.correct.dtype == bool
    with pytest.raises(ValueError):
        score_batch(render_batch(scenes[:2], 32), scenes)
