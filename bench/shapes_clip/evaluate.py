"""Held-out retrieval for shapes-CLIP.

Text-to-image retrieval among ``n`` candidates: draw ``n`` random scenes from a seed stream
that training never uses (``shapes-clip-heldout:{seed}``; training draws from
``shapes-clip-train:{seed}:{step}``), render them, and for each scene's caption rank the ``n``
images by cosine similarity. Captions repeat among random scenes (e.g. "one red circle"),
so exact-index retrieval is ambiguous: a **hit** is counted when the top-ranked image's
caption equals the query caption (``t2i_top1``). ``t2i_top1_exact`` (the query's own image
ranked first) and image-to-text ``i2t_top1`` (same caption-equality rule) are reported beside it.

    python -m bench.shapes_clip.evaluate            # shipped weights, 100 candidates, 64 and 32 px
"""
from __future__ import annotations

import argparse
import random

import torch

from bench.shapes import render_batch, sample_scene

from .model import ShapesClip, load_shapes_clip

HELDOUT_STREAM = "shapes-clip-heldout"


def heldout_scenes(n: int, seed: int = 0) -> list:
    rng = random.Random(f"{HELDOUT_STREAM}:{seed}")
    return [sample_scene(rng) for _ in range(n)]


@torch.no_grad()
def retrieval_top1(model: ShapesClip, n: int = 100, seed: int = 0, size: int = 64) -> dict[str, float]:
    """Top-1 retrieval rates among ``n`` held-out real renders at ``size`` px (hit = same caption)."""
    scenes = heldout_scenes(n, seed)
    captions = [s.caption for s in scenes]
    images = torch.from_numpy(render_batch(scenes, size)).permute(0, 3, 1, 2).contiguous()
    sim = model.text_features(captions) @ model.image_features(images).T      # (texts, images)
    same = torch.tensor([[a == b for b in captions] for a in captions])
    best_img = sim.argmax(1)
    best_txt = sim.argmax(0)
    idx = torch.arange(n)
    return {
        "n": n, "size": size, "seed": seed, "unique_captions": len(set(captions)),
        "t2i_top1": same[idx, best_img].float().mean().item(),
        "t2i_top1_exact": (best_img == idx).float().mean().item(),
        "i2t_top1": same[best_txt, idx].float().mean().item(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="safetensors file (default: the shipped weights)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seeds", type=int, default=5, help="number of independent sets of n scenes")
    args = p.parse_args()
    model = load_shapes_clip(args.weights)
    for size in (64, 32, 256):
        rows = [retrieval_top1(model, args.n, seed, size) for seed in range(args.seeds)]
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("t2i_top1", "t2i_top1_exact", "i2t_top1")}
        print(f"{model.name} size={size}px n={args.n} sets={args.seeds}: " + ", ".join(f"{k}={v:.3f}" for k, v in mean.items()))


if __name__ == "__main__":
    main()
