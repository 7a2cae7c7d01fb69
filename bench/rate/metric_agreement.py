"""Do the automatic metrics agree with people?

For every rated pair, each per-image metric of the runs predicts a side: the side whose images
score higher on average (``clip_score`` from ``RUN/image_scores.csv``; ``correct``, the exact
alignment verdict, where the run has ground truth), or a tie when both sides score the same, or
nothing when a side has no value. The raters' majority of a pair and question is the answer most
of its raters gave (left / indifferent / right; no majority on a tie between answers).

Agreement of a metric on a question = among pairs whose majority picks a side and whose metric
predicts a side, the share where they pick the same side, with a Wilson score interval (pairs are
the independent units). The pairs left out are counted beside it.
"""
from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from bench import rundir
from bench.pairs import ImageSource

METRICS: tuple[str, ...] = ("clip_score", "correct")
QUESTIONS: tuple[str, ...] = ("quality", "alignment")
_BOOL = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def wilson(k: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (NaN, NaN when n == 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def read_scores(run: str) -> pd.DataFrame | None:
    """``RUN/image_scores.csv`` by image path, metrics as numbers (``correct``: 1 / 0 / NaN), or None."""
    path = Path(run) / rundir.IMAGE_SCORES
    if not path.is_file():
        return None
    per = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"path": str})
    out = pd.DataFrame({"path": per["path"]})
    for m in METRICS:
        col = per[m] if m in per else pd.Series([np.nan] * len(per))
        out[m] = pd.to_numeric(col.astype(str).str.strip().str.lower().map(_BOOL), errors="coerce") \
            if m == "correct" else pd.to_numeric(col, errors="coerce")
    return out.set_index("path")


def predictions(image_key: list[ImageSource], metric: str) -> dict[str, str]:
    """Per pair: ``left`` | ``right`` | ``tie`` by ``metric`` (pairs with a side lacking values are absent)."""
    scores = {run: read_scores(run) for run in {s.run for s in image_key}}
    sides: dict[tuple[str, str], list[float]] = {}
    for s in image_key:
        table = scores[s.run]
        value = np.nan if table is None or s.path not in table.index else float(table.at[s.path, metric])
        sides.setdefault((s.pair_id, s.side), []).append(value)
    out = {}
    for pid in sorted({p for p, _ in sides}):
        left = [v for v in sides.get((pid, "left"), []) if not np.isnan(v)]
        right = [v for v in sides.get((pid, "right"), []) if not np.isnan(v)]
        if left and right:
            a, b = float(np.mean(left)), float(np.mean(right))
            out[pid] = "tie" if np.isclose(a, b, rtol=0, atol=1e-12) else ("left" if a > b else "right")
    return out


def majorities(df: pd.DataFrame) -> dict[tuple[str, str], str | None]:
    """Per (pair, question): the raters' most frequent answer, None on a tie between answers."""
    out: dict[tuple[str, str], str | None] = {}
    for (pid, q), answers in df.groupby(["pair_id", "question"])["answer"]:
        counts = answers.value_counts()
        top = counts[counts == counts.max()]
        out[(pid, q)] = str(top.index[0]) if len(top) == 1 else None
    return out


def agreement_table(df: pd.DataFrame, image_key: list[ImageSource], ci: float = 0.95) -> pd.DataFrame:
    """One row per (metric, question); ``df`` has pair_id, question, answer (the raters' view)."""
    major = majorities(df)
    rows = []
    for metric in METRICS:
        pred = predictions(image_key, metric)
        if not pred:
            continue
        for q in QUESTIONS:
            rated = [(pid, m) for (pid, qq), m in major.items() if qq == q and pid in pred]
            sided = [(pid, m) for pid, m in rated if m in ("left", "right") and pred[pid] in ("left", "right")]
            agree = sum(pred[pid] == m for pid, m in sided)
            lo, hi = wilson(agree, len(sided), ci)
            rows.append({"metric": metric, "question": q, "n_pairs": len(rated), "n_decisive": len(sided),
                         "agree": agree, "agreement": agree / len(sided) if sided else float("nan"),
                         "agreement_lo": lo, "agreement_hi": hi,
                         "majority_indifferent": sum(m == "indifferent" for _, m in rated),
                         "no_majority": sum(m is None for _, m in rated),
                         "metric_tie": sum(pred[pid] == "tie" and m in ("left", "right") for pid, m in rated)})
    table = pd.DataFrame(rows)
    if not table.empty:
        table["ci_level"], table["interval"] = ci, "Wilson score, over pairs"
    return table
