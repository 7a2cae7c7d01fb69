"""Which pairs each rater of an invite round sees, in which order, and the attention checks.

- Balanced: the round's raters together see every pair ``ratings_per_pair`` times, never the same
  pair twice (a round of fewer raters than that: every rater sees every pair). Pairs are dealt one
  by one to the least-loaded raters (ties broken at random), category by category, so each rater's
  load differs from any other's by at most one pair and the categories are spread evenly.
- Random order per rater, seeded by the campaign seed and the rater id.
- Attention checks: ``attention_checks`` of the pairs in the first half of a rater's sequence come
  again later (at least ``CHECK_GAP`` items after the first showing where the sequence allows), with
  left and right exchanged; :mod:`bench.rate.checks` scores whether the answers agree.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from bench.rate.store import Item

CHECK_SUFFIX = "/swap"
CHECK_GAP = 3


def check_item_id(pair_id: str) -> str:
    """The item id of the attention check that repeats ``pair_id`` with its sides swapped."""
    return pair_id + CHECK_SUFFIX


def deal(pair_ids: Sequence[str], categories: dict[str, str], n_raters: int, per_pair: int,
         rng: random.Random) -> list[list[str]]:
    """For each of ``n_raters``, the pairs it sees (unordered); see the module docstring."""
    if n_raters < 1:
        raise ValueError(f"n={n_raters}: invite at least one rater")
    if per_pair < 1:
        raise ValueError(f"ratings_per_pair={per_pair}: at least one rater per pair")
    if n_raters <= per_pair:
        return [list(pair_ids) for _ in range(n_raters)]
    by_cat: dict[str, list[str]] = {}
    for p in pair_ids:
        by_cat.setdefault(categories.get(p, ""), []).append(p)
    order: list[str] = []
    for cat in sorted(by_cat):
        group = by_cat[cat][:]
        rng.shuffle(group)
        order += group
    load = [0] * n_raters
    out: list[list[str]] = [[] for _ in range(n_raters)]
    for p in order:
        for r in sorted(range(n_raters), key=lambda i: (load[i], rng.random()))[:per_pair]:
            out[r].append(p)
            load[r] += 1
    return out


def sequence(pairs: Sequence[str], attention_checks: int, rng: random.Random) -> list[Item]:
    """One rater's items: ``pairs`` in a random order, with the attention checks inserted."""
    order = list(pairs)
    rng.shuffle(order)
    n = len(order)
    first_half = list(range(max(1, n // 2))) if n >= 2 else []
    chosen = rng.sample(first_half, min(max(0, attention_checks), len(first_half)))
    inserts = []  # (insert before this index of `order`, original index)
    for i in chosen:
        lo = min(i + 1 + CHECK_GAP, n)
        inserts.append((rng.randint(lo, n), i))
    items: list[tuple[str, str, bool]] = [(p, p, False) for p in order]
    for at, i in sorted(inserts, reverse=True):
        items.insert(at, (check_item_id(order[i]), order[i], True))
    return [Item(pos, item_id, pair_id, swapped) for pos, (item_id, pair_id, swapped) in enumerate(items)]


def plan_round(pair_ids: Sequence[str], categories: dict[str, str], rater_ids: Sequence[str], per_pair: int,
               attention_checks: int, seed: int, round_no: int) -> list[list[Item]]:
    """Every rater's sequence for a new invite round (deterministic for the same arguments)."""
    dealt = deal(pair_ids, categories, len(rater_ids), per_pair, random.Random(f"deal/{seed}/{round_no}"))
    return [sequence(pairs, attention_checks, random.Random(f"order/{seed}/{rid}"))
            for rid, pairs in zip(rater_ids, dealt)]
