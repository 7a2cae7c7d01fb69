"""Pareto curves of fidelity against text alignment over the guidance sweep, and alignment vs w.

The paper's guidance figures (Saharia et al. 2022, Fig. 4 and A.11) plot FID against CLIP
score, one point per guidance weight w: moving along the curve trades image fidelity
(FD, lower is better) for caption alignment (CLIP score, higher is better). Here:

- x: CLIP score, mean over images of max(100 cos, 0), with the backbone named from the
  ``clip_model`` column of metrics.csv; horizontal bars: its bootstrap CI;
- y: Fréchet distance in the feature space named by ``fd_extractor`` (``metrics.pareto_fd``: ``fd``,
  ``fd_excess`` = fd - fd_real, comparable across N, or ``fd_inf``, extrapolated to N -> infinity);
  vertical bars: its interval from metrics.csv (jackknife; fd_inf has none); dashed line: ``fd_real``
  (real images at the same N) for fd, 0 for fd_excess;
- one marker per w, labelled with w; N (images per w) in the title.

Empty metric cells are left out of a plot (never drawn as zero) and named in a note.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench import rundir

CATEGORY_ORDER = ("all", "Colors", "Counting", "Positional")
MetricColumn = Literal["fd", "fd_excess", "fd_inf", "clip_score", "alignment", "kid", "cmmd", "color_alignment"]
FdColumn = Literal["fd", "fd_excess", "fd_inf"]
FD_COLUMNS = ("fd", "fd_excess", "fd_inf")
AXIS_NAMES = {"fd": "FD", "fd_excess": "FD - FD of real images at this N", "fd_inf": "FD-infinity",
              "clip_score": "CLIP score", "alignment": "alignment (exact detector)",
              "kid": "KID", "cmmd": "CMMD", "color_alignment": "colour alignment"}
LOWER_IS_BETTER = {"fd": True, "fd_excess": True, "fd_inf": True, "kid": True, "cmmd": True, "clip_score": False,
                   "alignment": False, "color_alignment": False}


@dataclass
class Curve:
    """One guidance sweep: ``table`` holds metrics.csv rows of one category, one row per w."""

    label: str
    table: pd.DataFrame


def plain(text: str) -> str:
    """Text that matplotlib draws literally (a '$' in a prompt, path or label never starts math mode)."""
    return str(text).replace("$", r"\$")


def has_values(df: pd.DataFrame, column: str) -> bool:
    """True when ``column`` exists and holds at least one finite number."""
    return column in df.columns and bool(np.isfinite(pd.to_numeric(df[column], errors="coerce")).any())


def category_rows(df: pd.DataFrame, category: str = "all") -> pd.DataFrame:
    """The rows of one category, one per guidance weight, sorted by w."""
    rows = df[df["category"].astype(str) == category]
    return rows.sort_values("guidance_weight").reset_index(drop=True)


def describe_column(tables: Sequence[pd.DataFrame], column: str) -> str:
    """The distinct non-empty values of a text column (e.g. ``fd_extractor``) over tables, joined."""
    vals: list[str] = []
    for t in tables:
        if column in t.columns:
            for v in t[column].astype(str):
                if v and v != "nan" and v not in vals:
                    vals.append(v)
    return " / ".join(vals) if vals else "unknown"


def n_text(tables: Sequence[pd.DataFrame]) -> str:
    """'N = 300 images per w' (or a range when it differs between weights or curves)."""
    ns = sorted({int(n) for t in tables if "num_images" in t.columns for n in t["num_images"].dropna()})
    if not ns:
        return "N unknown"
    return f"N = {ns[0]} images per w" if len(ns) == 1 else f"N = {ns[0]}-{ns[-1]} images per w"


def axis_label(column: str, tables: Sequence[pd.DataFrame]) -> str:
    """An axis label stating what the metric is and where it comes from."""
    arrow = "lower is better" if LOWER_IS_BETTER.get(column, False) else "higher is better"
    if column in FD_COLUMNS:
        return plain(f"{AXIS_NAMES[column]}, {describe_column(tables, 'fd_extractor')} features ({arrow})")
    if column == "clip_score":
        return plain(f"CLIP score, max(100 cos, 0); backbone {describe_column(tables, 'clip_model')} ({arrow})")
    if column == "cmmd":
        return plain(f"CMMD x1000; {describe_column(tables, 'cmmd_model')} ({arrow})")
    return f"{AXIS_NAMES.get(column, column)} ({arrow})"


def _errors(t: pd.DataFrame, column: str) -> np.ndarray | None:
    """Asymmetric (2, n) error bars from ``column_ci_low/high``; None when the table has no CI."""
    lo, hi = f"{column}_ci_low", f"{column}_ci_high"
    if lo not in t.columns or hi not in t.columns:
        return None
    v = t[column].to_numpy(float)
    err = np.vstack([v - t[lo].to_numpy(float), t[hi].to_numpy(float) - v])
    return np.clip(err, 0, None)


def _errorbar(ax: Any, x: np.ndarray, y: np.ndarray, xerr: np.ndarray | None, yerr: np.ndarray | None,
              color: Any) -> None:
    """Error bars only where the interval was computed (a missing CI is not a zero-width CI)."""
    for err, axis in ((xerr, "x"), (yerr, "y")):
        if err is None:
            continue
        ok = np.isfinite(err).all(0)
        if ok.any():
            kw = {"xerr": err[:, ok]} if axis == "x" else {"yerr": err[:, ok]}
            ax.errorbar(x[ok], y[ok], fmt="none", ecolor=color, alpha=0.55, capsize=2, lw=1, **kw)


def draw_pareto(ax: Any, curves: Sequence[Curve], annotate: bool = True, floor: bool = True,
                fd_column: FdColumn = "fd") -> list[str]:
    """FD (y; ``fd_column``: fd, fd_excess or fd_inf) against CLIP score (x), one marker per w; returns notes
    on left-out points."""
    if fd_column not in FD_COLUMNS:
        raise ValueError(f"fd_column must be one of {FD_COLUMNS}, got {fd_column!r}")
    notes: list[str] = []
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for curve, color in zip(curves, colors):
        t = curve.table
        fd = t[fd_column].to_numpy(float) if fd_column in t.columns else np.full(len(t), np.nan)
        ok = np.isfinite(fd) & np.isfinite(t["clip_score"].to_numpy(float))
        dropped = t.loc[~ok, "guidance_weight"].tolist()
        if dropped:
            notes.append(f"{curve.label + ': ' if curve.label else ''}w = "
                         f"{', '.join(f'{w:g}' for w in dropped)} left out ({fd_column} or CLIP score empty)")
        t = t[ok]
        if t.empty:
            continue
        x, y = t["clip_score"].to_numpy(float), t[fd_column].to_numpy(float)
        xerr, yerr = _errors(t, "clip_score"), _errors(t, fd_column)
        _errorbar(ax, x, y, xerr, yerr, color)
        ax.plot(x, y, "-o", color=color, ms=5, lw=1.5, label=plain(curve.label) if curve.label else None)
        if annotate:
            for xi, yi, w in zip(x, y, t["guidance_weight"]):
                ax.annotate(f"w={w:g}", (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=7,
                            color=color)
        if floor and len(curves) == 1:
            _floor_line(ax, t, fd_column)
    if fd_column == "fd_inf":
        notes.append("FD-infinity (extrapolated to N -> infinity) has no interval: no vertical bars")
    ax.set_xlabel(axis_label("clip_score", [c.table for c in curves]), fontsize=8)
    ax.set_ylabel(axis_label(fd_column, [c.table for c in curves]), fontsize=8)
    ax.grid(alpha=0.3)
    return notes


def _floor_line(ax: Any, t: pd.DataFrame, fd_column: str) -> None:
    """What real images score: fd_real (at this N) on the fd axis, 0 on the fd_excess axis."""
    if fd_column == "fd" and has_values(t, "fd_real"):
        real = float(np.nanmean(t["fd_real"].to_numpy(float)))
        ax.axhline(real, color="0.4", ls="--", lw=1, label=f"FD of real images at this N ({real:.3g})")
    elif fd_column == "fd_excess":
        ax.axhline(0.0, color="0.4", ls="--", lw=1, label="real images at this N (0)")


def draw_vs_w(ax: Any, curves: Sequence[Curve], column: MetricColumn, band: bool = True,
              colors: Sequence[str] | None = None) -> list[str]:
    """``column`` against guidance weight, one line per curve, CI band where computed."""
    notes: list[str] = []
    colors = list(colors) if colors else [f"C{i % 10}" for i in range(len(curves))]
    for i, curve in enumerate(curves):
        t = curve.table
        if column not in t.columns:
            notes.append(f"{curve.label or 'run'}: no {column} column")
            continue
        ok = np.isfinite(t[column].to_numpy(float))
        t = t[ok]
        if t.empty:
            notes.append(f"{curve.label or 'run'}: {column} empty")
            continue
        w, v = t["guidance_weight"].to_numpy(float), t[column].to_numpy(float)
        color = colors[i]
        ax.plot(w, v, "-o", color=color, ms=4, lw=2.2 if color == "black" else 1.5,
                label=plain(curve.label) if curve.label else None)
        lo, hi = f"{column}_ci_low", f"{column}_ci_high"
        if band and lo in t.columns and hi in t.columns:
            l, h = t[lo].to_numpy(float), t[hi].to_numpy(float)
            m = np.isfinite(l) & np.isfinite(h)
            if m.any():
                ax.fill_between(w[m], l[m], h[m], color=color, alpha=0.15, lw=0)
    ax.set_xlabel("guidance weight w (1 = no guidance)", fontsize=8)
    ax.set_ylabel(axis_label(column, [c.table for c in curves]), fontsize=8)
    ax.grid(alpha=0.3)
    return notes


def save_figure(fig: Any, png: Path, svg: Path | None = None, dpi: int = 120) -> None:
    """Write PNG (and SVG, text kept as editable text) atomically: a reader never sees half a file."""
    for path, fmt in ((png, "png"), (svg, "svg")):
        if path is None:
            continue
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            rundir.save_figure(fig, path, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)


def _notes(fig: Any, notes: list[str]) -> None:
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes[:6]), fontsize=7, color="0.35", va="bottom", parse_math=False)


def pareto_figure(curves: Sequence[Curve], png: str | os.PathLike, svg: str | os.PathLike | None = None,
                  title: str = "", fd_column: FdColumn = "fd") -> Path | None:
    """Write a FD-vs-CLIP-score Pareto plot of ``curves`` (``fd_column``: fd, fd_excess or fd_inf); None
    (nothing written) when no curve has both that FD and CLIP score at any w."""

    usable = [c for c in curves if has_values(c.table, fd_column) and has_values(c.table, "clip_score")]
    if not usable:
        return None
    fig = Figure(figsize=(7.0, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    notes = draw_pareto(ax, curves, fd_column=fd_column)
    notes += [f"{c.label}: no {fd_column} or no CLIP score" for c in curves if c not in usable and c.label]
    heading = f"{plain(title)}\n" if title else ""
    ax.set_title(f"{heading}Fidelity vs text alignment over guidance weight w ({n_text([c.table for c in usable])})",
                 fontsize=9)
    if ax.get_legend_handles_labels()[0]:  # curve labels, or the real-images line
        ax.legend(fontsize=7, loc="best")
    _notes(fig, notes)
    fig.tight_layout(rect=(0, 0.04 if notes else 0, 1, 1))
    save_figure(fig, Path(png), Path(svg) if svg else None)
    return Path(png)


def alignment_figure(metrics: pd.DataFrame, png: str | os.PathLike, title: str = "") -> Path | None:
    """Alignment vs w per category (Colors / Counting / Positional and all) with CI bands; None when
    the table has no alignment values (no ground truth)."""

    if not has_values(metrics, "alignment"):
        return None
    cats = [c for c in CATEGORY_ORDER if c in set(metrics["category"])]
    cats += sorted(set(metrics["category"]) - set(cats))
    curves = []
    for c in cats:
        t = category_rows(metrics, c)
        if has_values(t, "alignment"):
            n = sorted({int(v) for v in t["num_images"].dropna()}) if "num_images" in t else []
            curves.append(Curve(f"{c} (N={n[0]} per w)" if len(n) == 1 else c, t))
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    palette = itertools.cycle(f"C{i}" for i in range(10))
    draw_vs_w(ax, curves, "alignment", colors=["black" if c.label.startswith("all") else next(palette)
                                               for c in curves])
    empty = [c for c in cats if c not in {cv.table["category"].iloc[0] for cv in curves}]
    _notes(fig, [f"no alignment values (left out): {', '.join(empty)}"] if empty else [])
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="best")
    heading = f"{plain(title)}\n" if title else ""
    ax.set_title(f"{heading}Exact alignment with the caption vs guidance weight (CI bands: bootstrap)", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if empty else 0, 1, 1))
    save_figure(fig, Path(png))
    return Path(png)
