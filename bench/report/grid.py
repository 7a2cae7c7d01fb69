"""A sample grid of a run: rows = the first prompts, columns = guidance weights (same seed per row).

Every image of a row starts from the same noise (per-image seeds do not depend on w), so
reading a row left to right shows what guidance alone does: alignment improving, then
colours saturating at large w (paper section 2.3).
"""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from bench import rundir

from .pareto import save_figure


@dataclass
class GridRow:
    """One row of the grid: a prompt and its image path (or None when missing) at each weight."""

    prompt_id: str
    prompt: str
    category: str
    seed: str
    images: list[Path | None]


def grid_rows(run_dir: str | os.PathLike, max_prompts: int = 8, sample_index: int = 0
              ) -> tuple[list[float], list[GridRow]]:
    """The weights (ascending) and up to ``max_prompts`` rows: the first prompts in manifest order."""
    run_dir = Path(run_dir)
    man = rundir.read_manifest(run_dir, required=("path", "prompt_id", "prompt", "guidance_weight"))
    for col in ("seed", "sample_index"):
        if col not in man.columns:
            man[col] = "0" if col == "sample_index" else ""
    man = man[man["sample_index"].astype(int) == sample_index]
    weights = sorted(set(man["guidance_weight"]))
    rows = []
    for pid in list(dict.fromkeys(man["prompt_id"]))[:max_prompts]:
        sub = man[man["prompt_id"] == pid]
        by_w = {float(r.guidance_weight): run_dir / r.path for r in sub.itertuples()}
        first = sub.iloc[0]
        rows.append(GridRow(pid, first["prompt"], first["category"], first["seed"],
                            [by_w[w] if w in by_w and by_w[w].is_file() else None for w in weights]))
    return weights, rows


def _caption(row: GridRow, width: int = 30, max_lines: int = 5) -> str:
    return wrap_caption(row.prompt, width, max_lines)


def wrap_caption(text: str, width: int = 30, max_lines: int = 5) -> str:
    """``text`` on at most ``max_lines`` lines of ``width`` characters (cut with '...')."""
    lines = textwrap.wrap(" ".join(text.split()), width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 3] + "..."
    return "\n".join(lines)


def _load(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_grid(run_dir: str | os.PathLike, png: str | os.PathLike, max_prompts: int = 8, sample_index: int = 0,
               cell_inches: float = 1.35, title: str = "") -> Path | None:
    """Draw the grid (captions on the left, w on top) to ``png``; None when the manifest lists no image."""
    weights, rows = grid_rows(run_dir, max_prompts, sample_index)
    labelled = [(_caption(r), f"{r.category}  seed {r.seed}".strip(), r.images) for r in rows]
    return draw_grid(labelled, weights, png, cell_inches, title)


def draw_grid(rows: list[tuple[str, str, list[Path | None]]], weights: list[float], png: str | os.PathLike,
              cell_inches: float = 1.35, title: str = "") -> Path | None:
    """Rows of images (one column per w) with a caption and a grey sub-caption on the left of each row."""

    if not rows or not weights:
        return None
    caption_inches = 2.3
    width = caption_inches + cell_inches * len(weights)
    title_lines = textwrap.wrap(title, max(30, int(width * 11))) if title else []
    header = 0.35 + 0.17 * len(title_lines)
    height = header + 0.05 + cell_inches * len(rows)
    fig = Figure(figsize=(width, height))
    gs = fig.add_gridspec(len(rows), len(weights) + 1, width_ratios=[caption_inches / cell_inches] + [1] * len(weights),
                          left=0.01, right=0.99, bottom=0.01, top=1 - header / height, wspace=0.04, hspace=0.06)
    for i, (caption, sub, images) in enumerate(rows):
        cap = fig.add_subplot(gs[i, 0])
        cap.axis("off")
        cap.text(0.0, 0.5, caption, fontsize=8, va="center", ha="left", parse_math=False)
        cap.text(0.0, 0.02, sub, fontsize=6.5, color="0.45", va="bottom", parse_math=False)
        for j, (w, path) in enumerate(zip(weights, images)):
            ax = fig.add_subplot(gs[i, j + 1])
            ax.set_xticks([])
            ax.set_yticks([])
            img = _load(path)
            if img is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, color="0.5")
            else:
                ax.imshow(img, interpolation="nearest")
            if i == 0:
                ax.set_title(f"w = {w:g}", fontsize=9)
    if title_lines:
        fig.suptitle("\n".join(title_lines), fontsize=9, x=0.01, y=1 - 0.04 / height, ha="left", va="top",
                     parse_math=False)
    save_figure(fig, Path(png), dpi=110)
    return Path(png)
