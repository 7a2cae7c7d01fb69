"""Feature extraction into Fréchet states (``feature_extraction_speedup_vs_torchmetrics`` of results.json):
our extractor + ``FrechetStats.update`` vs torchmetrics' ``FrechetInceptionDistance.update`` with the same
shapes-CLIP FD features as its custom feature module."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from bench.metrics.extractors import ShapesClipExtractor
from bench.metrics.frechet import FrechetStats
from bench.shapes import render_batch, sample_scene
from benchmarks.common import median, timed


class FdFeature(torch.nn.Module):
    """The extractor's FD features as a torchmetrics custom feature module (same network, called as is)."""

    def __init__(self, ext: ShapesClipExtractor) -> None:
        super().__init__()
        self.num_features = ext.dim
        self.net = ext.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.fd_features(x)


def shapes_batches(resolution: int, n: int, batch_size: int) -> list[torch.Tensor]:
    """``n`` rendered shapes scenes as uint8 NCHW batches (a fixed seed: the same images every run)."""
    rng = random.Random("bench-features")
    images = torch.from_numpy(render_batch([sample_scene(rng) for _ in range(n)], resolution)).permute(0, 3, 1, 2)
    images = images.contiguous()
    return [images[i:i + batch_size] for i in range(0, n, batch_size)]


def measure_feature_throughput(resolution: int, n: int, batch_size: int, repeats: int) -> dict[str, Any]:
    """Images/s into Fréchet states: our extractor + FrechetStats.update vs torchmetrics'
    FrechetInceptionDistance.update with the same shapes-CLIP fd features as its custom feature module."""
    batches = shapes_batches(resolution, n, batch_size)
    ext = ShapesClipExtractor(None, "cpu", batch_size=batch_size, features="fd")
    ext.model.requires_grad_(False)  # frozen, as any feature extractor (torchmetrics does not freeze custom ones)

    def ours() -> FrechetStats:
        st = FrechetStats(ext.dim)
        for b in batches:
            st.update(ext(b))
        return st

    fid = FrechetInceptionDistance(feature=FdFeature(ext), normalize=False, reset_real_features=True)

    def theirs() -> None:
        fid.reset()
        for b in batches:
            fid.update(b, real=False)

    ours(), theirs()  # warm-up
    ours_s, theirs_s = [], []
    for _ in range(repeats):  # interleaved, so that both see the same machine state
        ours_s += timed(ours, 1, warmup=0)
        theirs_s += timed(theirs, 1, warmup=0)
    st = ours()
    theirs()
    diff = float(np.abs(st.sum / st.n - (fid.fake_features_sum / fid.fake_features_num_samples).numpy()).max())
    return {"speedup": median(theirs_s) / median(ours_s), "images": n, "resolution": resolution,
            "batch_size": batch_size, "extractor": ext.name, "ours_seconds": ours_s, "torchmetrics_seconds": theirs_s,
            "ours_images_per_second": n / median(ours_s), "torchmetrics_images_per_second": n / median(theirs_s),
            "max_abs_diff_of_feature_means": diff,
            "note": ("same module and batches; ours runs it under torch.inference_mode and accumulates float64 "
                     "numpy states, torchmetrics' update calls the module as is and accumulates float64 torch states")}
