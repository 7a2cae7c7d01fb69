"""shapes-CLIP: tiny random models for shapes, normalisation, loss and save/load; the shipped
weights for held-out retrieval."""
from __future__ import annotations

import math
import random
import zlib

import pytest
import torch
from safetensors.torch import load_file

from bench.shapes import sample_scene
from bench.shapes_clip import ShapesClip, ShapesClipConfig, load_shapes_clip, resize_images, save_shapes_clip
from bench.shapes_clip.model import DEFAULT_WEIGHTS
from bench.shapes_clip.train import TrainConfig, clip_loss, hard_negative, make_batch, multi_positive_nce, train
from imagen.checkpoint import CheckpointError, atomic_save, read_meta

TINY = dict(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1), feature_dim=16, embed_dim=8, text_width=16, text_heads=2)


class FakeTextEncoder:
    """Stand-in for MiniLM: deterministic random token states per text (no model files needed)."""

    id = "fake:text"

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.stack([torch.randn(32, 384, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
                              for t in texts])
        mask = torch.zeros(len(texts), 32, dtype=torch.bool)
        for i, t in enumerate(texts):
            mask[i, : 2 + len(t.split())] = True
        return tokens, mask


def tiny_model(seed: int = 0) -> ShapesClip:
    torch.manual_seed(seed)
    return ShapesClip(ShapesClipConfig(**TINY), text_encoder=FakeTextEncoder()).eval()


def uint8_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_image_features_any_size_normalised(size):
    m = tiny_model()
    f = m.image_features(uint8_images(3, size))
    assert f.shape == (3, m.embed_dim) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(3))
    assert m.fd_features(uint8_images(3, size)).shape == (3, m.feature_dim)


def test_text_features_and_score():
    m = tiny_model()
    t = m.text_features(["a red circle", "two blue squares", "a red circle"])
    assert t.shape == (3, m.embed_dim)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t[0], t[2])
    imgs = uint8_images(2, 64)
    s = m.score(imgs, ["a red circle", "two blue squares"])
    assert s.shape == (2,) and (s.abs() <= 1 + 1e-5).all()
    torch.testing.assert_close(s, (m.image_features(imgs) * t[:2]).sum(-1))
    with pytest.raises(ValueError):
        m.score(imgs, ["a red circle"])
    assert m.name == "shapes-clip-v1"


def test_resize_images():
    x = uint8_images(2, 64)
    torch.testing.assert_close(resize_images(x), x.float() / 255)          # 64 px: used as is
    flat = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    torch.testing.assert_close(resize_images(flat), torch.full((1, 3, 64, 64), 200 / 255))
    with pytest.raises(TypeError):
        resize_images(x.float())
    with pytest.raises(ValueError):
        resize_images(x[:, :2])


def test_save_load_round_trip(tmp_path):
    m = tiny_model(seed=1)
    with torch.no_grad():   # non-trivial BatchNorm statistics must travel too
        m.image_tower.convs[1].running_mean.uniform_(-0.5, 0.5)
    path = tmp_path / "clip.safetensors"
    save_shapes_clip(m, path, train_steps=7)
    stored = load_file(str(path))
    assert all(v.dtype == torch.float16 for k, v in stored.items() if v.is_floating_point())
    meta = read_meta(path)
    assert meta["kind"] == "shapes_clip" and meta["train_steps"] == 7 and meta["arch"]["embed_dim"] == 8
    m2 = load_shapes_clip(path)
    m2._text_encoder = FakeTextEncoder()
    assert m2.cfg == m.cfg
    imgs = uint8_images(4, 48)
    torch.testing.assert_close(m2.image_features(imgs), m.image_features(imgs), atol=5e-3, rtol=0)
    torch.testing.assert_close(m2.text_features(["a red circle"]), m.text_features(["a red circle"]), atol=5e-3, rtol=0)


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_shapes_clip(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    atomic_save({"w": torch.zeros(2)}, other, {"kind": "base", "arch": {}})
    with pytest.raises(CheckpointError, match="not a shapes-CLIP"):
        load_shapes_clip(other)


def test_multi_positive_nce_matches_cross_entropy_without_duplicates():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 2, 6, 1])
    pos = torch.zeros(5, 7, dtype=torch.bool)
    pos[torch.arange(5), target] = True
    torch.testing.assert_close(multi_positive_nce(logits, pos), torch.nn.functional.cross_entropy(logits, target))


def test_clip_loss_treats_identical_captions_as_positives():
    # three images, two of them share a caption; embeddings match their caption exactly
    e = torch.eye(4)[:2]
    img = torch.stack([e[0], e[0], e[1]])
    caps = ["a red circle", "a red circle", "two blue squares"]
    loss = clip_loss(img, img, torch.tensor(100.0), caps, caps)
    assert loss.item() < 1e-3       # naive InfoNCE would pay log(2) on each duplicate
    # with a hard negative column that equals none of the captions nothing changes
    txt = torch.cat([img, torch.eye(4)[3:4]])
    assert clip_loss(img, txt, torch.tensor(100.0), caps, caps + ["four green triangles"]).item() < 1e-3
    wrong = clip_loss(img, img.flip(0), torch.tensor(100.0), caps, caps)
    assert wrong.item() > 10


def test_hard_negatives_differ_from_the_caption():
    rng = random.Random(0)
    for _ in range(300):
        s = sample_scene(rng)
        neg = hard_negative(s, rng)
        assert neg and neg != s.caption


def test_batches_are_keyed_by_step():
    cfg = TrainConfig(batch_size=6)
    s1, x1, n1 = make_batch(cfg, 5)
    s2, x2, n2 = make_batch(cfg, 5)
    s3, x3, _ = make_batch(cfg, 6)
    assert [s.caption for s in s1] == [s.caption for s in s2] and n1 == n2
    torch.testing.assert_close(x1, x2)
    assert x1.shape == (6, 3, 64, 64) and x1.min() >= -1 and x1.max() <= 1
    assert not torch.equal(x1, x3)


def test_train_resumes_and_writes_weights(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=8, warmup=1, arch=dict(TINY))
    out, state = tmp_path / "w.safetensors", tmp_path / "state"
    train(cfg, out, state, threads=1, ckpt_every=1, eval_n=10, text_encoder=FakeTextEncoder())
    meta = read_meta(out)
    assert meta["train_steps"] == 2 and "heldout" in meta and 0 <= meta["heldout"]["64px"]["t2i_top1"] <= 1
    cfg.steps = 3
    train(cfg, out, state, threads=1, ckpt_every=1, eval_n=10, text_encoder=FakeTextEncoder())
    rows = (state / "loss.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2]
    assert read_meta(out)["train_steps"] == 3
    assert all(math.isfinite(float(r.split(",")[1])) for r in rows)


def test_shipped_weights_retrieval():
    """Held-out text-to-image retrieval among 100 real renders; a hit is the top image having
    the query's caption (captions repeat among random scenes)."""
    from bench.shapes_clip.evaluate import retrieval_top1

    assert DEFAULT_WEIGHTS.stat().st_size < 3_000_000
    model = load_shapes_clip()
    assert model.name == "shapes-clip-v1" and model.feature_dim == 256
    r = retrieval_top1(model, n=100, seed=0, size=64)
    assert r["n"] == 100 and r["t2i_top1"] >= 0.8, r


def test_gaussian_blur_kernel():
    from bench.shapes_clip.train import gaussian_blur

    flat = torch.full((1, 3, 16, 16), 0.4)
    torch.testing.assert_close(gaussian_blur(flat, 0.8), flat)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1.0
    b = gaussian_blur(dot, 1.0)[0, 0]
    assert b.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(b, b.T)
    torch.testing.assert_close(b, b.flip(0))
    # the 1-d profile is exp(-t^2 / 2 sigma^2), normalised over 5 taps
    k = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2)
    torch.testing.assert_close(b[4, 2:7], k / k.sum() * (k / k.sum())[2])


def test_config_composes_into_train_config():
    import dataclasses
    from conftest import resolved

    d = resolved("shapes_clip", ["steps=5", "threads=1"])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields <= set(d), fields - set(d)
    tc = TrainConfig(**{k: v for k, v in d.items() if k in fields})
    assert tc.steps == 5 and d["threads"] == 1 and d["out"].endswith("shapes_clip.safetensors")


def test_train_resumes_a_state_written_before_the_shared_core(tmp_path):
    """States of the old shapes-CLIP trainer kept Adam state as ``opt.<index>.<key>``; they still resume."""
    from bench.shapes_clip.train import build
    from bench.training import STATE_FILE

    cfg = TrainConfig(steps=2, batch_size=8, warmup=1, arch=dict(TINY))
    new, old = tmp_path / "new", tmp_path / "old"
    train(cfg, new / "w.safetensors", new, threads=1, ckpt_every=1, max_minutes=0, eval_n=4,
          text_encoder=FakeTextEncoder())
    state, meta = load_file(str(new / STATE_FILE)), read_meta(new / STATE_FILE)
    model, opt = build(cfg, ShapesClipConfig(**TINY), FakeTextEncoder(), torch.device("cpu"))
    index = {n: i for i, n in enumerate(n for g in opt.param_groups for p in g["params"]
                                         for n, q in model.named_parameters() if q is p)}
    legacy = {k: v for k, v in state.items() if not k.startswith("adam.")}
    for k, v in state.items():
        if k.startswith("adam."):
            _, key, name = k.split(".", 2)
            legacy[f"opt.{index[name]}.{key}"] = v
    atomic_save(legacy, old / STATE_FILE, meta)
    for d in (new, old):
        train(cfg, d / "w.safetensors", d, threads=1, ckpt_every=1, eval_n=4, text_encoder=FakeTextEncoder())
    a, b = load_file(str(new / STATE_FILE)), load_file(str(old / STATE_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
