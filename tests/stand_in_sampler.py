"""A plain Python sampler for ``model=python model.target=stand_in_sampler:sample`` (tests/ is on sys.path):
each image depends only on its prompt, its seed and the guidance weight, as the documented contract asks."""
from __future__ import annotations

import zlib

import numpy as np


def sample(prompts: list[str], seeds: list[int], guidance_weight: float, steps: int, resolution: int,
           contrast: float = 1.0) -> np.ndarray:
    out = []
    for prompt, seed in zip(prompts, seeds):
        rng = np.random.default_rng([seed, zlib.crc32(prompt.encode()), int(guidance_weight * 100), steps])
        x = 0.5 + contrast * (rng.random((resolution, resolution, 3)) - 0.5) / max(guidance_weight, 1.0)
        out.append((np.clip(x, 0, 1) * 255).round().astype(np.uint8))
    return np.stack(out)


def wrong_size(prompts, seeds, guidance_weight, steps, resolution):
    return np.zeros((len(prompts), resolution + 1, resolution + 1, 3), np.uint8)


def missing_args(prompts, seeds):
    return None
