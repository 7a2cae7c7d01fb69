"""Attention checks: does a rater answer a pair the same way when it comes again with its sides
swapped? A check answer agrees when, mapped back to the first showing's sides (left <-> right,
indifferent stays), it equals the rater's latest answer to the first showing; each question of
each check is one comparison, counted once both showings are answered."""
from __future__ import annotations

from dataclasses import dataclass

from bench.rate.store import StoredAnswer

SWAPPED = {"left": "right", "right": "left", "indifferent": "indifferent"}


@dataclass(frozen=True)
class Consistency:
    rater_id: str
    checks: int
    consistent: int

    @property
    def share(self) -> float | None:
        return self.consistent / self.checks if self.checks else None


def consistency(answers: list[StoredAnswer]) -> dict[str, Consistency]:
    """Per rater: how many check answers could be compared, and how many agreed."""
    first = {(a.rater_id, a.pair_id, a.question): a.answer for a in answers if not a.swapped}
    counts: dict[str, list[int]] = {}
    for a in answers:
        c = counts.setdefault(a.rater_id, [0, 0])
        original = first.get((a.rater_id, a.pair_id, a.question)) if a.swapped else None
        if original is not None:
            c[0] += 1
            c[1] += SWAPPED[a.answer] == original
    return {r: Consistency(r, n, k) for r, (n, k) in sorted(counts.items())}
