"""Analyse DrawBench side-by-side ratings of an export written by ``bench.pairs``.

    python -m bench.ratings pairs=DIR ratings=[FILE,...] [strict=true n_boot=2000 ci=0.95 seed=0]
    python -m bench.ratings pairs=DIR ratings=[sqlite:///DIR/ratings.db]     # a campaign's database
    python -m bench.ratings pairs=DIR ratings=[postgresql://USER@HOST/DB]

Rating files are CSV or JSON as the rating page downloads them (``rater_id, pair_id,
question, answer, timestamp``; answers are what the rater saw: left / indifferent / right).
A database URL reads the latest answers of a ``bench.rate`` campaign directly (attention checks
left out). Sources of several raters are merged; ``DIR/key.csv`` turns left/right into model A/B.

Reported per question (``quality``: which set is of higher quality, i.e. fidelity;
``alignment``: which set better represents the caption), overall (``all``) and per
DrawBench category:

- the share of ratings preferring A, indifferent, preferring B (pooled over raters), with
  percentile-bootstrap confidence intervals that resample *pairs* (all ratings of a drawn
  pair come along), with a fixed seed;
- inter-rater agreement over the pairs that at least two raters answered: percent
  agreement (the share of agreeing rater pairs per pair, averaged), Fleiss' kappa (with
  a varying number of raters per pair) and Krippendorff's alpha (nominal).

An export of K > 2 runs (``bench.pairs runs=[...]``) is reported per pair of models (the table
above, one block per model pair, ``a_run`` / ``b_run`` naming them) and as a whole: Bradley-Terry
strengths with bootstrap intervals over prompts, the ranking and the win-rate matrix
(``ratings_strengths.csv``, ``ratings_winrates.csv``, ``ratings_ranking.png``;
``bench.rate.ranking``).

When the export has ``key_images.csv`` and the runs have ``image_scores.csv``, each automatic
per-image metric (CLIP score, exact alignment ``correct``) predicts a side of every pair, and its
agreement with the raters' majority is reported per question with a Wilson interval
(``ratings_metrics.csv``; ``bench.rate.metric_agreement``).

Rows that name an unknown pair or hold an invalid value are rejected with the file and
row; by default they are reported (and written to ``DIR/ratings_rejected.csv``) and the
valid rows are used; ``strict=true`` makes any rejected row an error. A file that cannot
be read at all is always an error.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import hydra
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig, ListConfig

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bench import rundir
from bench.cli import missing_arguments
from bench.pairs import KeyRow, PairsError, read_image_key, read_key, read_pairs
from bench.rate import metric_agreement, ranking
from bench.rate.engine import DatabaseURLError, is_database_url
from bench.rate.store import Store, StoreError

Question = Literal["quality", "alignment"]
Answer = Literal["left", "indifferent", "right"]
QUESTIONS: tuple[str, ...] = ("quality", "alignment")
ANSWERS: tuple[str, ...] = ("left", "indifferent", "right")
CHOICES: tuple[str, ...] = ("A", "indifferent", "B")
RATING_COLUMNS = ("rater_id", "pair_id", "question", "answer", "timestamp")
_REQUIRED = ("rater_id", "pair_id", "question", "answer")


class RatingsError(ValueError):
    """Ratings that cannot be used; the message names the file and row."""


@dataclass(frozen=True)
class Rating:
    """One answer of one rater; ``source`` is ``FILE, line N`` or ``FILE, ratings[i]``."""

    rater_id: str
    pair_id: str
    question: str
    answer: str
    timestamp: str
    source: str


@dataclass(frozen=True)
class Rejected:
    """A row that was not used, and why."""

    file: str
    row: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What :func:`summarize` computed and wrote."""

    table: pd.DataFrame
    ratings: list[Rating]
    rejected: list[Rejected]
    superseded: int
    summary_csv: Path
    plot: Path | None
    strengths: pd.DataFrame | None = None
    winrates: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    ranking_plot: Path | None = None


# ---------------------------------------------------------------- reading

def _parse_time(text: str) -> float | None:
    dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)  # "Z": Python < 3.11
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _check(rec: dict, known: Collection[str]) -> str | None:
    """Why a rating record is invalid, or None."""
    if not str(rec.get("rater_id") or "").strip():
        return "empty rater_id"
    if rec["pair_id"] not in known:
        return f"unknown pair_id {rec['pair_id']!r} (not in this export's pairs.csv)"
    if rec["question"] not in QUESTIONS:
        return f"question must be one of {'|'.join(QUESTIONS)}, got {rec['question']!r}"
    if rec["answer"] not in ANSWERS:
        return (f"answer must be one of {'|'.join(ANSWERS)} (the rater's view; key.csv maps it to A/B), "
                f"got {rec['answer']!r}")
    if rec["timestamp"]:
        try:
            _parse_time(rec["timestamp"])
        except ValueError:
            return f"timestamp {rec['timestamp']!r} is not ISO 8601"
    return None


def _normalise(raw: dict, default_rater: str = "") -> dict:
    def s(k: str) -> str:
        v = raw.get(k)
        return "" if v is None else str(v).strip()
    rec = {k: s(k) for k in RATING_COLUMNS}
    rec["rater_id"] = rec["rater_id"] or default_rater
    rec["question"], rec["answer"] = rec["question"].lower(), rec["answer"].lower()
    return rec


def read_rating_file(path: str | os.PathLike, known_pairs: Collection[str],
                     export_id: str | None = None) -> tuple[list[Rating], list[Rejected]]:
    """Valid and rejected rows of one CSV or JSON rating file.

    Raises :class:`RatingsError` when the file as a whole cannot be used (unreadable,
    missing columns, not a list of ratings, or ratings of another export).
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise RatingsError(f"{name}: cannot read ({e})") from None
    is_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip()[:1] in "[{")
    records: list[tuple[str, dict]] = []
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RatingsError(f"{name}, line {e.lineno}: not valid JSON ({e.msg})") from None
        default_rater = ""
        if isinstance(data, dict):
            other = data.get("export_id")
            if export_id and other and other != export_id:
                raise RatingsError(f"{name}: ratings of export {other}, but this export is {export_id} "
                                   f"(rated on another rating page?)")
            default_rater = str(data.get("rater_id") or "")
            data = data.get("ratings")
        if not isinstance(data, list):
            raise RatingsError(f"{name}: expected a list of ratings or an object with a 'ratings' list")
        for i, item in enumerate(data):
            where = f"ratings[{i}]"
            if not isinstance(item, dict):
                records.append((where, {"_error": f"expected an object with {', '.join(_REQUIRED)}"}))
                continue
            missing = [c for c in _REQUIRED if c not in item and not (c == "rater_id" and default_rater)]
            records.append((where, {"_error": f"missing {', '.join(missing)}"} if missing
                            else _normalise(item, default_rater)))
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise RatingsError(f"{name}: not a rating CSV (missing column(s) {', '.join(missing)}; "
                               f"expected {', '.join(RATING_COLUMNS)})")
        for raw in reader:
            where = f"line {reader.line_num}"
            if None in raw:  # more cells than header columns
                records.append((where, {"_error": "more cells than columns"}))
            else:
                records.append((where, _normalise(raw)))
    valid, rejected = [], []
    for where, rec in records:
        reason = rec.get("_error") or _check(rec, known_pairs)
        if reason:
            rejected.append(Rejected(name, where, reason))
        else:
            valid.append(Rating(rec["rater_id"], rec["pair_id"], rec["question"], rec["answer"], rec["timestamp"],
                                f"{name}, {where}"))
    return valid, rejected


def read_database(url: str, known_pairs: Collection[str], export_id: str | None = None
                  ) -> tuple[list[Rating], list[Rejected]]:
    """The latest answers stored by a ``bench.rate`` campaign (attention checks left out)."""
    try:
        name = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (sqlalchemy raises ArgumentError and others for a malformed URL)
        raise RatingsError(f"{url!r} is not a database URL (sqlite:///FILE or postgresql://...)") from None
    try:
        store = Store(url, export_id, create=False)
    except (StoreError, DatabaseURLError) as e:
        raise RatingsError(str(e)) from None
    except SQLAlchemyError as e:
        raise RatingsError(f"{name}: cannot read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    try:
        stored = store.answers()
    finally:
        store.close()
    valid, rejected = [], []
    for a in stored:
        if a.swapped:
            continue
        rec = {"rater_id": a.rater_id, "pair_id": a.pair_id, "question": a.question, "answer": a.answer,
               "timestamp": a.received_at}
        where = f"rater {a.rater_id}, item {a.item_id}, {a.question}"
        reason = _check(rec, known_pairs)
        if reason:
            rejected.append(Rejected(name, where, reason))
        else:
            valid.append(Rating(a.rater_id, a.pair_id, a.question, a.answer, a.received_at, f"{name}, {where}"))
    return valid, rejected


def read_ratings(paths: Sequence[str | os.PathLike], known_pairs: Collection[str], export_id: str | None = None,
                 strict: bool = False) -> tuple[list[Rating], list[Rejected]]:
    """Valid and rejected rows of several rating files or campaign databases (URLs);
    ``strict``: any rejected row raises."""
    if not paths:
        raise RatingsError("no rating files given (ratings=[FILE,...])")
    valid: list[Rating] = []
    rejected: list[Rejected] = []
    for p in paths:
        if is_database_url(str(p)):
            v, r = read_database(str(p), known_pairs, export_id)
        else:
            v, r = read_rating_file(p, known_pairs, export_id)
        valid += v
        rejected += r
    if strict and rejected:
        lines = "\n".join(f"  {r.file}, {r.row}: {r.reason}" for r in rejected[:20])
        more = f"\n  ... and {len(rejected) - 20} more" if len(rejected) > 20 else ""
        raise RatingsError(f"{len(rejected)} rating row(s) rejected (strict=true):\n{lines}{more}")
    return valid, rejected


def deduplicate(ratings: list[Rating]) -> tuple[list[Rating], int]:
    """One answer per (rater, pair, question): the latest by timestamp (ties: the later row).

    Returns the kept ratings and how many were superseded (e.g. the same file given twice).
    """
    best: dict[tuple[str, str, str], tuple[float, int, Rating]] = {}
    for i, r in enumerate(ratings):
        t = _parse_time(r.timestamp) if r.timestamp else float("-inf")
        k = (r.rater_id, r.pair_id, r.question)
        if k not in best or (t, i) >= best[k][:2]:
            best[k] = (t, i, r)
    kept = [v[2] for v in sorted(best.values(), key=lambda v: v[1])]
    return kept, len(ratings) - len(kept)


def unblind(ratings: list[Rating], key: dict[str, KeyRow], categories: dict[str, str],
            prompts: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per rating: rater_id, pair_id, category, question, answer (left|indifferent|right)
    and choice (A|indifferent|B: the pair's first or second model) according to ``key``; with
    model_a / model_b, the blinded labels of the pair's two models (A and B in a two-run export),
    and prompt_id (from ``prompts``, by pair)."""
    rows = []
    for r in ratings:
        if r.pair_id not in key:
            raise RatingsError(f"{r.source}: pair {r.pair_id!r} is missing from key.csv")
        k = key[r.pair_id]
        choice = "indifferent" if r.answer == "indifferent" else ("A" if r.answer == k.a_side else "B")
        first, second = k.models()
        rows.append((r.rater_id, r.pair_id, categories.get(r.pair_id, ""), r.question, r.answer, choice, first,
                     second, (prompts or {}).get(r.pair_id, k.prompt_id or r.pair_id)))
    return pd.DataFrame(rows, columns=["rater_id", "pair_id", "category", "question", "answer", "choice", "model_a",
                                       "model_b", "prompt_id"])


# ---------------------------------------------------------------- statistics

def percent_agreement(counts: np.ndarray) -> float:
    """Mean over items of the share of agreeing rater pairs; ``counts`` is (items, categories)
    of how many raters chose each category, every item rated at least twice."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(1)
    return float(np.mean(((c * c).sum(1) - n) / (n * (n - 1))))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa, (P_bar - P_e) / (1 - P_e), allowing a varying number of raters per item
    (P_i as in Fleiss 1971 with n_i raters; p_j pooled over all ratings); NaN if P_e == 1."""
    c = np.asarray(counts, dtype=np.float64)
    p_j = c.sum(0) / c.sum()
    p_e = float((p_j ** 2).sum())
    if np.isclose(p_e, 1.0):
        return float("nan")
    return (percent_agreement(c) - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data, 1 - D_o / D_e from the coincidence matrix
    (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"); items with fewer than
    two ratings are not pairable and are ignored; NaN when D_e == 0."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c.sum(1) >= 2]
    m = c.sum(1)
    o = (c[:, :, None] * c[:, None, :] - np.einsum("uc,ck->uck", c, np.eye(c.shape[1]))) / (m - 1)[:, None, None]
    o = o.sum(0)
    n_c = o.sum(1)
    n = n_c.sum()
    d_e = (n * n - (n_c ** 2).sum()) / (n * (n - 1))
    if d_e <= 0:
        return float("nan")
    d_o = (o.sum() - np.trace(o)) / n
    return float(1.0 - d_o / d_e)


def agreement_counts(df: pd.DataFrame) -> np.ndarray:
    """(pairs, 3) counts of left / indifferent / right over the pairs of ``df`` (one question)
    that at least two raters answered."""
    if df.empty:
        return np.zeros((0, 3), dtype=np.int64)
    tab = pd.crosstab(df["pair_id"], df["answer"]).reindex(columns=list(ANSWERS), fill_value=0)
    tab = tab[tab.sum(axis=1) >= 2]
    return tab.to_numpy(dtype=np.int64)


def bootstrap_shares(counts: np.ndarray, *, n_boot: int = 2000, ci: float = 0.95,
                     seed: int | Sequence[int] = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point shares and percentile-bootstrap bounds of the columns of ``counts`` (pairs, 3),
    resampling pairs with replacement ``n_boot`` times."""
    c = np.asarray(counts, dtype=np.int64)
    point = c.sum(0) / c.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(c), size=(n_boot, len(c)))
    boot = c[idx].sum(1).astype(np.float64)
    shares = boot / boot.sum(1, keepdims=True)
    alpha = (1.0 - ci) / 2
    lo, hi = np.quantile(shares, [alpha, 1.0 - alpha], axis=0)
    return point, lo, hi


def preference_table(df: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (question, category), ``all`` first: counts, shares of A / indifferent / B
    with bootstrap CIs, and agreement among raters. ``df`` comes from :func:`unblind`."""
    rows = []
    for question in QUESTIONS:
        dq = df[df["question"] == question]
        for category in ["all"] + sorted(c for c in dq["category"].unique()):
            d = dq if category == "all" else dq[dq["category"] == category]
            if d.empty:
                continue
            counts = pd.crosstab(d["pair_id"], d["choice"]).reindex(columns=list(CHOICES), fill_value=0)
            crc = zlib.crc32(f"{question}/{category}".encode())
            point, lo, hi = bootstrap_shares(counts.to_numpy(), n_boot=n_boot, ci=ci, seed=[seed, crc])
            row = {"question": question, "category": category, "n_ratings": len(d),
                   "n_pairs": d["pair_id"].nunique(), "n_raters": d["rater_id"].nunique()}
            for name, j in (("pref_a", 0), ("indifferent", 1), ("pref_b", 2)):
                row[name], row[f"{name}_lo"], row[f"{name}_hi"] = float(point[j]), float(lo[j]), float(hi[j])
            agree = agreement_counts(d)
            row["n_pairs_multi_rated"] = len(agree)
            nan = float("nan")
            row["percent_agreement"] = percent_agreement(agree) if len(agree) else nan
            row["fleiss_kappa"] = fleiss_kappa(agree) if len(agree) else nan
            row["krippendorff_alpha"] = krippendorff_alpha_nominal(agree) if len(agree) else nan
            rows.append(row)
    table = pd.DataFrame(rows)
    table["ci_level"] = ci
    table["n_boot"] = n_boot
    table["bootstrap"] = "percentile, resampling pairs"
    return table


# ---------------------------------------------------------------- outputs

def plot_preferences(table: pd.DataFrame, path: str | os.PathLike, a_label: str = "A", b_label: str = "B") -> Path:
    """Grouped bars of A / indifferent / B per question with CI whiskers: overall on the left,
    per category on the right (like the paper's DrawBench figure)."""

    colors = {"pref_a": "#1f6feb", "indifferent": "#9a9a9a", "pref_b": "#f08c00"}
    names = {"pref_a": "prefer A", "indifferent": "indifferent", "pref_b": "prefer B"}
    titles = {"quality": "Quality (fidelity)", "alignment": "Caption alignment"}
    questions = [q for q in QUESTIONS if q in set(table["question"])]
    fig = Figure(figsize=(14, 3.2 * max(1, len(questions)) + 1.0))
    gs = fig.add_gridspec(max(1, len(questions)), 2, width_ratios=[1, 3.5])
    ax0 = fig.add_subplot(gs[:, 0])

    def bars(ax, sub: pd.DataFrame, labels: list[str]) -> None:
        x = np.arange(len(sub))
        for j, col in enumerate(colors):
            v = sub[col].to_numpy()
            err = np.vstack([v - sub[f"{col}_lo"].to_numpy(), sub[f"{col}_hi"].to_numpy() - v])
            ax.bar(x + (j - 1) * 0.27, v, 0.27, yerr=np.clip(err, 0, None), capsize=2, color=colors[col],
                   label=names[col])
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of ratings")
        ax.grid(axis="y", alpha=0.3)

    overall = table[table["category"] == "all"].set_index("question").loc[questions].reset_index()
    bars(ax0, overall, [titles[q] for q in questions])
    ax0.set_title("All DrawBench prompts")
    ax0.legend(loc="upper right", fontsize=8)
    for i, q in enumerate(questions):
        ax = fig.add_subplot(gs[i, 1])
        sub = table[(table["question"] == q) & (table["category"] != "all")]
        bars(ax, sub, [f"{c} ({n})" for c, n in zip(sub["category"], sub["n_pairs"])])
        ax.set_title(f"{titles[q]} by category (pairs)")
    ci = float(table["ci_level"].iloc[0])
    fig.suptitle(f"Side-by-side preference, A = {a_label}, B = {b_label}\n"
                 f"{int(ci * 100)}% percentile-bootstrap CIs over pairs", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    rundir.save_figure(fig, path, dpi=110)
    return path


def format_table(table: pd.DataFrame) -> str:
    """A short text table: shares with CIs and agreement per question and category."""
    def cell(r: pd.Series, col: str) -> str:
        return f"{r[col]:.2f} [{r[col + '_lo']:.2f},{r[col + '_hi']:.2f}]"

    def num(v: float) -> str:
        return "" if pd.isna(v) else f"{v:.2f}"

    head = f"{'question':<10} {'category':<22} {'n':>5}  {'A':<16} {'indifferent':<16} {'B':<16} {'agree':>5} {'kappa':>6}"
    lines = [head, "-" * len(head)]
    for _, r in table.iterrows():
        lines.append(f"{r['question']:<10} {str(r['category'])[:22]:<22} {r['n_ratings']:>5}  {cell(r, 'pref_a'):<16} "
                     f"{cell(r, 'indifferent'):<16} {cell(r, 'pref_b'):<16} {num(r['percent_agreement']):>5} "
                     f"{num(r['fleiss_kappa']):>6}")
    return "\n".join(lines)


def model_labels(key: dict[str, KeyRow]) -> dict[str, str]:
    """Blinded model label (A, B, ...) -> ``RUN_DIR (w=W)``, from the unblinding key."""
    labels: dict[str, str] = {}
    for k in key.values():
        first, second = k.models()
        labels.setdefault(first, k.run_label("A"))
        labels.setdefault(second, k.run_label("B"))
    return dict(sorted(labels.items()))


def pairwise_table(df: pd.DataFrame, labels: dict[str, str], *, n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0) -> pd.DataFrame:
    """:func:`preference_table` with the runs named: one table for two models; with more, one block
    per pair of models that was compared (``model_a`` / ``model_b`` beside ``a_run`` / ``b_run``)."""
    if len(labels) <= 2:
        table = preference_table(df, n_boot=n_boot, ci=ci, seed=seed)
        table["a_run"], table["b_run"] = labels.get("A", "A"), labels.get("B", "B")
        return table
    blocks = []
    for (ma, mb), d in df.groupby(["model_a", "model_b"], sort=True):
        t = preference_table(d, n_boot=n_boot, ci=ci, seed=seed)
        t.insert(0, "model_b", mb)
        t.insert(0, "model_a", ma)
        t["a_run"], t["b_run"] = labels[ma], labels[mb]
        blocks.append(t)
    return pd.concat(blocks, ignore_index=True)


def _write_rejected(out: Path, rejected: list[Rejected]) -> None:
    rejected_csv = out / "ratings_rejected.csv"
    if rejected:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["file", "row", "reason"])
        w.writerows([r.file, r.row, r.reason] for r in rejected)
        rundir.atomic_write_text(buf.getvalue(), rejected_csv)
    elif rejected_csv.exists():
        rejected_csv.unlink()  # from an earlier analysis; now nothing is rejected


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    rundir.atomic_write_text(table.to_csv(index=False, float_format="%.6g"), path)
    return path


def _ranking(out: Path, df: pd.DataFrame, labels: dict[str, str], n_boot: int, ci: float, seed: int,
             plot: bool) -> tuple[pd.DataFrame, pd.DataFrame, Path | None]:
    models = list(labels)
    strengths = ranking.strengths_table(df, models, labels, n_boot=n_boot, ci=ci, seed=seed)
    winrates = ranking.winrate_table(df, models)
    _write_csv(strengths, out / "ratings_strengths.csv")
    _write_csv(winrates, out / "ratings_winrates.csv")
    png = ranking.plot_ranking(strengths, winrates, out / "ratings_ranking.png") if plot else None
    return strengths, winrates, png


def _metrics(out: Path, df: pd.DataFrame, ci: float) -> pd.DataFrame | None:
    try:
        image_key = read_image_key(out)
    except PairsError as e:
        raise RatingsError(str(e)) from None
    if not image_key:
        return None
    table = metric_agreement.agreement_table(df, image_key, ci)
    if table.empty:
        return None
    _write_csv(table, out / "ratings_metrics.csv")
    return table


def summarize(pairs_dir: str | os.PathLike, rating_files: Sequence[str | os.PathLike], *, strict: bool = False,
              n_boot: int = 2000, ci: float = 0.95, seed: int = 0, plot: bool = True) -> Summary:
    """Read, check, merge and unblind the ratings of export ``pairs_dir``; write
    ``ratings_summary.csv``, ``ratings.png`` (two models) or the ranking files (more), the metric
    agreement and (if any) ``ratings_rejected.csv`` there."""
    out = Path(pairs_dir)
    try:
        pairs, key = read_pairs(out), read_key(out)
    except PairsError as e:
        raise RatingsError(str(e)) from None
    export_ids = {p.export_id for p in pairs}
    export_id = export_ids.pop() if len(export_ids) == 1 else None
    categories = {p.pair_id: p.category for p in pairs}
    valid, rejected = read_ratings(rating_files, set(categories), export_id, strict)
    kept, superseded = deduplicate(valid)
    _write_rejected(out, rejected)
    if not kept:
        raise RatingsError(f"no valid ratings in {', '.join(map(str, rating_files))}"
                           + (f" ({len(rejected)} rejected, see {out / 'ratings_rejected.csv'})" if rejected else ""))
    df = unblind(kept, key, categories, {p.pair_id: p.prompt_id for p in pairs})
    labels = model_labels(key)
    table = pairwise_table(df, labels, n_boot=n_boot, ci=ci, seed=seed)
    summary_csv = _write_csv(table, out / "ratings_summary.csv")
    png = strengths = winrates = ranking_png = None
    if len(labels) <= 2 and plot:
        png = plot_preferences(table, out / "ratings.png", Path(str(table["a_run"].iloc[0])).name,
                               Path(str(table["b_run"].iloc[0])).name)
    if len(labels) > 2:
        strengths, winrates, ranking_png = _ranking(out, df, labels, n_boot, ci, seed, plot)
    metrics = _metrics(out, df, ci)
    return Summary(table, kept, rejected, superseded, summary_csv, png, strengths, winrates, metrics, ranking_png)


def format_strengths(strengths: pd.DataFrame) -> str:
    """The ranking per question: rank, model, strength [interval], run."""
    lines = []
    for q, s in strengths.groupby("question", sort=False):
        lines.append(f"{q}: Bradley-Terry strength [{int(float(s['ci_level'].iloc[0]) * 100)}% interval]")
        for _, r in s.sort_values("rank").iterrows():
            lines.append(f"  {r['rank']:>2}. {r['model']:<3} {r['strength']:+.2f} [{r['strength_lo']:+.2f},"
                         f"{r['strength_hi']:+.2f}]  {r['run']}")
    return "\n".join(lines)


def format_metrics(metrics: pd.DataFrame) -> str:
    """Each metric's agreement with the raters' majority, per question."""
    lines = [f"{'metric':<11} {'question':<10} {'agree':>17}  {'pairs used / rated':>18}"]
    for _, r in metrics.iterrows():
        share = "" if pd.isna(r["agreement"]) else \
            f"{r['agreement']:.2f} [{r['agreement_lo']:.2f},{r['agreement_hi']:.2f}]"
        lines.append(f"{r['metric']:<11} {r['question']:<10} {share:>17}  {r['n_decisive']:>8} / {r['n_pairs']:<8}")
    return "\n".join(lines)


def _print_summary(s: Summary, pairs_dir: str) -> None:
    for r in s.rejected[:20]:
        print(f"rejected: {r.file}, {r.row}: {r.reason}")
    if len(s.rejected) > 20:
        print(f"rejected: ... and {len(s.rejected) - 20} more")
    raters = len({r.rater_id for r in s.ratings})
    print(f"{len(s.ratings)} ratings from {raters} rater(s) used; {len(s.rejected)} rejected"
          + (f" (listed in {Path(pairs_dir) / 'ratings_rejected.csv'})" if s.rejected else "")
          + (f"; {s.superseded} superseded by a later answer of the same rater" if s.superseded else ""))
    if "model_a" not in s.table:
        print(f"A = {s.table['a_run'].iloc[0]}\nB = {s.table['b_run'].iloc[0]}")
        print(format_table(s.table))
    else:
        for (ma, mb), block in s.table.groupby(["model_a", "model_b"], sort=True):
            print(f"\nA = {ma}: {block['a_run'].iloc[0]}\nB = {mb}: {block['b_run'].iloc[0]}")
            print(format_table(block))
    if s.strengths is not None:
        print("\n" + format_strengths(s.strengths))
    if s.metrics is not None:
        print("\nautomatic metrics vs the raters' majority (pairs where both pick a side):\n" + format_metrics(s.metrics))
    written = [p for p in (s.summary_csv, s.plot, s.ranking_plot) if p is not None]
    print(f"wrote {', '.join(map(str, written))}")


def main() -> None:
    missing = missing_arguments(sys.argv[1:], ("pairs", "ratings"))
    if missing and not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg ... to Hydra
        raise SystemExit(f"bench.ratings: missing {', '.join(missing)}; "
                         "usage: python -m bench.ratings pairs=DIR ratings=[FILE,...|DB_URL] [strict=true ...]")

    @hydra.main(version_base="1.3", config_path="../conf", config_name="ratings")
    def _main(cfg: DictConfig) -> None:
        files = [str(f) for f in cfg.ratings] if isinstance(cfg.ratings, ListConfig) else [str(cfg.ratings)]
        try:
            s = summarize(str(cfg.pairs), files, strict=bool(cfg.strict), n_boot=int(cfg.n_boot),
                          ci=float(cfg.ci), seed=int(cfg.seed))
        except RatingsError as e:
            raise SystemExit(f"bench.ratings: {e}") from None
        _print_summary(s, str(cfg.pairs))

    _main()


if __name__ == "__main__":
    main()
