"""Which model pairs are compared on which prompt when an export holds K models.

``all``: every pair of models on every prompt (K(K-1)/2 comparisons per prompt).
``balanced``: ``per_prompt`` model pairs per prompt, dealt from a seeded cycle over all model pairs,
so every model pair is compared on floor or ceil(P * per_prompt / (K(K-1)/2)) prompts and no prompt
repeats a model pair.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Design = Literal["all", "balanced"]
DESIGNS: tuple[str, ...] = ("all", "balanced")


class DesignError(ValueError):
    """A design that cannot be built from these settings; the message says which setting to change."""


@dataclass(frozen=True)
class Plan:
    """For each prompt (in the order given) the model pairs ``(i, j)``, ``i < j``, compared on it."""

    design: str
    per_prompt: int
    pairs_per_prompt: tuple[tuple[tuple[int, int], ...], ...]

    def counts(self) -> dict[tuple[int, int], int]:
        """How many prompts compare each model pair."""
        c: Counter[tuple[int, int]] = Counter(p for per in self.pairs_per_prompt for p in per)
        return dict(sorted(c.items()))


def model_label(i: int) -> str:
    """A, B, ..., Z, then M27, M28, ...: the blinded name of the i-th run (0-based) in key.csv."""
    return chr(ord("A") + i) if i < 26 else f"M{i + 1}"


def plan(num_prompts: int, num_models: int, design: str = "all", per_prompt: int | None = None,
         rng: random.Random | None = None) -> Plan:
    """The comparison plan; ``rng`` (seeded by the caller) orders the balanced cycle."""
    if num_models < 2:
        raise DesignError(f"{num_models} run(s): need at least two runs to compare")
    if design not in DESIGNS:
        raise DesignError(f"design={design!r}: choose one of {', '.join(DESIGNS)}")
    combos = list(itertools.combinations(range(num_models), 2))
    if design == "all":
        return Plan("all", len(combos), tuple(tuple(combos) for _ in range(num_prompts)))
    m = int(per_prompt or 1)
    if not 1 <= m <= len(combos):
        raise DesignError(f"per_prompt={per_prompt}: between 1 and {len(combos)} model pairs per prompt "
                          f"for {num_models} runs")
    cycle = combos[:]
    (rng or random.Random(0)).shuffle(cycle)
    out = tuple(tuple(sorted(cycle[(t * m + j) % len(cycle)] for j in range(m))) for t in range(num_prompts))
    return Plan("balanced", m, out)
