"""Stand-ins shared by the metrics tests: a tiny shapes-CLIP module, a counting extractor and a fake
run directory. Tests import it as ``import metrics_support`` (pytest puts tests/ on sys.path: it is not a package)."""
from __future__ import annotations

import hashlib
import random
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image


class StubShapesClip:
    """Same interface as bench.shapes_clip.model.ShapesClip, tiny and deterministic."""

    name = "stub-shapes-clip"
    feature_dim = 16
    embed_dim = 8

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w_fd = torch.randn(48, 16, generator=g)
        self.w_emb = torch.randn(16, 8, generator=g)
        self.images_seen = 0

    def fd_features(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        x = F.adaptive_avg_pool2d(images.float() / 255.0, 4).flatten(1)
        return torch.tanh(x @ self.w_fd * 3)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fd_features(images) @ self.w_emb, dim=-1)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], dtype=np.uint8).astype(np.float32) - 127.5
                for t in texts]
        return F.normalize(torch.tensor(np.stack(rows)), dim=-1)


def install_stub_shapes_clip(monkeypatch) -> types.ModuleType:
    """Make the metrics' shapes-CLIP module (and ``import bench.shapes_clip.model``) the stand-in (this test only)."""
    module = types.ModuleType("bench.shapes_clip.model")
    module.RESIZE = "stub: adaptive average pool to 4x4"
    module.loaded = []

    def load_shapes_clip(path=None, device="cpu"):
        model = StubShapesClip()
        module.loaded.append(model)
        return model

    module.load_shapes_clip = load_shapes_clip
    monkeypatch.setitem(sys.modules, "bench.shapes_clip.model", module)
    monkeypatch.setattr("bench.metrics.extractors.shapes_clip_model", module)
    return module


class CountingExtractor:
    """Per-channel mean and std of the pixels (6-d); counts the images it has seen."""

    name = "counting-test-extractor"
    resize = "none"
    dim = 6

    def __init__(self) -> None:
        self.images_seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        x = images.float().flatten(2) / 255.0
        return torch.cat([x.mean(-1), x.std(-1)], dim=1)


def make_run(run_dir: Path, weights=(1.0, 3.0), size: int = 48, per_category: int = 3,
             shapes: bool = True) -> pd.DataFrame:
    """A fake run directory: at w = weights[0] each image is its own scene rendered exactly (alignment 1);
    at the other weights each image renders another scene of the same category (mostly misaligned).
    ``shapes=False`` writes DrawBench-like prompts without ground truth."""
    from bench.shapes import render, sample_scene

    rng = random.Random("metrics-test-run")
    cats = ["Colors", "Counting", "Positional"]
    scenes = [sample_scene(rng, c) for c in cats for _ in range(per_category)]
    decoys = [sample_scene(rng, s.category) for s in scenes]
    rows = []
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    for w in weights:
        (run_dir / "images" / f"w{w:g}").mkdir(exist_ok=True)
        for i, (scene, decoy) in enumerate(zip(scenes, decoys)):
            rel = f"images/w{w:g}/p{i:04d}_s0.png"
            render(scene if w == weights[0] else decoy, size).save(run_dir / rel)
            rows.append({"path": rel, "prompt_id": f"p{i:04d}",
                         "prompt": scene.caption if shapes else f"a photo of thing {i}",
                         "category": scene.category if shapes else ["Rare Words", "Text"][i % 2],
                         "seed": i, "guidance_weight": w, "sample_index": 0, "image_index": i,
                         "truth": scene.to_json() if shapes else "", "width": size, "height": size})
    man = pd.DataFrame(rows)
    man.to_csv(run_dir / "manifest.csv", index=False)
    return man


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
