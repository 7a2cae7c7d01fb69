"""Train shapes-CLIP contrastively on shapes scenes rendered on the fly.

    python -m bench.shapes_clip.train                    # config: conf/shapes_clip.yaml
    python -m bench.shapes_clip.train steps=500 threads=2

Loss: symmetric InfoNCE (CLIP) over a batch of (image, caption) pairs. Captions repeat within
a batch ("one red circle"), so every pair with an identical caption counts as a positive
(multi-positive InfoNCE: -log of the positives' share of the softmax mass). Optionally each
image also sees one hard-negative caption (relation flipped, count / colour / shape changed)
as an extra text column.

Images are rendered at 64 px, a fraction at 32 px (the base stage's resolution) and brought to
64 px by the model's own resize; then augmented (Gaussian blur, colour jitter, Gaussian noise)
so the model does not rely on pixel-exact renders. Each step's scenes and augmentation are
keyed by (seed, step): a killed run resumes from ``state_dir/train_state.safetensors`` and
continues exactly (resume, loss log, checkpoint format, warm-up and saving: ``bench.training``).
The shipped weights (float16) are written every ``ckpt_every`` steps.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.shapes import COLORS, SHAPES, Scene, render_batch, sample_scene, scene_caption
from bench.shapes.scene import OPPOSITE
from bench.training import Loop, Trainer, lr_schedule, setup
from imagen.text_encoder import TextEncoder, TextEncoderConfig

from .evaluate import retrieval_top1
from .model import ShapesClip, ShapesClipConfig, resize_images, save_shapes_clip

log = logging.getLogger("bench.shapes_clip.train")
TRAIN_STREAM = "shapes-clip-train"


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_frac: float = 0.05      # cosine decay to lr * min_lr_frac
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    lowres_frac: float = 0.5       # share of each batch rendered at 32 px
    blur_prob: float = 0.3
    blur_sigma_max: float = 1.0    # pixels at 64 px
    noise_max: float = 0.06        # Gaussian noise std, max, on [0, 1] pixels
    jitter: float = 0.04           # per-channel offset std and brightness +-range
    hard_negatives: bool = True
    arch: dict = field(default_factory=dict)


# -- data ----------------------------------------------------------------------------------
def train_scenes(seed: int, step: int, batch: int) -> list:
    rng = random.Random(f"{TRAIN_STREAM}:{seed}:{step}")
    return [sample_scene(rng) for _ in range(batch)]


def hard_negative(scene, rng: random.Random) -> str:
    """A caption inside the shapes grammar that does not describe ``scene``."""
    objs = list(scene.objects)
    for _ in range(100):
        relation, count, new = scene.relation, scene.count, list(objs)
        move = rng.choice(["relation", "attr"] if scene.category == "Positional" else
                          ["count", "attr"] if scene.category == "Counting" else ["attr"])
        if move == "relation":
            relation = OPPOSITE[relation] if rng.random() < 0.6 else rng.choice([r for r in OPPOSITE if r != relation])
        elif move == "count":
            count = rng.choice([c for c in (1, 2, 3, 4) if c != scene.count])
            new = [objs[0]] * count
        else:
            i = rng.randrange(len(objs) if scene.category != "Counting" else 1)
            o = objs[i]
            if rng.random() < 0.5:
                o = dataclasses.replace(o, color=rng.choice([c for c in COLORS if c != o.color]))
            else:
                o = dataclasses.replace(o, shape=rng.choice([s for s in SHAPES if s != o.shape]))
            new[i] = o
            if scene.category == "Counting":
                new = [o] * len(objs)
        kinds = [(o.shape, o.color) for o in new]
        if scene.category == "Positional" and kinds[0] == kinds[1]:
            continue
        if scene.category == "Colors" and len({c for _, c in kinds}) < len(kinds):
            continue
        cap = scene_caption(Scene(scene.category, tuple(new), relation, count))
        if cap != scene.caption:
            return cap
    raise RuntimeError(f"no hard negative found for {scene.caption!r}")


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int = 2) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with reflect padding."""
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = (k / k.sum()).repeat(x.shape[1], 1, 1, 1)                     # (C, 1, 1, K)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.transpose(2, 3), groups=x.shape[1])


def augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """x: float (N, 3, 64, 64) in [0, 1]; blur, colour jitter and noise, each random per image."""
    n = x.shape[0]
    blur = torch.rand(n, generator=g) < cfg.blur_prob
    if blur.any():
        sigma = 0.3 + (cfg.blur_sigma_max - 0.3) * torch.rand(1, generator=g).item()
        x = x.clone()
        x[blur] = gaussian_blur(x[blur], sigma)
    scale = 1 + cfg.jitter * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)
    offset = cfg.jitter * torch.randn(n, 3, 1, 1, generator=g)
    std = cfg.noise_max * torch.rand(n, 1, 1, 1, generator=g)
    x = x * scale + offset + std * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def make_batch(cfg: TrainConfig, step: int) -> tuple[list, torch.Tensor, list[str]]:
    """Scenes, augmented images in [-1, 1] (N, 3, 64, 64) and hard-negative captions for one step."""
    scenes = train_scenes(cfg.seed, step, cfg.batch_size)
    k = int(round(cfg.lowres_frac * len(scenes)))
    parts = []
    for group, size in ((scenes[:k], 32), (scenes[k:], 64)):
        if group:
            parts.append(resize_images(torch.from_numpy(render_batch(group, size)).permute(0, 3, 1, 2)))
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    x = augment(torch.cat(parts), cfg, g) * 2 - 1
    rng = random.Random(f"{TRAIN_STREAM}-negatives:{cfg.seed}:{step}")
    negatives = [hard_negative(s, rng) for s in scenes] if cfg.hard_negatives else []
    return scenes, x, negatives


# -- loss ----------------------------------------------------------------------------------
def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(sum of softmax mass on the row's positives)."""
    masked = logits.masked_fill(~positive, float("-inf"))
    return (torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)).mean()


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, captions: list[str],
              text_captions: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE; ``txt`` rows are the batch captions first, then any extra negatives.
    A pair is positive when its captions are identical."""
    n = img.shape[0]
    logits = scale * img @ txt.T                                    # (images, texts)
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions + text_captions))}
    a = torch.tensor([ids[c] for c in captions])
    b = torch.tensor([ids[c] for c in text_captions])
    positive = (a[:, None] == b[None, :]).to(logits.device)
    i2t = multi_positive_nce(logits, positive)
    t2i = multi_positive_nce(logits[:, :n].T, positive[:, :n].T)
    return (i2t + t2i) / 2


# -- loop ----------------------------------------------------------------------------------
def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up (``bench.training.lr_schedule``), then cosine decay to ``lr * min_lr_frac``."""
    if step < cfg.warmup:
        return lr_schedule(cfg.lr, step, cfg.warmup)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def build(cfg: TrainConfig, arch: ShapesClipConfig, enc: Any,
          dev: torch.device) -> tuple[ShapesClip, torch.optim.Optimizer]:
    """The model (random weights from the global seed) and its AdamW (weight decay on matrices only)."""
    model = ShapesClip(arch, text_encoder=enc).to(dev)
    model.image_tower.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    return model, opt


def batch_loss(model: ShapesClip, enc: Any, cfg: TrainConfig, step: int, dev: torch.device) -> torch.Tensor:
    """The contrastive loss of one step's batch (keyed by seed and step)."""
    scenes, x, negatives = make_batch(cfg, step)
    captions = [s.caption for s in scenes]
    texts = captions + negatives
    tokens, mask = enc.encode(texts)
    img = model.image_tower(x.to(dev, memory_format=torch.channels_last))
    txt = model.encode_tokens(tokens, mask)
    return clip_loss(img, txt, model.logit_scale.exp().clamp(max=100.0), captions, texts)


def train(cfg: TrainConfig, out: str | Path, state_dir: str | Path, threads: int = 1, device: str = "cpu",
          ckpt_every: int = 100, max_minutes: float | None = None, eval_n: int = 100,
          text_encoder: Any | None = None) -> Path:
    """Train (or resume, from ``state_dir``) and write float16 weights to ``out``; returns ``out``.

    ``text_encoder`` (anything with ``encode(texts) -> (tokens, mask)`` and ``id``) defaults to
    the frozen MiniLM of the architecture config."""
    dev = setup(device, threads)
    torch.manual_seed(cfg.seed)   # initial weights
    arch = ShapesClipConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.arch.items()})
    enc = text_encoder or TextEncoder(TextEncoderConfig(kind=arch.text_encoder, max_length=arch.max_length))
    model, opt = build(cfg, arch, enc, dev)
    out, state_dir = Path(out), Path(state_dir)
    n_params = sum(p.numel() for p in model.parameters())
    meta: dict[str, Any] = {"train": dataclasses.asdict(cfg), "text_encoder": enc.id, "params": n_params}

    def save_weights(step: int, seconds: float, final: bool) -> None:
        info = {**meta, "train_steps": step, "train_seconds": round(seconds, 1), "threads": threads}
        if final:
            model.eval()
            info["heldout"] = {f"{s}px": retrieval_top1(model, eval_n, seed=0, size=s) for s in (64, 32)}
            model.train()
        save_shapes_clip(model, out, **info)
        (state_dir / "train.json").write_text(json.dumps(info, indent=2, default=str))

    model.train()
    core = Trainer(model, opt, state_dir, meta, grad_clip=cfg.grad_clip)
    core.run(Loop(cfg.steps, ckpt_every, max_minutes, desc="train shapes-clip"),
             loss_at=lambda step: batch_loss(model, enc, cfg, step, dev), lr_at=lambda step: lr_at(cfg, step),
             on_save=save_weights, postfix=lambda: {"scale": f"{model.logit_scale.exp().item():.1f}"})
    return out


def main() -> None:
    import hydra  # command line only: hydra and omegaconf are slow to import
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path="../../conf", config_name="shapes_clip")
    def _main(c: DictConfig) -> None:
        keys = {f.name for f in dataclasses.fields(TrainConfig)}
        tc = TrainConfig(**{k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k in keys})
        path = train(tc, c.out, c.state_dir, threads=c.threads, device=c.device, ckpt_every=c.ckpt_every,
                     max_minutes=c.max_minutes, eval_n=c.eval_n)
        print(f"shapes-CLIP weights: {path}")

    _main()


if __name__ == "__main__":
    main()
