"""The report of a run directory: ``report.md`` and a self-contained ``report.html``.

It shows the metrics table (with N and CIs), the plots, a sample grid, the exact resolved
configuration (``.hydra/config.yaml``), package versions, git revision, seeds, wall times and
peak memory (``run_info.json``), so that the numbers travel with what made them.

Both files are rendered from one list of blocks; every string from the run (prompts,
categories, config text) is escaped for the format it goes into, and images are embedded in
the HTML as base64, so the HTML file can be mailed on its own.

    python -m bench.report.report RUN_DIR [RUN_DIR ...]   # (re)write plots and report
"""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench import rundir

from .grid import grid_rows, write_grid
from .pareto import FD_COLUMNS, Curve, alignment_figure, category_rows, has_values, pareto_figure

log = logging.getLogger(__name__)

Block = tuple  # ("h1"|"h2"|"p"|"warn"|"ul"|"table"|"code"|"img", ...)
METRIC_VIEW = (  # (column, header, with CI)
    ("fd", "FD", True), ("fd_real", "FD real (floor)", False), ("fd_excess", "FD - floor", True),
    ("fd_inf", "FD-inf", False), ("kid", "KID", False), ("kid_se", "KID s.e.", False),
    ("precision", "precision", False), ("recall", "recall", False), ("density", "density", False),
    ("coverage", "coverage", False), ("cmmd", "CMMD", True),
    ("clip_score", "CLIP score", True), ("alignment", "alignment", True), ("color_alignment", "colour align.", False))
DESCRIBED = ("fd_extractor", "fd_reference", "clip_model", "cmmd_model", "cmmd_estimator", "prdc_k")


# ------------------------------------------------------------------ inputs

def pareto_fd(run_dir: Path) -> str:
    """The Pareto plot's fidelity column: ``metrics.pareto_fd`` as scored (metrics.json), else ``fd``."""
    value = (rundir.read_json(run_dir / rundir.METRICS_JSON).get("config") or {}).get("pareto_fd") or "fd"
    return value if value in FD_COLUMNS else "fd"


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def read_info(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/run_info.json`` (written by bench.run), or None."""
    return rundir.read_json(run_dir / rundir.RUN_INFO) or None


def read_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of the run (``.hydra/config.yaml``) as a plain dict; {} when absent."""
    return rundir.read_config(run_dir) or {}


def _fmt(v: Any, digits: int = 4) -> str:
    """A number for a table cell; empty (never 0) for a missing value."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _with_ci(row: pd.Series, col: str) -> str:
    v = _fmt(row.get(col))
    lo, hi = _fmt(row.get(f"{col}_ci_low")), _fmt(row.get(f"{col}_ci_high"))
    return f"{v} ({lo}, {hi})" if v and lo and hi else v


# ------------------------------------------------------------------ blocks

def metrics_blocks(metrics: pd.DataFrame | None, run_dir: Path | None = None) -> list[Block]:
    """The metrics table (columns with at least one value) and what each number is."""
    if metrics is None:
        return [("h2", "Metrics"), ("p", "No metrics.csv in this run directory (metrics disabled or not yet "
                                         "computed: python -m bench.metrics.score_run RUN_DIR).")]
    shown = [(c, h, ci) for c, h, ci in METRIC_VIEW if has_values(metrics, c)]
    empty = [c for c, _, _ in METRIC_VIEW if c in metrics.columns and not has_values(metrics, c)]
    header = ["w", "category", "N"] + [h + (" (CI)" if ci else "") for _, h, ci in shown]
    rows = []
    for _, r in metrics.iterrows():
        rows.append([f"{r['guidance_weight']:g}", str(r["category"]), _fmt(r.get("num_images"))]
                    + [_with_ci(r, c) if ci else _fmt(r.get(c)) for c, _, ci in shown])
    level = ""
    defs = _read_text(run_dir / rundir.METRICS_JSON) if run_dir else None
    if defs:
        level = json.loads(defs).get("definitions", {}).get("ci", "")
    out: list[Block] = [("h2", "Metrics"),
                        ("p", "One row per guidance weight w and category; N images per row; intervals in "
                              f"parentheses{': ' + level if level else ''}."),
                        ("table", header, rows)]
    if empty:
        out.append(("p", "Not computed (empty in metrics.csv, not plotted): " + ", ".join(empty) + "."))
    described = []
    for c in DESCRIBED:
        if c in metrics.columns:
            vals = sorted({str(v) for v in metrics[c] if str(v) not in ("", "nan")})
            if vals:
                described.append(f"{c}: {'; '.join(vals)}")
    if described:
        out.append(("ul", described))
    return out


def definitions_blocks(run_dir: Path) -> list[Block]:
    text = _read_text(run_dir / rundir.METRICS_JSON)
    if not text:
        return []
    defs = json.loads(text).get("definitions", {})
    return [("h3", "What the numbers are (metrics.json)"), ("ul", [f"{k}: {v}" for k, v in defs.items()])]


def image_blocks(run_dir: Path, n: int = 8) -> list[Block]:
    """Where to look first: from ``image_scores.csv``, the images the exact detector marks wrong (else all),
    lowest CLIP score first."""
    path = run_dir / rundir.IMAGE_SCORES
    if not path.is_file():
        return []
    per = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if per.empty or "clip_score" not in per:
        return []
    judged = "correct" in per and per["correct"].notna().any()
    pool = per[per["correct"].astype("boolean") == False] if judged else per  # noqa: E712 (nullable column)
    if pool.empty:
        return [("h2", "Images to look at"), ("p", "The exact detector marks every image correct (image_scores.csv).")]
    pool = pool.merge(rundir.read_manifest(run_dir)[["path", "prompt"]], on="path", how="left").sort_values(["clip_score", "path"], na_position="last")
    rows = [[f"{r['guidance_weight']:g}", str(r["category"]), _fmt(r["clip_score"], 3),
             "" if pd.isna(r.get("correct", pd.NA)) else ("correct" if r["correct"] else "wrong"),
             str(r["prompt"]), str(r["path"])] for _, r in pool.head(n).iterrows()]
    what = (f"{len(pool)} of {len(per)} images the exact detector marks wrong" if judged else
            f"{len(per)} images (no ground truth to check)")
    return [("h2", "Images to look at"),
            ("p", f"{what}; the {len(rows)} with the lowest CLIP score. Every image's scores: image_scores.csv."),
            ("table", ["w", "category", "CLIP score", "detector", "prompt", "file"], rows)]


def samples_blocks(run_dir: Path, grid: Path | None, max_prompts: int) -> list[Block]:
    if grid is None:
        return []
    _, rows = grid_rows(run_dir, max_prompts)
    table = [[r.prompt_id, r.category, r.seed, r.prompt] for r in rows]
    return [("h2", "Samples"),
            ("p", "Rows: the first prompts of the run; columns: guidance weights. Each row uses one seed at "
                  "every w (same starting noise), so the row shows what guidance alone changes."),
            ("img", grid.name, "sample grid"), ("table", ["prompt id", "category", "seed", "prompt"], table)]


def config_blocks(run_dir: Path) -> list[Block]:
    cfg = rundir.read_config_text(run_dir)
    out: list[Block] = [("h2", "Configuration")]
    if cfg is None:
        return out + [("p", f"No resolved config found at {run_dir / rundir.HYDRA_CONFIG}.")]
    out.append(("p", "The exact resolved configuration of this run (.hydra/config.yaml):"))
    out.append(("code", cfg, "yaml"))
    over = _read_text(run_dir / rundir.HYDRA_DIR / "overrides.yaml")
    if over is not None:
        out += [("p", "Command-line overrides (.hydra/overrides.yaml):"), ("code", over, "yaml")]
    return out


def info_blocks(info: dict[str, Any] | None) -> list[Block]:
    """Provenance, seeds, stages, wall time, memory and versions from run_info.json."""
    if not info:
        return [("h2", "Provenance"), ("p", "No run_info.json in this run directory.")]
    out: list[Block] = [("h2", "Provenance")]
    facts = [("git revision", info.get("git_revision")), ("command", info.get("command")),
             ("run seed", info.get("seed")), ("prompts", info.get("num_prompts")), ("images", info.get("num_images")),
             ("images generated / resumed", f"{info.get('images_generated')} / {info.get('images_resumed')}"),
             ("text encoder", info.get("text_encoder")), ("truncated prompts", info.get("truncated_prompts")),
             ("device", info.get("device")), ("torch threads", info.get("threads")),
             ("processes (world size)", info.get("world_size")),
             ("random weights", info.get("random_weights"))]
    out.append(("table", ["", ""], [[k, _fmt(v)] for k, v in facts if v is not None]))
    out.append(("p", "Seeds: each image's seed derives from (run seed, prompt id, sample index) and is the "
                     "same at every guidance weight; every image's seed is in manifest.csv."))
    wt = info.get("wall_time_s") or {}
    timing = [[f"wall time, {k}", f"{v:.1f} s"] for k, v in wt.items() if isinstance(v, (int, float))]
    if info.get("peak_memory_mib") is not None:
        timing.append(["peak memory (RSS)", f"{info['peak_memory_mib']:.0f} MiB"])
    if timing:
        out += [("h3", "Wall time and memory"), ("table", ["", ""], timing)]
    stages = info.get("stages") or []
    if stages:
        out += [("h3", "Cascade stages"),
                ("table", ["stage", "kind", "size", "checkpoint", "sha256", "train steps", "random weights"],
                 [[str(i), _fmt(s.get("kind")), _fmt(s.get("image_size")), _fmt(s.get("checkpoint")),
                   (s.get("sha256") or "")[:16], _fmt(s.get("train_steps")), _fmt(s.get("random_init"))]
                  for i, s in enumerate(stages)])]
    versions = info.get("versions") or {}
    if versions:
        out += [("h3", "Versions"), ("table", ["package", "version"], [[k, str(v)] for k, v in versions.items()])]
    return out


def summary_line(cfg: dict[str, Any]) -> str:
    """model / prompts / sampler / guidance in one line, from the resolved config."""
    if not cfg:
        return ""
    m, p, s, g = (cfg.get(k) or {} for k in ("model", "prompts", "sampler", "guidance"))
    if not m and not s:  # scored from a folder of images (bench.score): no model or sampler of ours
        return f"images from {cfg.get('images', '?')}; prompts {p.get('name', '?')} (limit {p.get('limit')})"
    return (f"model {m.get('name', '?')}; prompts {p.get('name', '?')} (limit {p.get('limit')}); "
            f"sampler {s.get('kind', '?')}, {s.get('steps')} + {s.get('sr_steps')} steps, aug_level "
            f"{s.get('aug_level')}; guidance w = {g.get('weights')}, thresholding {g.get('thresholding')} "
            f"(p = {g.get('percentile')}); samples per prompt {cfg.get('samples_per_prompt')}")


def report_blocks(run_dir: Path, info: dict[str, Any] | None, metrics: pd.DataFrame | None,
                  plots: dict[str, Path], max_prompts: int = 8) -> list[Block]:
    cfg = read_config(run_dir)
    out: list[Block] = [("h1", f"Run report: {run_dir.name}"), ("p", f"Run directory: {run_dir}")]
    if (run_dir / rundir.RANDOM_WEIGHTS).is_file() or (info or {}).get("random_weights"):
        out.append(("warn", "RANDOM WEIGHTS: at least one cascade stage had no checkpoint. These images and "
                            "metrics say nothing about a trained model."))
    if cfg:
        out.append(("p", summary_line(cfg)))
    out += metrics_blocks(metrics, run_dir)
    figures = [(k, t) for k, t in (("pareto", "FD vs CLIP score over guidance weight"),
                                    ("alignment", "Alignment vs guidance weight, per category")) if k in plots]
    if figures:
        out.append(("h2", "Plots"))
        out += [("img", plots[k].name, t) for k, t in figures]
    out += definitions_blocks(run_dir)
    out += samples_blocks(run_dir, plots.get("grid"), max_prompts)
    out += image_blocks(run_dir)
    out += info_blocks(info)
    out += config_blocks(run_dir)
    out.append(("p", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} by bench.report."))
    return out


# ------------------------------------------------------------------ rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|$])")


def md_escape(text: str) -> str:
    """Literal text in Markdown: HTML entities for < > &, backslash for Markdown syntax, one line."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _fence(text: str) -> str:
    runs = [len(m) for m in re.findall(r"`+", text)]
    return "`" * max(3, max(runs, default=0) + 1)


def render_markdown(blocks: list[Block]) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + md_escape(b[1]), ""]
        elif kind == "p":
            lines += [md_escape(b[1]), ""]
        elif kind == "warn":
            lines += [f"> **{md_escape(b[1])}**", ""]
        elif kind == "ul":
            lines += [f"- {md_escape(i)}" for i in b[1]] + [""]
        elif kind == "table":
            header, rows = b[1], b[2]
            lines.append("| " + " | ".join(md_escape(h) for h in header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
            lines.append("")
        elif kind == "code":
            fence = _fence(b[1])
            lines += [fence + b[2], b[1].rstrip("\n"), fence, ""]
        elif kind == "img":
            lines += [f"![{md_escape(b[2])}]({b[1]})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f8fa;padding:.8em;overflow:auto;
font-size:.8em}img{max-width:100%;border:1px solid #ddd}.warn{background:#fff3cd;border:1px solid #e0b000;
padding:.5em;font-weight:bold}figure{margin:1em 0}figcaption{color:#555;font-size:.85em}"""


def render_html(blocks: list[Block], run_dir: Path, title: str) -> str:
    """A self-contained page: escaped text, images inlined as base64 data URIs, no scripts."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{esc(b[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{esc(b[1])}</p>")
        elif kind == "warn":
            parts.append(f'<p class="warn">{esc(b[1])}</p>')
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "code":
            parts.append(f"<pre><code>{esc(b[1])}</code></pre>")
        elif kind == "img":
            path = run_dir / b[1]
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(b[2])}">'
                             f"<figcaption>{esc(b[2])} ({esc(b[1])})</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------ entry points

def write_report(run_dir: str | os.PathLike, info: dict[str, Any] | None = None,
                 metrics: pd.DataFrame | None = None, plots: dict[str, Path] | None = None,
                 max_prompts: int = 8) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` from what is in ``run_dir``; returns both paths."""
    run_dir = Path(run_dir)
    info = info if info is not None else read_info(run_dir)
    blocks = report_blocks(run_dir, info, metrics, plots or {}, max_prompts)
    md, page = run_dir / rundir.REPORT_MD, run_dir / rundir.REPORT_HTML

    rundir.atomic_write_text(render_markdown(blocks), md)
    rundir.atomic_write_text(render_html(blocks, run_dir, f"imagen-bench report: {run_dir.name}"), page)
    return md, page


def _plot_title(run_dir: Path, info: dict[str, Any] | None) -> str:
    model = (read_config(run_dir).get("model") or {}).get("name", "")
    random = (run_dir / "RANDOM_WEIGHTS.txt").is_file() or bool((info or {}).get("random_weights"))
    return f"{run_dir.name}{f' ({model})' if model else ''}{' - RANDOM WEIGHTS' if random else ''}"


def write_run_outputs(run_dir: str | os.PathLike, info: dict[str, Any] | None = None,
                      max_prompts: int = 8) -> dict[str, Path]:
    """Everything a person opens after a run: ``pareto.png``/``.svg`` and ``alignment.png`` (when
    metrics.csv has the values), ``grid.png``, ``report.md`` and ``report.html``.

    ``info`` is the run_info dict (read from ``run_info.json`` when None). Plots whose metrics are
    empty are not drawn, and a stale one from an earlier scoring is removed. Returns name -> path.
    """
    run_dir = Path(run_dir)
    info = info if info is not None else read_info(run_dir)
    metrics_csv = run_dir / rundir.METRICS
    metrics = rundir.read_metrics(metrics_csv) if metrics_csv.is_file() else None
    title = _plot_title(run_dir, info)
    made: dict[str, Path | None] = {"pareto": None, "alignment": None}
    if metrics is not None:
        made["pareto"] = pareto_figure([Curve("", category_rows(metrics, "all"))], run_dir / "pareto.png",
                                       run_dir / "pareto.svg", title=title, fd_column=pareto_fd(run_dir))
        made["alignment"] = alignment_figure(metrics, run_dir / "alignment.png", title=title)
    for name, files in (("pareto", ("pareto.png", "pareto.svg")), ("alignment", ("alignment.png",))):
        if made[name] is None:
            for f in files:
                (run_dir / f).unlink(missing_ok=True)
    made["grid"] = write_grid(run_dir, run_dir / "grid.png", max_prompts=max_prompts, title=title)
    plots = {k: v for k, v in made.items() if v is not None}
    md, page = write_report(run_dir, info, metrics, plots, max_prompts)
    out = {**plots, "report_md": md, "report_html": page}
    if "pareto" in plots:
        out["pareto_svg"] = run_dir / "pareto.svg"
    log.info("report: %s", page)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report.report RUN_DIR [RUN_DIR ...]``: (re)write a run's plots and report."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(main.__doc__, file=sys.stderr)
        return 2
    for a in args:
        out = write_run_outputs(Path(a))
        print("\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
