"""The synthetic shapes evaluation set: captions with exact ground truth.

Prompt ``i`` (0-based) is drawn from category ``CATEGORIES[i % 3]`` (Colors, Counting,
Positional: balanced), with one random stream ``random.Random(f"shapes-eval:{seed}")``
consumed in order. So the set is deterministic and prefix-stable: the first ``k`` prompts
of ``shapes_prompts(n, seed)`` are ``shapes_prompts(k, seed)``. The stream's name keeps it
apart from training, which draws scenes from ``random.Random(f"{seed}:{step}")``.
"""
from __future__ import annotations

import random

from bench.shapes.scene import sample_scene

from .records import PromptRecord

CATEGORIES: tuple[str, ...] = ("Colors", "Counting", "Positional")


def shapes_prompts(n: int, seed: int = 0) -> list[PromptRecord]:
    """``n`` shapes prompts ``shapes-0001`` ...: text = the scene's caption, truth = the
    scene's JSON (``Scene.from_json(record.truth)`` restores it)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"shapes prompts: n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"shapes-eval:{seed}")
    out = []
    for i in range(n):
        scene = sample_scene(rng, category=CATEGORIES[i % len(CATEGORIES)])
        out.append(PromptRecord(f"shapes-{i + 1:04d}", scene.caption, scene.category, scene.to_json()))
    return out
