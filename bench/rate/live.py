"""The admin page's numbers, from the database as it stands: progress per rater (with attention
check consistency) and per category, inter-rater agreement so far, the current preference with
bootstrap intervals (two models: shares of A / indifferent / B; more: Bradley-Terry strengths),
and the pairs raters disagree on most. Statistics are ``bench.ratings``'s, on the latest answers."""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import pandas as pd

from bench.rate import ranking
from bench.rate.campaign import Campaign, Seat
from bench.rate.checks import consistency
from bench.rate.store import StoredAnswer, now_iso
from bench.ratings import (ANSWERS, QUESTIONS, Rating, agreement_counts, fleiss_kappa, krippendorff_alpha_nominal,
                           model_labels, percent_agreement, preference_table, unblind)

_DISPUTED = 10


def _num(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(v, (int, str, bool)) or v is None:
        return v
    f = float(v)
    return None if math.isnan(f) or math.isinf(f) else f


def _records(table: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    return [{c: _num(r[c]) for c in columns} for _, r in table.iterrows()]


def raters_progress(seats: list[Seat], answers: list[StoredAnswer]) -> list[dict[str, Any]]:
    checks = consistency(answers)
    mine: dict[str, list[StoredAnswer]] = {}
    for a in answers:
        mine.setdefault(a.rater_id, []).append(a)
    rows = []
    for s in seats:
        given = mine.get(s.rater.rater_id, [])
        per_item = Counter(a.item_id for a in given)
        c = checks.get(s.rater.rater_id)
        rows.append({"rater_id": s.rater.rater_id, "round": s.rater.round, "items": len(s.order),
                     "checks": sum(i.swapped for i in s.order), "answered": len(given),
                     "questions": 2 * len(s.order), "complete_items": sum(n == len(QUESTIONS) for n in per_item.values()),
                     "last_answer": max((a.received_at for a in given), default=None),
                     "checks_compared": c.checks if c else 0, "checks_consistent": c.consistent if c else 0,
                     "consistency": _num(c.share) if c and c.share is not None else None})
    return rows


def categories_progress(c: Campaign, seats: list[Seat], regular: list[StoredAnswer]) -> list[dict[str, Any]]:
    target: Counter[str] = Counter()
    for s in seats:
        for it in s.order:
            if not it.swapped:
                target[c.pairs[it.pair_id].category] += len(QUESTIONS)
    done = Counter(c.pairs[a.pair_id].category for a in regular)
    pairs = Counter(p.category for p in c.pairs.values())
    return [{"category": cat, "pairs": pairs[cat], "answered": done[cat], "target": target[cat]}
            for cat in sorted(pairs)]


def _frame(regular: list[StoredAnswer]) -> pd.DataFrame:
    return pd.DataFrame([(a.rater_id, a.pair_id, a.question, a.answer) for a in regular],
                        columns=["rater_id", "pair_id", "question", "answer"])


def agreement(regular: list[StoredAnswer]) -> list[dict[str, Any]]:
    df = _frame(regular)
    rows = []
    for q in QUESTIONS:
        counts = agreement_counts(df[df["question"] == q])
        multi = len(counts) > 0
        rows.append({"question": q, "pairs_multi_rated": len(counts),
                     "percent_agreement": _num(percent_agreement(counts)) if multi else None,
                     "fleiss_kappa": _num(fleiss_kappa(counts)) if multi else None,
                     "krippendorff_alpha": _num(krippendorff_alpha_nominal(counts)) if multi else None})
    return rows


def preference(c: Campaign, regular: list[StoredAnswer], n_boot: int, ci: float) -> dict[str, Any] | None:
    if not regular:
        return None
    ratings = [Rating(a.rater_id, a.pair_id, a.question, a.answer, a.received_at, "db") for a in regular]
    df = unblind(ratings, c.key, {p: x.category for p, x in c.pairs.items()},
                 {p: x.prompt_id for p, x in c.pairs.items()})
    labels = model_labels(c.key)
    models = [{"label": m, "run": run} for m, run in labels.items()]
    if len(labels) <= 2:
        table = preference_table(df, n_boot=n_boot, ci=ci)
        cols = ["question", "category", "n_ratings", "n_pairs", "pref_a", "pref_a_lo", "pref_a_hi", "indifferent",
                "indifferent_lo", "indifferent_hi", "pref_b", "pref_b_lo", "pref_b_hi"]
        return {"kind": "shares", "ci": ci, "models": models, "rows": _records(table, cols)}
    table = ranking.strengths_table(df, list(labels), labels, n_boot=n_boot, ci=ci)
    cols = ["question", "rank", "model", "run", "strength", "strength_lo", "strength_hi", "n_ratings"]
    return {"kind": "bradley_terry", "ci": ci, "models": models,
            "rows": _records(table.sort_values(["question", "rank"]), cols)}


def disputed(c: Campaign, regular: list[StoredAnswer]) -> list[dict[str, Any]]:
    """The pairs (and questions) rated at least twice with the least agreement among raters."""
    by: dict[tuple[str, str], Counter[str]] = {}
    for a in regular:
        by.setdefault((a.pair_id, a.question), Counter())[a.answer] += 1
    rows = []
    for (pid, q), n in by.items():
        total = sum(n.values())
        if total >= 2:
            agree = (sum(v * v for v in n.values()) - total) / (total * (total - 1))
            p = c.pairs[pid]
            rows.append({"pair_id": pid, "question": q, "prompt": p.prompt, "category": p.category,
                         "agreement": agree, **{ans: n[ans] for ans in ANSWERS}})
    rows.sort(key=lambda r: (r["agreement"], r["pair_id"], r["question"]))
    return rows[:_DISPUTED]


def summary(c: Campaign, *, n_boot: int = 500, ci: float = 0.95) -> dict[str, Any]:
    seats = c.seats()
    answers = c.store.answers()
    regular = [a for a in answers if not a.swapped and a.pair_id in c.pairs]
    return {"export_id": c.export_id, "generated_at": now_iso(), "raters": raters_progress(seats, answers),
            "categories": categories_progress(c, seats, regular), "agreement": agreement(regular),
            "preference": preference(c, regular, n_boot, ci), "disputed": disputed(c, regular),
            "answers": len(regular), "checks_answered": len(answers) - len(regular)}


class LiveSummary:
    """:func:`summary`, recomputed at most every ``every_s`` seconds (the bootstrap is not free)."""

    def __init__(self, campaign: Campaign, *, n_boot: int, ci: float, every_s: float) -> None:
        self.campaign, self.n_boot, self.ci, self.every_s = campaign, n_boot, ci, every_s
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.every_s:
                self.campaign.reload()
                self._value = summary(self.campaign, n_boot=self.n_boot, ci=self.ci)
                self._at = time.monotonic()
            return self._value
