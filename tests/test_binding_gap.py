"""The binding gap: zero for a model that ignores the caption, positive for one that binds."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bench.binding_gap import binding_gap, probe_scenes, summarise
from bench.shapes import binding_swap, render_batch, swapped_scene
from bench.shapes.detect import score
from imagen.schedule import alpha_sigma


def test_probe_scenes_alternate_categories_and_all_have_a_swap():
    scenes = probe_scenes(12, seed=0)
    assert [s.category for s in scenes[:4]] == ["Colors", "Positional", "Colors", "Positional"]
    assert all(binding_swap(s) not in (None, s.caption) for s in scenes)
    assert probe_scenes(12, seed=0) == scenes and probe_scenes(12, seed=1) != scenes


def test_a_swapped_scene_is_true_to_its_caption_and_false_to_the_original():
    for s in probe_scenes(16, seed=3):
        for flip in (True, False):
            w = swapped_scene(s, flip)
            image = render_batch([w], 64)[0]
            assert score(image, w)["correct"], w.caption
            assert not score(image, s)["correct"], (s.caption, w.caption)


class CaptionIds:
    """A stand-in encoder: token 0 holds the caption's index in a fixed list."""

    def __init__(self, captions):
        self.index = {c: i for i, c in enumerate(captions)}

    def encode(self, texts):
        ids = torch.tensor([float(self.index[t]) for t in texts])
        return ids[:, None, None].expand(-1, 1, 4).clone(), torch.ones(len(texts), 1, dtype=torch.long)


class Oracle(nn.Module):
    """Knows each caption's image x0 and predicts v = (alpha x_t - x0) / sigma exactly for it; without
    the caption (``drop_text`` rows) its x0 is 0."""

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.cfg = type("cfg", (), {"image_size": images.shape[-1]})

    def forward(self, x_t, t, tokens, mask, drop_text=None):
        x0 = self.images[tokens[:, 0, 0].long()]
        if drop_text is not None:
            x0 = torch.where(drop_text[:, None, None, None], torch.zeros_like(x0), x0)
        alpha, sigma = (a[:, None, None, None] for a in alpha_sigma(t))
        return (alpha * x_t - x0) / sigma


def test_gap_is_zero_without_text_and_positive_for_a_model_that_binds():
    scenes = probe_scenes(8, seed=0)
    swaps = [swapped_scene(s, flip_relation=i % 4 < 2) for i, s in enumerate(scenes)]
    everything = scenes + swaps
    images = torch.from_numpy(render_batch(everything, 16)).permute(0, 3, 1, 2).float() / 127.5 - 1
    enc = CaptionIds([s.caption for s in everything])
    oracle = binding_gap(Oracle(images), enc, scenes, seed=0)
    assert len(oracle) == 8 * 4 and (oracle["loss"] < 1e-8).all() and (oracle["gap"] > 0).all()

    blind = Oracle(images)
    blind.forward = lambda x_t, t, tokens, mask: torch.zeros_like(x_t)   # ignores the caption
    table = summarise(binding_gap(blind, enc, scenes, seed=0))
    assert (table["gap"] == 0).all() and (table["p_positive"] == 0).all()
    assert set(table["category"]) == {"Colors", "Positional"} and (table["n"] == 4).all()
    # what binding can gain (model-free) grows with the noise: x_t shows the binding less and less
    gain = table.groupby("t_bin")["twin_gain"].mean()
    assert gain.iloc[0] < 0.1 * gain.iloc[2:].min() and gain.iloc[0] < gain.iloc[1] < gain.iloc[2:].min()


def test_twin_gain_is_zero_for_twins_alike_and_half_the_difference_when_x_t_is_halfway():
    from bench.binding_gap import twin_gain

    x0, x1 = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    t = torch.tensor([0.5, 0.9])
    x_t = torch.randn(2, 3, 8, 8)
    assert torch.equal(twin_gain(x_t, t, x0, x0), torch.zeros(2))
    # x_t exactly between alpha x0 and alpha x1 says nothing: p = 1/2, the estimate is off by half
    alpha, sigma = alpha_sigma(t)
    halfway = alpha[:, None, None, None] * (x0 + x1) / 2
    assert torch.allclose(twin_gain(halfway, t, x0, x1), 0.25 / sigma**2)
    # at low noise x_t from x0 identifies it: no gain
    t = torch.full((2,), 0.05)
    alpha, sigma = alpha_sigma(t)
    clean = twin_gain(alpha[:, None, None, None] * x0 + sigma[:, None, None, None] * torch.randn(2, 3, 8, 8), t, x0, x1)
    assert (clean < 1e-6).all()


def test_an_sr_training_run_is_refused(tmp_path):
    from bench.binding_gap import load_base

    (tmp_path / "recipe.json").write_text('{"recipe": {"stage": "sr", "arch": {}}}')
    (tmp_path / "train_state.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a base-stage training run"):
        load_base(tmp_path / "train_state.safetensors")


def test_a_run_in_progress_and_its_ema_load_and_are_measured(tmp_path):
    from bench.binding_gap import load_base, run
    from bench.train import Recipe, train

    torch.set_num_threads(1)
    arch = dict(image_size=16, channels=[8, 16], num_res_blocks=1, attn_resolutions=[8], text_dim=384, heads=2)
    enc = {"kind": "minilm", "max_length": 16}
    train(Recipe(stage="base", arch=arch, image_size=16, steps=2, batch_size=2, warmup=1), tmp_path,
          ckpt_every=2, text_encoder_cfg=enc)
    live, trained_with = load_base(tmp_path / "train_state.safetensors")
    ema, _ = load_base(tmp_path / "ema.safetensors")
    assert trained_with == "minilm:all-MiniLM-L6-v2:L16" and live.cfg.image_size == ema.cfg.image_size == 16
    state = load_file(str(tmp_path / "train_state.safetensors"))
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in live.state_dict().items())
    table = run(str(tmp_path / "ema.safetensors"), enc, n=4, seed=0)
    assert len(table) == 2 * 4 and (table["n"] == 2).all() and set(table["category"]) == {"Colors", "Positional"}
    # the built-in base also says which path carries its caption; a model that has not learnt the
    # caption loses nothing without it
    assert {"loss_no_pooled", "loss_uncond"} <= set(table.columns)
    assert (table["loss_no_pooled"] > 0).all() and (table["loss_uncond"] > 0).all()
    with pytest.raises(ValueError, match="text_encoder.kind=random"):
        run(str(tmp_path / "ema.safetensors"), {"kind": "random", "max_length": 16}, n=2)


def test_command_line_refuses_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    for args, message in ((["checkpoint=" + str(tmp_path / "none.safetensors")], "checkpoint not found"),
                          ([], "missing checkpoint")):
        p = subprocess.run([sys.executable, "-m", "bench.binding_gap", *args], capture_output=True, text=True)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_text_paths_separate_the_pooled_vector_from_cross_attention():
    import zlib

    from imagen.checkpoint import build_stage

    class Tokens:   # a fixed random 384-d state per caption and token
        def encode(self, texts):
            g = [torch.Generator().manual_seed(zlib.crc32(t.encode())) for t in texts]
            return torch.stack([torch.randn(3, 384, generator=x) for x in g]), torch.ones(len(texts), 3, dtype=torch.long)

    torch.manual_seed(0)
    model = build_stage("base", dict(image_size=16, channels=[8, 16], num_res_blocks=1, attn_resolutions=[8],
                                     text_dim=384, heads=2)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    scenes = probe_scenes(4, seed=0)
    table = binding_gap(model, Tokens(), scenes, seed=0, paths=True)
    assert not torch.allclose(torch.tensor(table["loss_no_pooled"].values), torch.tensor(table["loss"].values))
    with torch.no_grad():   # a base with no pooled vector loses nothing without it
        model.text.pool[1].weight.zero_()
        model.text.pool[1].bias.zero_()
    table = binding_gap(model, Tokens(), scenes, seed=0, paths=True)
    assert torch.allclose(torch.tensor(table["loss_no_pooled"].values), torch.tensor(table["loss"].values))
    assert (table["loss_uncond"] != table["loss"]).all()   # the caption still enters through cross-attention


def test_head_binding_is_one_for_a_head_that_binds_and_zero_for_one_that_swaps():
    import math

    from bench.scene_kinds import head_binding

    kinds = torch.zeros(3, 8, 8, dtype=torch.long)
    kinds[:, 1:4, 1:4], kinds[:, 5:7, 5:7] = 3, 11      # two objects of kinds 3 and 11
    kinds[2, 5:7, 5:7] = 3                               # one kind only: nothing to bind
    exact = torch.nn.functional.one_hot(kinds, 19).permute(0, 3, 1, 2).float()
    swapped = exact.clone()
    swapped[:, [3, 11]] = exact[:, [11, 3]]
    swapped[:, 5] = 2.0                                  # a kind absent from the scene is never chosen
    assert head_binding(exact, kinds)[:2].tolist() == [1.0, 1.0]
    assert head_binding(swapped, kinds)[:2].tolist() == [0.0, 0.0]
    assert math.isnan(float(head_binding(exact, kinds)[2]))
    half = exact.clone()
    half[0, 3, 1:4, 1:4] = 0.0
    half[0, 11, 1:4, 1:4] = 1.0                          # the first object (9 of 13 pixels) given to the other
    assert math.isclose(float(head_binding(half, kinds)[0]), 4 / 13, rel_tol=1e-6)


def test_a_scene_kind_run_is_measured_with_its_head_live_or_ema(tmp_path):
    from bench.binding_gap import load_base, run
    from bench.scene_kinds import KindHead
    from bench.train import Recipe, train

    torch.set_num_threads(1)
    arch = dict(image_size=16, channels=[8, 16], num_res_blocks=1, attn_resolutions=[8], text_dim=384, heads=2)
    enc = {"kind": "minilm", "max_length": 16}
    train(Recipe(stage="base", arch=arch, image_size=16, steps=2, batch_size=2, warmup=1, scene_kinds=0.5),
          tmp_path, ckpt_every=2, text_encoder_cfg=enc)
    state = load_file(str(tmp_path / "train_state.safetensors"))
    for ema, prefix in ((False, "model."), (True, "ema.")):
        head, _ = load_base(tmp_path / "train_state.safetensors", ema=ema)
        assert isinstance(head, KindHead)
        assert all(torch.equal(v, state[prefix + k]) for k, v in head.state_dict().items())
    table = run(str(tmp_path / "train_state.safetensors"), enc, n=4, seed=0, ema=True)
    assert {"head_binding", "loss_no_pooled"} <= set(table.columns) and len(table) == 2 * 4
    assert table["head_binding"].between(0, 1).all()
    # the stage alone (ema.safetensors) has no head to measure
    assert "head_binding" not in run(str(tmp_path / "ema.safetensors"), enc, n=4, seed=0).columns


def test_a_shape_exchange_keeps_colours_and_places_and_is_true_to_its_caption():
    from bench.shapes import Scene, ShapeObject, scene_caption
    a, b = ShapeObject("circle", "red", 0.3, 0.5, 0.2), ShapeObject("square", "blue", 0.7, 0.5, 0.2)
    scene = Scene("Colors", (a, b), caption=scene_caption(Scene("Colors", (a, b))))
    w = swapped_scene(scene, exchange="shapes")
    assert [(o.color, o.cx, o.cy) for o in w.objects] == [(o.color, o.cx, o.cy) for o in scene.objects]
    assert [o.shape for o in w.objects] == ["square", "circle"]
    image = render_batch([w], 64)[0]
    assert score(image, w)["correct"] and not score(image, scene)["correct"]
    assert swapped_scene(scene).objects[0].color == "blue"   # the default exchanges colours
    alike = Scene("Colors", (a, ShapeObject("square", "red", 0.7, 0.5, 0.2)))
    assert swapped_scene(alike, exchange="shapes") is None   # one colour: both bindings say the same
    for s in probe_scenes(16, seed=3):
        for flip in (True, False):
            w = swapped_scene(s, flip, exchange="shapes")
            assert score(render_batch([w], 64)[0], w)["correct"] and w.caption != s.caption
    with pytest.raises(ValueError, match="exchange"):
        swapped_scene(scene, exchange="sizes")
