"""Training: a killed run resumes from its checkpoint and continues exactly; outputs load."""
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bench.train import Recipe, shapes_batch, train
from imagen.checkpoint import load_stage, read_meta

TINY = dict(image_size=16, channels=[8, 16], num_res_blocks=1, attn_resolutions=[8], text_dim=384, heads=2,
            self_attention=False)
TINY_SR = dict(image_size=32, lowres_size=16, channels=[8, 16], blocks=[1, 1], text_dim=384, heads=2)


def _recipe(steps: int, stage: str = "base") -> Recipe:
    if stage == "base":
        return Recipe(stage="base", arch=TINY, image_size=16, steps=steps, batch_size=4, warmup=2)
    return Recipe(stage="sr", arch=TINY_SR, image_size=32, lowres_size=16, steps=steps, batch_size=4, warmup=2,
                  aug_level_max=0.5)


def _jittered(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every weight drawn from N(0, 0.05^2): zero-initialised output layers no longer hide the input."""
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "train_state.safetensors"))


def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    enc = {"kind": "minilm", "max_length": 16}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_recipe(4), straight, ckpt_every=2, text_encoder_cfg=enc)
    train(_recipe(2), resumed, ckpt_every=2, text_encoder_cfg=enc)       # "killed" after 2 steps
    assert int(_weights(resumed)["step"]) == 2
    train(_recipe(4), resumed, ckpt_every=2, text_encoder_cfg=enc)       # same command again: resumes
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and int(b["step"]) == 4
    for k in a:
        assert torch.equal(a[k], b[k]), k
    model, meta = load_stage(straight / "ema.safetensors")
    assert meta["kind"] == "base" and meta["train_steps"] == 4 and meta["prediction"] == "v"
    assert (straight / "loss.png").exists() and len((straight / "loss.csv").read_text().splitlines()) == 4


def test_sr_stage_trains_with_noise_augmentation(tmp_path):
    torch.set_num_threads(1)
    train(_recipe(2, "sr"), tmp_path, ckpt_every=1, text_encoder_cfg={"kind": "minilm", "max_length": 16})
    meta = read_meta(tmp_path / "ema.safetensors")
    assert meta["kind"] == "sr" and meta["lowres_size"] == 16 and meta["image_size"] == 32
    assert meta["recipe"]["aug_level_max"] == 0.5 and meta["recipe"]["text_drop"] == 0.1


def test_batches_are_keyed_by_seed_and_step():
    c1, x1, _ = shapes_batch(0, 7, 4, 16)
    c2, x2, _ = shapes_batch(0, 7, 4, 16)
    c3, _, _ = shapes_batch(0, 8, 4, 16)
    assert c1 == c2 and torch.equal(x1, x2) and c1 != c3
    assert x1.min() >= -1 and x1.max() <= 1 and x1.shape == (4, 3, 16, 16)


def test_train_state_format_is_unchanged(tmp_path):
    """The layout a run in progress resumes from: model.*, ema.*, adam.<step|exp_avg|exp_avg_sq>.<param>,
    step; metadata recipe / seed / text_encoder / params."""
    torch.set_num_threads(1)
    train(_recipe(1), tmp_path, ckpt_every=1, text_encoder_cfg={"kind": "minilm", "max_length": 16})
    state = _weights(tmp_path)
    model, _ = load_stage(tmp_path / "ema.safetensors")
    weights = {f"{p}.{k}" for p in ("model", "ema") for k in model.state_dict()}
    adam = set(state) - weights - {"step"}
    names = {k.split(".", 2)[2] for k in adam}   # parameters with a gradient so far (not always null_token)
    assert weights | {"step"} <= set(state) and names <= dict(model.named_parameters()).keys()
    assert adam == {f"adam.{k}.{n}" for n in names for k in ("step", "exp_avg", "exp_avg_sq")}
    assert state["step"].dtype == torch.int64 and int(state["step"]) == 1
    assert set(read_meta(tmp_path / "train_state.safetensors")) == {"recipe", "seed", "text_encoder", "params"}


def _prefixes(path: Path) -> set[str]:
    return {k.split(".")[0] if k.split(".")[0] != "adam" else ".".join(k.split(".")[:2]) for k in load_file(str(path))}


def test_both_trainers_share_the_state_format_and_resume_through_the_core(tmp_path, monkeypatch):
    from test_shapes_clip import TINY as CLIP_TINY
    from test_shapes_clip import FakeTextEncoder

    import bench.training as core
    from bench.shapes_clip.train import TrainConfig
    from bench.shapes_clip.train import train as train_clip

    torch.set_num_threads(1)
    loaded: list[int] = []
    real = core.load_state
    monkeypatch.setattr(core, "load_state", lambda t, *a, **k: loaded.append(real(t, *a, **k)) or loaded[-1])
    enc = {"kind": "minilm", "max_length": 16}
    clip_cfg = TrainConfig(steps=3, batch_size=8, warmup=1, arch=dict(CLIP_TINY))
    runs = {"stage": lambda d, **kw: train(_recipe(3), d, ckpt_every=2, text_encoder_cfg=enc, **kw),
            "clip": lambda d, **kw: train_clip(clip_cfg, d / "w.safetensors", d, threads=1, ckpt_every=2, eval_n=4,
                                               text_encoder=FakeTextEncoder(), **kw)}
    for name, run in runs.items():
        straight, resumed = tmp_path / name / "straight", tmp_path / name / "resumed"
        run(straight)
        run(resumed, max_minutes=0)            # stops (and saves) after its first step
        assert int(_weights(resumed)["step"]) == 1
        run(resumed)                           # the same command again: resumes at step 1
        a, b = _weights(straight), _weights(resumed)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert [r.split(",")[0] for r in (resumed / "loss.csv").read_text().splitlines()] == ["0", "1", "2"]
        assert (resumed / "loss.png").exists()
    assert loaded == [1, 1]                    # each trainer resumed through bench.training
    stage, clip = _prefixes(tmp_path / "stage/straight/train_state.safetensors"), \
        _prefixes(tmp_path / "clip/straight/train_state.safetensors")
    assert clip == {"model", "adam.step", "adam.exp_avg", "adam.exp_avg_sq", "step"}
    assert stage == clip | {"ema"}             # the same layout; only the stage trainer keeps an EMA


def test_loss_log_keeps_the_steps_before_the_resume(tmp_path):
    from bench.training import LossLog

    path = tmp_path / "loss.csv"
    path.write_text("0,1.0,2.0\n1,0.9,4.0\n2,0.8,6.0\n3,0.7,8.0\n")   # killed after step 3, saved at step 2
    log = LossLog(path)
    log.restart(2)
    assert path.read_text().splitlines() == ["0,1.0,2.0", "1,0.9,4.0"] and log.seconds0 == 4.0
    log.append(2, 0.75, 5.0)
    assert path.read_text().splitlines()[-1] == "2,0.750000,5.0"
    log.restart(0)
    assert not path.exists() and log.seconds0 == 0.0


def test_time_focus_moves_a_share_of_the_times_and_leaves_other_recipes_alone():
    from bench.train import focus_times

    t = torch.rand(20_000, generator=torch.Generator().manual_seed(0))
    plain = Recipe(stage="base", arch=TINY)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(focus_times(t, plain, g), t)
    assert torch.equal(torch.rand(1, generator=g), torch.rand(1, generator=torch.Generator().manual_seed(1)))
    focused = Recipe(stage="base", arch=TINY, time_focus=[0.5, 1.0], time_focus_share=0.6)
    f = focus_times(t, focused, torch.Generator().manual_seed(1))
    # 0.6 of the rows on U[0.5, 1] and 0.4 on U[0, 1]: P(t < 0.5) = 0.4 * 0.5
    assert abs((f < 0.5).float().mean().item() - 0.2) < 0.02
    assert f.min() >= 0 and f.max() <= 1
    moved = f != t
    assert torch.allclose(f[moved], 0.5 + 0.5 * t[moved])
    bad = Recipe(stage="base", arch=TINY, time_focus=[0.8, 0.2])
    with pytest.raises(ValueError, match="time_focus"):
        focus_times(t, bad, torch.Generator())


def test_binding_contrast_adds_a_hinge_on_swapped_captions():
    from bench.train import diffusion_loss
    from imagen.text_encoder import TextEncoder, TextEncoderConfig

    torch.set_num_threads(1)
    enc = TextEncoder(TextEncoderConfig(max_length=16))
    mix = {"Colors": 0.5, "Positional": 0.5}
    plain = Recipe(stage="base", arch=TINY, image_size=16, batch_size=8, category_mix=mix, single_object=0.0,
                   time_focus=[0.6, 1.0], time_focus_share=1.0)
    hinge = Recipe(**{**plain.__dict__, "binding_contrast": 1.0, "binding_margin": 0.5})
    torch.manual_seed(0)
    from imagen.checkpoint import build_stage

    model = build_stage("base", TINY)
    a = diffusion_loss(model, enc, plain, 0, 3, torch.device("cpu"))
    b = diffusion_loss(model, enc, hinge, 0, 3, torch.device("cpu"))
    # a fresh model's output ignores the text (zero-initialised output layer): both losses equal,
    # so every eligible row's hinge is exactly the margin
    assert torch.isclose(b - a, torch.tensor(0.5), atol=1e-6)
    (b - a).backward()   # the hinge alone moves the output layer: the two captions' features differ
    assert model.out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="base stage"):
        Recipe(**{**hinge.__dict__, "stage": "sr"})


def test_a_base_grows_self_attention_and_computes_the_same_function(tmp_path):
    from bench.train import build_models
    from imagen.checkpoint import build_stage, save_stage

    torch.manual_seed(0)
    src = _jittered(build_stage("base", TINY))
    save_stage(src, tmp_path / "ema.safetensors", "base", prediction="v", image_size=16, lowres_size=0)
    grown = Recipe(stage="base", arch={**TINY, "self_attention": True}, image_size=16,
                   init_from=str(tmp_path / "ema.safetensors"))
    model, ema = build_models(grown, 0, torch.device("cpu"))
    src, _ = load_stage(tmp_path / "ema.safetensors")   # the weights as stored (fp16)
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in src.parameters())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.8])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        want = src(x, t, tokens, mask)
        assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last), t, tokens, mask), want, atol=1e-5)
        assert torch.allclose(ema(x, t, tokens, mask), want, atol=1e-5)
    other_heads = Recipe(stage="base", arch={**TINY, "self_attention": True, "heads": 4}, image_size=16,
                         init_from=str(tmp_path / "ema.safetensors"))
    with pytest.raises(ValueError, match="same architecture"):
        build_models(other_heads, 0, torch.device("cpu"))


def test_pooled_drop_leaves_the_caption_to_cross_attention_on_its_rows():
    from bench.train import diffusion_loss
    from imagen.checkpoint import build_stage
    from imagen.text_encoder import TextEncoder, TextEncoderConfig

    torch.manual_seed(0)
    model = _jittered(build_stage("base", TINY))
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([0.2, 0.5, 0.9])
    tokens, mask = torch.randn(3, 5, 384), torch.ones(3, 5, dtype=torch.long)
    rows = torch.tensor([True, False, True])
    seen = []   # the time embedding as the first ResBlock receives it
    model.down[0][0].emb.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    every = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        full = model(x, t, tokens, mask)
        assert torch.equal(model(x, t, tokens, mask, drop_pooled=torch.zeros(3, dtype=torch.bool)), full)
        dropped = model(x, t, tokens, mask, drop_pooled=rows)
        uncond = model(x, t, tokens, mask, drop_text=every)
    emb_full, _, emb_dropped, emb_uncond = seen
    assert torch.equal(dropped[1], full[1]) and torch.equal(emb_dropped[1], emb_full[1])  # a kept row is untouched
    # a dropped row's time embedding is the empty caption's, its cross-attention still reads the caption
    assert torch.allclose(emb_dropped[rows], emb_uncond[rows], atol=1e-6)
    assert not torch.allclose(emb_dropped[rows], emb_full[rows], atol=1e-3)
    assert not torch.equal(dropped[rows], uncond[rows])

    enc = TextEncoder(TextEncoderConfig(max_length=16))
    plain = Recipe(stage="base", arch=TINY, image_size=16, batch_size=4)
    dropping = Recipe(**{**plain.__dict__, "pooled_drop": 0.5})
    model = _jittered(build_stage("base", TINY))
    a, b = (diffusion_loss(model, enc, r, 0, 1, torch.device("cpu")) for r in (plain, dropping))
    assert not torch.isclose(a, b)
    with pytest.raises(ValueError, match="base stage"):
        Recipe(**{**dropping.__dict__, "stage": "sr"})


def test_binding_twins_pair_each_scene_with_its_swap_on_the_same_noise():
    from bench.shapes import binding_swap
    from bench.train import batch_scenes, diffusion_loss, with_twins
    from imagen.text_encoder import TextEncoder, TextEncoderConfig

    mix = {"Colors": 0.5, "Positional": 0.5}
    scenes, source = with_twins(batch_scenes(0, 3, 8, mix, 0.0), 3)
    paired = [j for j in range(4, 8) if source[j] != j]
    assert paired and all(int(source[j]) == j - 4 for j in paired)
    for j in paired:   # the same words bound otherwise (or the relation reversed)
        i = j - 4
        assert scenes[j].caption != scenes[i].caption and scenes[j].caption in (binding_swap(scenes[i], True), binding_swap(scenes[i], False))

    seen = {}

    class Spy(torch.nn.Module):   # records what the model is asked to denoise
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x_t, t, tokens, mask, drop_text=None):
            seen.update(x_t=x_t, t=t, tokens=tokens, drop=drop_text)
            return x_t * self.w

    enc = TextEncoder(TextEncoderConfig(max_length=16))
    recipe = Recipe(stage="base", arch=TINY, image_size=16, batch_size=8, category_mix=mix, single_object=0.0,
                    binding_twins=True)
    diffusion_loss(Spy(), enc, recipe, 0, 3, torch.device("cpu"))
    for j in paired:
        i = j - 4
        assert seen["t"][j] == seen["t"][i] and seen["drop"][j] == seen["drop"][i]
        assert not torch.equal(seen["x_t"][j], seen["x_t"][i]) and not torch.equal(seen["tokens"][j], seen["tokens"][i])
        # the same noise: x_t differs only where the two images differ (the objects)
        same = (seen["x_t"][j] == seen["x_t"][i]).float().mean()
        assert same > 0.5


def test_a_base_gains_coordinate_inputs_and_computes_the_same_function(tmp_path):
    from bench.train import build_models
    from imagen.checkpoint import build_stage, save_stage
    from imagen.unet import with_coords

    grid = with_coords(torch.zeros(1, 3, 4, 4))[0, 3:]
    assert torch.allclose(grid[0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))   # x grows to the right
    assert torch.allclose(grid[1, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))  # y grows downwards
    torch.manual_seed(0)
    src = _jittered(build_stage("base", TINY))
    save_stage(src, tmp_path / "ema.safetensors", "base", prediction="v", image_size=16, lowres_size=0)
    src, _ = load_stage(tmp_path / "ema.safetensors")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.95])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    for arch in ({**TINY, "coords": True}, {**TINY, "coords": True, "self_attention": True}):
        model, _ = build_models(Recipe(stage="base", arch=arch, image_size=16,
                                       init_from=str(tmp_path / "ema.safetensors")), 0, torch.device("cpu"))
        assert model.stem.in_channels == 5
        with torch.no_grad():
            assert torch.allclose(model(x, t, tokens, mask), src(x, t, tokens, mask), atol=1e-5)
            model.stem.weight[:, 3:].normal_()   # once trained, the output depends on where a pixel is
            assert not torch.allclose(model(x, t, tokens, mask), src(x, t, tokens, mask), atol=1e-3)


def test_a_base_gains_coordinate_queries_and_computes_the_same_function(tmp_path):
    from bench.train import build_models
    from imagen.checkpoint import build_stage, save_stage

    torch.manual_seed(0)
    src = _jittered(build_stage("base", {**TINY, "coords": True}))
    save_stage(src, tmp_path / "ema.safetensors", "base", prediction="v", image_size=16, lowres_size=0)
    src, _ = load_stage(tmp_path / "ema.safetensors")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.97])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    arch = {**TINY, "coords": True, "coord_queries": True}
    model, _ = build_models(Recipe(stage="base", arch=arch, image_size=16,
                                   init_from=str(tmp_path / "ema.safetensors")), 0, torch.device("cpu"))
    cross = [m for m in model.modules() if getattr(m, "is_cross", False)]
    assert cross and all(m.q_pos is not None for m in cross)
    with torch.no_grad():
        assert torch.allclose(model(x, t, tokens, mask), src(x, t, tokens, mask), atol=1e-5)
        for m in cross:                       # attention that has learnt to read the caption
            m.kv.weight.normal_(std=1.0)
            m.out.weight.normal_(std=1.0)
        before = model(x, t, tokens, mask)
        for m in cross:                       # once trained, which token a pixel reads depends on its place
            m.q_pos[-1].weight.normal_(std=5.0)
        assert not torch.allclose(model(x, t, tokens, mask), before, atol=1e-3)
    # and a base with coordinate queries is not continued by one without them
    save_stage(model, tmp_path / "cq.safetensors", "base", prediction="v", image_size=16, lowres_size=0)
    with pytest.raises(ValueError, match="coord_queries"):
        build_models(Recipe(stage="base", arch={**TINY, "coords": True}, image_size=16,
                            init_from=str(tmp_path / "cq.safetensors")), 0, torch.device("cpu"))


def test_render_kinds_labels_each_pixel_with_the_object_drawn_there():
    import random

    import numpy as np

    from bench.shapes import COLORS, KINDS, render, render_kinds, sample_scene
    from bench.shapes.scene import BACKGROUND

    rng = random.Random(5)
    for category in ("Colors", "Counting", "Positional"):
        scene = sample_scene(rng, category=category, single_object=0.0)
        labels, image = render_kinds(scene, 32), np.asarray(render(scene, 32)).astype(int)
        want = {1 + KINDS.index((o.color, o.shape)) for o in scene.objects}
        assert set(np.unique(labels)) == want | {0}
        for k in np.unique(labels):
            colour = BACKGROUND if k == 0 else COLORS[KINDS[k - 1][0]]
            # a pixel takes the label covering most of it, so it is nearer that colour than any other
            assert np.abs(image[labels == k] - colour).max() <= 128
            assert np.median(np.abs(image[labels == k] - colour).max(-1)) == 0


def test_scene_kinds_train_a_head_beside_the_stage_and_save_the_stage_alone(tmp_path):
    import math

    from bench.scene_kinds import KindHead, kind_loss
    from bench.train import build_models, diffusion_loss
    from imagen.text_encoder import TextEncoder, TextEncoderConfig

    torch.set_num_threads(1)
    recipe = Recipe(stage="base", arch=TINY, image_size=16, steps=2, batch_size=4, warmup=2, scene_kinds=0.5)
    model, ema = build_models(recipe, 0, torch.device("cpu"))
    assert isinstance(model, KindHead) and isinstance(ema, KindHead)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.95])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    _jittered(model.unet)
    with torch.no_grad():
        pred, logits = model(x, t, tokens, mask)
        assert torch.equal(pred, model.unet(x, t, tokens, mask)) and logits.shape == (2, 19, 16, 16)
    kinds = torch.randint(0, 19, (2, 16, 16))
    uniform = torch.zeros(2, 19, 16, 16)
    assert math.isclose(float(kind_loss(uniform, kinds, torch.tensor([True, True]))), math.log(19), rel_tol=1e-6)
    exact = torch.nn.functional.one_hot(kinds, 19).permute(0, 3, 1, 2).float() * 50
    assert float(kind_loss(exact, kinds, torch.tensor([True, True]))) < 1e-6
    assert float(kind_loss(uniform, kinds, torch.tensor([False, False]))) == 0.0   # no captioned row
    # object pixels weighted 1 + objects: uniform logits cost ln 19 times the mean weight
    both, weight = torch.tensor([True, True]), 1 + 4.0 * (kinds > 0).float().mean()
    assert math.isclose(float(kind_loss(uniform, kinds, both, 4.0)), math.log(19) * float(weight), rel_tol=1e-6)
    assert float(kind_loss(exact, kinds, both, 4.0)) < 1e-6
    wrong_bg = exact.clone()
    wrong_bg[0][:, kinds[0] == 0] = 0.0          # row 0 uniform on its background: object weights add nothing
    assert math.isclose(float(kind_loss(wrong_bg, kinds, both, 4.0)),
                        float(kind_loss(wrong_bg, kinds, both, 0.0)), rel_tol=1e-5)

    enc = TextEncoder(TextEncoderConfig(max_length=16))
    plain = Recipe(**{**recipe.__dict__, "scene_kinds": 0.0})
    model.head.weight.data.zero_(), model.head.bias.data.zero_()
    plain_model, _ = build_models(plain, 0, torch.device("cpu"))
    plain_model.load_state_dict(model.unet.state_dict())
    a = diffusion_loss(plain_model, enc, plain, 0, 1, torch.device("cpu"))
    b = diffusion_loss(model, enc, recipe, 0, 1, torch.device("cpu"))
    # a zero head predicts every kind alike: ln 19 on each captioned row, weighted by scene_kinds
    assert math.isclose(float((b - a).detach()), 0.5 * math.log(19), rel_tol=1e-5)

    train(recipe, tmp_path / "run", text_encoder_cfg={"kind": "minilm", "max_length": 16})
    state = _weights(tmp_path / "run")
    assert any(k.startswith("model.head.") for k in state) and any(k.startswith("ema.unet.") for k in state)
    stage, meta = load_stage(tmp_path / "run" / "ema.safetensors")   # the U-Net alone, loadable for sampling
    assert meta["recipe"]["scene_kinds"] == 0.5 and not hasattr(stage, "head")
    with pytest.raises(ValueError, match="base stage"):
        Recipe(**{**recipe.__dict__, "stage": "sr"})


def test_text_lr_scale_puts_the_caption_path_in_its_own_group_and_resumes_exactly(tmp_path):
    from dataclasses import replace

    from bench.train import param_groups
    from bench.training import Trainer
    from imagen.checkpoint import build_stage

    model = build_stage("base", TINY)
    (one,) = param_groups(model)
    assert len(one["params"]) == len(list(model.parameters()))
    rest, text = param_groups(model, 10.0)
    ids = {id(p): n for n, p in model.named_parameters()}
    text_names = {ids[id(p)] for p in text["params"]}
    assert len(rest["params"]) + len(text["params"]) == len(ids) and text["lr_scale"] == 10.0
    cross = {n for n, m in model.named_modules() if getattr(m, "is_cross", False)}
    names = set(ids.values())
    assert cross and text_names == ({n for n in names if n == "null_token" or n.startswith("text.")}
                                    | {n for n in names if any(n.startswith(c + ".") for c in cross)})
    # one AdamW step from the same weights on the same loss: the text path moves 10x as far, the rest alike
    moved = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        m = _jittered(build_stage("base", TINY))
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        core = Trainer(m, torch.optim.AdamW(param_groups(m, scale), lr=1.0, weight_decay=0.0), tmp_path / "core", {},
                       grad_clip=1.0)
        x = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
        tokens = torch.linspace(-1, 1, 2 * 384).reshape(1, 2, 384)
        core.update(m(x, torch.full((1,), 0.5), tokens, torch.ones(1, 2, dtype=torch.long)).square().mean(), 1e-3, 0)
        assert [g["lr"] for g in core.opt.param_groups] == ([1e-3] if scale == 1 else [1e-3, pytest.approx(1e-2)])
        moved[scale] = {n: p.detach() - before[n] for n, p in m.named_parameters()}
    for n, d in moved[1.0].items():
        if n in text_names:
            assert torch.allclose(moved[10.0][n], 10 * d, rtol=1e-3, atol=1e-6), n   # up to float rounding
        else:
            assert torch.equal(moved[10.0][n], d), n
    assert any(moved[1.0][n].abs().max() > 1e-4 for n in text_names)

    torch.set_num_threads(1)
    enc = {"kind": "minilm", "max_length": 16}
    def recipe(steps):
        return replace(_recipe(steps), text_lr_scale=10.0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(recipe(3), straight, ckpt_every=2, text_encoder_cfg=enc)
    train(recipe(2), resumed, ckpt_every=2, text_encoder_cfg=enc)
    train(recipe(3), resumed, ckpt_every=2, text_encoder_cfg=enc)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(_recipe(3), tmp_path / "plain", ckpt_every=3, text_encoder_cfg=enc)
    plain = _weights(tmp_path / "plain")
    # the text path moved differently at 10x its rate
    assert not torch.equal(a["model.text.proj.weight"], plain["model.text.proj.weight"])
    with pytest.raises(ValueError, match="text_lr_scale"):
        replace(_recipe(1, "sr"), text_lr_scale=2.0)


def test_relations_restrict_positional_scenes_and_default_keeps_the_data():
    """recipe.relations: Positional scenes draw only from the named relations; null keeps every step's
    scenes as they were before the option existed (the captions below were drawn by that code); an unknown
    relation fails at once."""
    from bench.train import batch_scenes
    mix = {"Positional": 1.0}
    only = batch_scenes(0, 5, 64, mix, 0.0, ["left of"])
    assert {s.relation for s in only} == {"left of"}
    assert all(s.objects[0].cx < s.objects[1].cx for s in only)
    every = batch_scenes(0, 5, 64, mix, 0.0)
    assert {s.relation for s in every} == {"left of", "right of", "above", "below"}
    assert [s.caption for s in every[:3]] == ["a green circle to the left of a green square",
                                              "a purple triangle to the right of a green square",
                                              "a yellow circle above a purple square"]
    with pytest.raises(ValueError, match="relations"):
        Recipe(stage="base", arch=TINY, image_size=16, relations=["beside"])
    with pytest.raises(ValueError, match="relations"):
        Recipe(stage="base", arch=TINY, image_size=16, relations=[])


def test_continue_from_starts_the_next_phase_from_the_last_ones_state(tmp_path):
    from dataclasses import replace

    torch.set_num_threads(1)
    enc = {"kind": "minilm", "max_length": 16}
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    train(_recipe(4), straight, ckpt_every=2, text_encoder_cfg=enc)
    train(_recipe(2), first, ckpt_every=2, text_encoder_cfg=enc)
    # the next phase, in its own directory: weights, EMA, Adam moments and step from the first; init_from unread
    phase = replace(_recipe(4), continue_from=str(first / "train_state.safetensors"), init_from=str(tmp_path / "none"))
    train(phase, second, ckpt_every=2, text_encoder_cfg=enc)
    a, b = _weights(straight), _weights(second)
    assert a.keys() == b.keys() and int(b["step"]) == 4
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [line.split(",")[0] for line in (second / "loss.csv").read_text().splitlines()] == ["2", "3"]
    train(phase, second, ckpt_every=2, text_encoder_cfg=enc)          # its own state first: nothing left to do
    again = _weights(second)
    assert all(torch.equal(again[k], b[k]) for k in b)
    # a different recipe from there (the curriculum's point): the phase trains on, from step 2
    other = replace(phase, category_mix={"Colors": 0, "Counting": 0, "Positional": 1.0})
    train(other, tmp_path / "other", ckpt_every=2, text_encoder_cfg=enc)
    c = _weights(tmp_path / "other")
    assert int(c["step"]) == 4 and not torch.equal(c["model.out.weight"], a["model.out.weight"])
    with pytest.raises(FileNotFoundError, match="run the phase before first"):
        train(replace(phase, continue_from=str(tmp_path / "missing.safetensors")), tmp_path / "x",
              text_encoder_cfg=enc)
    with pytest.raises(ValueError, match="count on from there"):
        train(replace(phase, steps=2), tmp_path / "y", text_encoder_cfg=enc)


def test_colors_in_reading_order_name_the_left_object_first_and_leave_the_images():
    from bench.shapes import reading_order
    from bench.train import batch_scenes

    mix = {"Colors": 0.6, "Counting": 0.2, "Positional": 0.2}
    plain, ordered = batch_scenes(0, 9, 64, mix, 0.0), batch_scenes(0, 9, 64, mix, 0.0, None, True)
    swapped = 0
    for p, o in zip(plain, ordered):
        assert sorted(p.objects, key=lambda x: x.cx) == sorted(o.objects, key=lambda x: x.cx)   # same image
        if p.category == "Colors" and len(p.objects) == 2:
            assert o.objects[0].cx <= o.objects[1].cx
            assert o.caption.split(" and ")[0].endswith(f"{o.objects[0].color} {o.objects[0].shape}")
            swapped += p.caption != o.caption
        else:
            assert o == p and reading_order(p) is p
    assert swapped > 0   # about half of the two-object Colors scenes were named right to left


def test_twin_exchange_is_colors_or_shapes():
    from bench.train import Recipe, with_twins, batch_scenes

    with pytest.raises(ValueError, match="twin_exchange"):
        Recipe(binding_twins=True, twin_exchange="sizes")
    scenes, source = with_twins(batch_scenes(0, 3, 16, {"Colors": 1.0}, 0.0), 3, "shapes")
    for j in [j for j in range(8, 16) if source[j] != j]:
        a, b = scenes[j - 8].objects, scenes[j].objects
        assert [o.color for o in a] == [o.color for o in b] and [o.shape for o in a] == [o.shape for o in b][::-1]


def test_count_twins_pair_counting_scenes_with_one_object_fewer():
    from bench.shapes import count_twin
    from bench.shapes.detect import score
    from bench.shapes.render import render
    from bench.train import Recipe, batch_scenes, with_twins

    with pytest.raises(ValueError, match="count_twins"):
        Recipe(count_twins=True)
    scenes = batch_scenes(0, 5, 32, {"Counting": 1.0})
    plain, _ = with_twins(scenes, 5, "shapes")
    assert plain == scenes   # without count_twins a Counting row has no twin
    twinned, source = with_twins(scenes, 5, "shapes", count_twins=True)
    paired = [j for j in range(16, 32) if source[j] != j]
    assert len(paired) == sum(len(s.objects) >= 2 for s in scenes[:16]) > 0
    for j in paired:
        a, b = twinned[j - 16], twinned[j]
        assert b.count == a.count - 1 and b.objects == a.objects[:-1]
        assert b.caption != a.caption and b.caption.split()[1] == a.caption.split()[1]   # "three red ..."
        image = np.asarray(render(b, 64))   # the twin's image is true to its caption, not to its source's
        assert score(image, b)["correct"] and not score(image, a)["correct"]
    assert count_twin(scenes[0]) is None or scenes[0].count >= 2
    assert all(count_twin(s) is None for s in batch_scenes(0, 5, 8, {"Colors": 1.0}))


def test_drop_twins_pair_every_other_two_object_colors_scene_with_its_first_object_alone():
    from bench.shapes import drop_twin
    from bench.shapes.detect import score
    from bench.shapes.render import render
    from bench.train import Recipe, batch_scenes, with_twins

    with pytest.raises(ValueError, match="drop_twins"):
        Recipe(drop_twins=True)
    scenes = batch_scenes(0, 4, 32, {"Colors": 1.0}, 0.0)
    swapped, _ = with_twins(scenes, 4, "shapes")
    twinned, source = with_twins(scenes, 4, "shapes", drop_twins=True)
    dropped = [j for j in range(16, 32) if source[j] != j and len(twinned[j].objects) == 1]
    expected = [j for j in range(16, 32) if (j - 16 + 4) % 2 == 1 and len(scenes[j - 16].objects) == 2]
    assert dropped == expected and dropped                            # every odd (row + step) two-object row
    for j in range(16, 32):
        if j not in dropped:
            assert twinned[j] == swapped[j]                             # the other rows keep their swapped twins
    for j in dropped:
        a, b = twinned[j - 16], twinned[j]
        assert b.objects == a.objects[:1] and " and " in a.caption and " and " not in b.caption
        image = np.asarray(render(b, 64))
        assert score(image, b)["correct"] and not score(image, a)["correct"]
    assert all(drop_twin(s) is None for s in batch_scenes(0, 5, 8, {"Counting": 1.0}))
    assert with_twins(scenes, 4, "shapes", drop_twins=False)[0] == swapped  # off: the twins as before


def test_count_gap_sets_counted_objects_apart_and_the_default_keeps_the_data():
    """recipe.count_gap: the clear gap between a Counting scene's objects' boxes; the default (0.06)
    draws the same scenes as before the option existed; other categories keep their places."""
    from bench.train import batch_scenes

    def min_gap(scene) -> float:
        o = scene.objects
        return min(max(abs(a.cx - b.cx), abs(a.cy - b.cy)) - (a.size + b.size) / 2
                   for i, a in enumerate(o) for b in o[i + 1:])

    mix = {"Counting": 1.0}
    plain, wide = batch_scenes(0, 3, 64, mix), batch_scenes(0, 3, 64, mix, count_gap=0.12)
    assert batch_scenes(0, 3, 64, mix, count_gap=0.06) == plain
    several = [s for s in wide if len(s.objects) > 1]
    assert len(several) > 30 and all(min_gap(s) > 0.12 for s in several)
    assert min(min_gap(s) for s in plain if len(s.objects) > 1) < 0.12
    others = {"Colors": 0.5, "Positional": 0.5}
    assert batch_scenes(0, 3, 64, others, count_gap=0.12) == batch_scenes(0, 3, 64, others)


def test_cooldown_lowers_the_rate_over_the_last_steps_and_leaves_the_steps_before(tmp_path):
    from dataclasses import replace

    from bench.training import lr_schedule

    assert [lr_schedule(1.0, s, 2) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_schedule(1.0, s, 0, steps=10, cooldown=4) for s in range(5, 10)] == [1.0, 1.0, 0.75, 0.5, 0.25]
    assert lr_schedule(1.0, 0, 2, steps=10, cooldown=4) == 0.5            # warm-up and cooldown multiply
    # a continued phase (steps counted from the chain's start) cools down over its own last steps
    assert lr_schedule(1.0, 9399, 50, steps=9400, cooldown=600) == 1 / 600
    assert lr_schedule(1.0, 8799, 50, steps=9400, cooldown=600) == 1.0
    with pytest.raises(ValueError, match="cooldown"):
        replace(_recipe(4), cooldown=-1)
    with pytest.raises(ValueError, match="cooldown"):
        replace(_recipe(4), cooldown=2, until_order=0.9)
    torch.set_num_threads(1)
    enc = {"kind": "minilm", "max_length": 16}
    train(_recipe(4), tmp_path / "flat", ckpt_every=2, text_encoder_cfg=enc)
    train(replace(_recipe(4), cooldown=2), tmp_path / "cool", ckpt_every=2, text_encoder_cfg=enc)
    # with cooldown 2 of 4 steps only the last update (step 3, at half the rate) differs: the same losses
    # at every step, other weights at the end
    losses = [[line.split(",")[1] for line in (tmp_path / d / "loss.csv").read_text().splitlines()]
              for d in ("flat", "cool")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    flat, cool = _weights(tmp_path / "flat"), _weights(tmp_path / "cool")
    assert not torch.equal(flat["model.out.weight"], cool["model.out.weight"])


def _continued_as_the_same_function(tmp_path, arch: dict):
    """A 2-step run's (jittered) train state loaded into a base with ``arch``: (the state, the recipe, the
    model, its optimizer), after checking that model and EMA compute what the state's base did."""
    from bench.train import build_models
    from bench.training import load_state, model_weights

    torch.set_num_threads(1)
    enc = {"kind": "minilm", "max_length": 16}
    train(_recipe(2), tmp_path / "a", ckpt_every=2, text_encoder_cfg=enc)
    state = _weights(tmp_path / "a")
    with torch.no_grad():                            # so that the trained weights are not near zero
        state = {k: (v + 0.05 * torch.randn_like(v) if v.is_floating_point() and k.startswith(("model.", "ema."))
                     else v) for k, v in state.items()}
    more = Recipe(stage="base", arch=arch, image_size=16, steps=4, batch_size=4)
    model, ema = build_models(more, 0, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters())
    assert load_state(state, model, opt, ema) == 2
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.8])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    for grown_model, prefix in ((model, "model."), (ema, "ema.")):
        src, _ = build_models(_recipe(2), 0, torch.device("cpu"))
        src.load_state_dict(model_weights(state, prefix))
        with torch.no_grad():
            assert torch.allclose(grown_model(x, t, tokens, mask), src(x, t, tokens, mask), atol=1e-5), prefix
    return state, more, model, opt


def test_a_run_continues_with_attention_at_more_resolutions_as_the_same_function(tmp_path):
    from bench.train import build_models
    from bench.training import load_weights, model_weights

    state, more, model, opt = _continued_as_the_same_function(tmp_path, {**TINY, "attn_resolutions": [16, 8]})
    # the 16 px blocks (two down, one per level up) gained their cross-attention as the last layer
    fresh = build_models(more, 0, torch.device("cpu"))[0]
    assert load_weights(fresh, model_weights(state)) == ["down.0.1", "up.3.1", "up.4.1"]
    names = {id(p): n for n, p in model.named_parameters()}
    with_moments = {names[id(p)] for p in opt.state}
    assert with_moments and all(not n.startswith(("down.0.1.", "up.3.1.", "up.4.1.")) for n in with_moments)
    old = model_weights(state)
    with pytest.raises(RuntimeError, match="outside attention layers"):     # any other missing weight
        load_weights(build_models(more, 0, torch.device("cpu"))[0], {k: v for k, v in old.items() if k != "out.bias"})
    with pytest.raises(RuntimeError, match="unexpected"):
        load_weights(build_models(more, 0, torch.device("cpu"))[0], {**old, "extra.weight": torch.zeros(1)})
    partly = {**old, **{f"down.0.1.{k}": v for k, v in fresh.down[0][1].state_dict().items() if k.startswith("q.")}}
    with pytest.raises(RuntimeError, match="only partly"):
        load_weights(build_models(more, 0, torch.device("cpu"))[0], partly)


def test_a_run_continues_with_late_self_attention_as_the_same_function(tmp_path):
    from bench.train import build_models
    from bench.training import load_weights, model_weights
    from imagen.nn import Attention

    state, more, _, _ = _continued_as_the_same_function(tmp_path, {**TINY, "late_self_attention": [8]})
    fresh = build_models(more, 0, torch.device("cpu"))[0]
    grown = load_weights(fresh, model_weights(state))
    # every 8 px block (one down, the two middle ones, two up) ends with its new self-attention
    assert grown == ["down.2.2", "mid.0.2", "mid.1.2", "up.0.2", "up.1.2"]
    assert all(isinstance(fresh.get_submodule(n), Attention) and not fresh.get_submodule(n).is_cross for n in grown)


def test_init_from_a_base_with_attention_at_fewer_resolutions_grows_it(tmp_path):
    from bench.train import build_models
    from imagen.checkpoint import build_stage, save_stage

    torch.manual_seed(0)
    src = _jittered(build_stage("base", TINY))
    save_stage(src, tmp_path / "ema.safetensors", "base", prediction="v", image_size=16, lowres_size=0)
    more = Recipe(stage="base", arch={**TINY, "attn_resolutions": [16, 8]}, image_size=16,
                  init_from=str(tmp_path / "ema.safetensors"))
    model, _ = build_models(more, 0, torch.device("cpu"))
    src, _ = load_stage(tmp_path / "ema.safetensors")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.8])
    tokens, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        assert torch.allclose(model(x, t, tokens, mask), src(x, t, tokens, mask), atol=1e-5)
