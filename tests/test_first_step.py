"""The first step's order: positive for the image the caption describes, negative for its mirror, and the
share of scenes in order is 1 for a model that draws the scene, 0 for one that draws it mirrored."""
import math
import subprocess
import sys

import torch
from test_binding_gap import CaptionIds, Oracle

from bench.binding_gap import probe_scenes
from bench.first_step import first_step_order, order_by_relation, order_margin, order_scenes, order_summary
from bench.shapes import swapped_scene
from bench.train import scene_images


def test_the_margin_is_positive_for_the_scene_and_negative_for_its_objects_exchanged():
    for seed in range(3):
        scenes = order_scenes(probe_scenes(96, seed=seed))
        assert len(scenes) >= 30 and all(s.category == "Positional" for s in scenes)
        assert {s.relation for s in scenes} == {"left of", "right of", "above", "below"}
        mirrored = [swapped_scene(s, flip_relation=True) for s in scenes]
        for size in (16, 32):
            for s, x, m in zip(scenes, scene_images(scenes, size), scene_images(mirrored, size)):
                assert order_margin(s, x) > 0.05, (s.caption, size)
                assert order_margin(s, m) < -0.05, (s.caption, size)
                assert abs(order_margin(s, torch.zeros_like(x))) < 1e-6


def test_a_model_that_draws_the_scene_is_in_order_and_one_that_mirrors_it_is_not():
    scenes = probe_scenes(40, seed=1)
    kept = order_scenes(scenes)
    enc, drawn = CaptionIds([s.caption for s in kept]), scene_images(kept, 16)
    right = first_step_order(Oracle(drawn), enc, scenes, t=0.97, w=3.0, draws=2)
    mirrored = [swapped_scene(s, flip_relation=True) for s in kept]
    wrong = first_step_order(Oracle(scene_images(mirrored, 16)), enc, scenes, t=0.97, w=3.0, draws=2)
    assert list(right["caption"]) == [s.caption for s in kept]
    assert right["correct"].all() and not wrong["correct"].any()
    assert (first_step_order(Oracle(drawn), enc, scenes, t=0.97, w=1.0, draws=2)["correct"]).all()
    s = order_summary(right)
    assert s["n"] == len(kept) and s["order"] == 1.0 and s["order_lo"] < 1.0 == s["order_hi"]
    s = order_summary(wrong)
    assert s["order"] == 0.0 and s["order_lo"] == 0.0 < s["order_hi"] and s["margin"] < 0
    assert list(right["relation"]) == [s.relation for s in kept]
    by = order_by_relation(wrong.assign(correct=[s.relation == "above" for s in kept]))
    assert set(by["relation"]) == {s.relation for s in kept}
    assert by["n"].sum() == len(kept) and (by["order"] == (by["relation"] == "above")).all()
    blind = first_step_order(Oracle(torch.zeros_like(drawn)), enc, scenes, draws=2)
    assert (blind["margin"].abs() < 1e-6).all() and not blind["correct"].any()
    none = first_step_order(Oracle(drawn), enc, [s for s in scenes if s.category == "Colors"])
    assert len(none) == 0 and order_summary(none)["n"] == 0 and math.isnan(order_summary(none)["order"])


def test_the_command_prints_the_first_step_after_the_binding_gap(tmp_path):
    from bench.train import Recipe, train

    torch.set_num_threads(1)
    arch = dict(image_size=16, channels=[8, 16], num_res_blocks=1, attn_resolutions=[8], text_dim=384, heads=2)
    train(Recipe(stage="base", arch=arch, image_size=16, steps=1, batch_size=2, warmup=1), tmp_path,
          ckpt_every=1, text_encoder_cfg={"kind": "minilm", "max_length": 16})
    p = subprocess.run([sys.executable, "-m", "bench.binding_gap", f"checkpoint={tmp_path / 'ema.safetensors'}",
                        "n=16", "text_encoder.max_length=16", "order_draws=1", "threads=1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    line = [x for x in p.stdout.splitlines() if x.startswith("first step")]
    assert len(line) == 1 and "t = 0.97, w = 3.0" in line[0]
    kept = order_scenes(probe_scenes(16, seed=0))
    assert f"of {len(kept)} scenes" in line[0] and not math.isnan(float(line[0].split("order ")[1].split()[0]))
    per = [x.strip().split(":")[0] for x in p.stdout.splitlines() if x.startswith("  ") and ": order " in x]
    assert per and set(per) == {s.relation for s in kept}
