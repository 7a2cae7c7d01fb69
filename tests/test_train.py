"""Training: a killed run resumes from its checkpoint and continues exactly; outputs load."""
from pathlib import Path

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
