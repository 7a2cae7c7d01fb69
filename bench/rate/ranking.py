"""Several models rated two at a time: Bradley-Terry strengths with intervals, the ranking, the
observed win-rate matrix, and their figure.

Input is the unblinded table of ``bench.ratings.unblind`` (one row per rating: ``question``,
``choice`` A | indifferent | B of the pair's ``model_a`` and ``model_b``) with a ``prompt_id``
column; the bootstrap resamples prompts.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench import rundir
from bench.rate import bradley_terry

QUESTIONS: tuple[str, ...] = ("quality", "alignment")


def group_wins(df: pd.DataFrame, models: list[str]) -> np.ndarray:
    """(prompts, K, K) win counts: ``[g, i, j]`` = ratings on prompt g preferring i over j
    (an indifferent rating adds a half to both directions)."""
    index = {m: i for i, m in enumerate(models)}
    groups = {g: n for n, g in enumerate(sorted(df["prompt_id"].unique()))}
    w = np.zeros((max(1, len(groups)), len(models), len(models)))
    for g, a, b, choice in zip(df["prompt_id"], df["model_a"], df["model_b"], df["choice"]):
        i, j, n = index[a], index[b], groups[g]
        if choice == "A":
            w[n, i, j] += 1
        elif choice == "B":
            w[n, j, i] += 1
        else:
            w[n, i, j] += 0.5
            w[n, j, i] += 0.5
    return w


def strengths_table(df: pd.DataFrame, models: list[str], labels: dict[str, str], *, n_boot: int = 2000,
                    ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per (question, model): strength with its interval and rank (1 = strongest)."""
    rows = []
    for question in QUESTIONS:
        d = df[df["question"] == question]
        if d.empty:
            continue
        crc = zlib.crc32(f"bt/{question}".encode())
        point, lo, hi = bradley_terry.bootstrap(group_wins(d, models), n_boot=n_boot, ci=ci, seed=[seed, crc])
        ranks = (-point).argsort().argsort() + 1
        for i, m in enumerate(models):
            n = int(((d["model_a"] == m) | (d["model_b"] == m)).sum())
            rows.append({"question": question, "model": m, "run": labels.get(m, m), "strength": float(point[i]),
                         "strength_lo": float(lo[i]), "strength_hi": float(hi[i]), "rank": int(ranks[i]),
                         "n_ratings": n})
    table = pd.DataFrame(rows)
    table["ci_level"], table["n_boot"] = ci, n_boot
    table["model_fit"] = "Bradley-Terry (MM), indifferent = half a win each, 1 virtual tie per model pair"
    table["bootstrap"] = "percentile, resampling prompts"
    return table


def winrate_table(df: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """One row per (question, model, opponent): wins, ties, losses and win rate (ties count half)."""
    rows = []
    for question in QUESTIONS:
        d = df[df["question"] == question]
        if d.empty:
            continue
        w = group_wins(d, models).sum(0)
        for i, m in enumerate(models):
            for j, o in enumerate(models):
                if i == j:
                    continue
                sel = ((d["model_a"] == m) & (d["model_b"] == o)) | ((d["model_a"] == o) & (d["model_b"] == m))
                n, ties = int(sel.sum()), int((sel & (d["choice"] == "indifferent")).sum())
                wins = w[i, j] - ties / 2
                rows.append({"question": question, "model": m, "opponent": o, "wins": int(round(wins)), "ties": ties,
                             "losses": n - ties - int(round(wins)), "n": n,
                             "win_rate": float(w[i, j] / n) if n else float("nan")})
    return pd.DataFrame(rows)


def plot_ranking(strengths: pd.DataFrame, winrates: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per question: the ranking (strengths with intervals, strongest on top) and the win-rate matrix."""
    questions = [q for q in QUESTIONS if q in set(strengths["question"])]
    fig = Figure(figsize=(12, 3.8 * max(1, len(questions)) + 0.6))
    for r, q in enumerate(questions):
        s = strengths[strengths["question"] == q].sort_values("strength")
        ax = fig.add_subplot(len(questions), 2, 2 * r + 1)
        y = np.arange(len(s))
        err = np.vstack([s["strength"] - s["strength_lo"], s["strength_hi"] - s["strength"]]).clip(0)
        ax.errorbar(s["strength"], y, xerr=err, fmt="o", capsize=3, color="#1f6feb")
        ax.set_yticks(y, [f"{m}: {Path(str(run)).name}" for m, run in zip(s["model"], s["run"])])
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_xlabel("Bradley-Terry strength (log odds; mean 0)")
        ax.set_title(f"{q}: ranking, {int(float(s['ci_level'].iloc[0]) * 100)}% bootstrap intervals")
        ax.grid(axis="x", alpha=0.3)
        _winrate_axes(fig.add_subplot(len(questions), 2, 2 * r + 2), winrates[winrates["question"] == q], q)
    fig.tight_layout()
    path = Path(path)
    rundir.save_figure(fig, path, dpi=110)
    return path


def _winrate_axes(ax: Axes, w: pd.DataFrame, question: str) -> None:
    models = sorted(set(w["model"]) | set(w["opponent"]))
    m = np.full((len(models), len(models)), np.nan)
    for _, r in w.iterrows():
        m[models.index(r["model"]), models.index(r["opponent"])] = r["win_rate"]
    ax.imshow(m, vmin=0, vmax=1, cmap="RdBu")
    for i in range(len(models)):
        for j in range(len(models)):
            if not np.isnan(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(models)), models)
    ax.set_yticks(range(len(models)), models)
    ax.set_xlabel("opponent")
    ax.set_ylabel("model")
    ax.set_title(f"{question}: win rate of row over column (ties half)")
