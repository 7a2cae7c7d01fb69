"""Reproduce the paper's guidance figures with the built-in cascade.

    python -m bench.figures figure=NAME [run.model=imagen_base out_dir=DIR figure.size.prompts=N ...]

NAME is a file in ``conf/figure/``: guidance, thresholding, aug_level, text_encoder, sampler_steps. A figure
is a list of variants (run-config overrides); each variant is one ``bench.run.run`` sweep over
the guidance weights, in ``OUT/runs/<variant>/`` (a full run directory with its own report).
Rerunning reuses finished variants and, inside an unfinished one, finished images; a variant
directory made with other checkpoint files is refused (sha256 recorded), never mixed. Then:

- ``OUT/NAME.png`` / ``.svg``: FD-vs-CLIP Pareto curves (one per variant) and FD, CLIP score
  and exact alignment against w, panels without values left out; a figure with ``x_axis: steps``
  (sampler_steps) draws exact alignment, CLIP score and FD against each variant's ``sampler.steps``
  instead, one line per sampler kind, one panel per metric and w;
- ``OUT/NAME_samples.png``: the first prompts' images across w, one row per variant;
- ``OUT/NAME.csv``: every metrics row of every variant, with the variant's label, note and
  overrides, its run directory and wall time;
- ``OUT/README.md``: what the figure reproduces, what the paper found, the sizes, wall times.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from bench import rundir
from bench.compare import show
from bench.report.grid import draw_grid, grid_rows, wrap_caption
from bench.report.pareto import (AXIS_NAMES, Curve, axis_label, category_rows, draw_pareto, draw_vs_w, has_values,
                                 n_text, save_figure)
from bench.report.report import md_escape
from bench.run import RunConfigMismatch, run
from imagen.cascade import resolve_path

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DONE_FILE = "figure_variant.json"
FIGURE_KEYS = {"name", "title", "paper", "expect", "note", "size", "variants", "control", "x_axis"}
REF_STEPS = 25 + 20  # base + SR steps per image at which ``sec_per_image`` (conf/figures.yaml) is stated
SAMPLER_NAMES = {"ddim": "DDIM", "ddpm": "DDPM (ancestral)", "dpmpp_2m": "DPM-Solver++(2M)",
                 "dpmpp_2m_sde": "SDE-DPM-Solver++(2M)"}
GRID_NAMES = {"logsnr": "logSNR", "time": "uniform-t"}


class FigureError(RuntimeError):
    """A figure cannot be made as configured; the message names the config key or directory."""


@dataclass
class Variant:
    """One curve of a figure: run-config ``overrides`` on top of the figure's size and model."""

    label: str
    overrides: list[str] = field(default_factory=list)
    note: str = ""
    model: str | None = None                  # another conf/model option for this arm
    checkpoints: dict[int, str | None] = field(default_factory=dict)  # stage index -> checkpoint
    optional: bool = False                    # skip unless ``model`` or a checkpoint is set


@dataclass
class FigureSize:
    prompts: int
    weights: list[float]
    steps: int | None                         # None: each variant sets sampler.steps (x_axis: steps)
    sr_steps: int | None = None


@dataclass
class FigureSpec:
    """A figure as configured in ``conf/figure/NAME.yaml``, plus the run settings shared by its variants."""

    name: str
    title: str
    paper: str
    expect: str
    size: FigureSize
    variants: list[Variant]
    note: str = ""
    x_axis: str = "w"                         # w: metrics against w; steps: against each variant's sampler.steps
    model: str = "imagen_base"
    metrics: str = "default"
    prompts: str = "shapes"
    seed: int = 0
    threads: int = 0
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, figure: dict[str, Any], top: dict[str, Any] | None = None) -> "FigureSpec":
        """From the resolved ``figure`` group and the ``run`` keys of ``conf/figures.yaml``."""
        top = top or {}
        unknown = sorted(set(figure) - FIGURE_KEYS)
        if unknown:
            raise FigureError(f"conf/figure/{figure.get('name', '?')}.yaml: unknown keys {unknown}; "
                              f"known: {sorted(FIGURE_KEYS)}")
        try:
            size = FigureSize(**figure["size"])
            variants = [Variant(**{**v, "checkpoints": {int(k): c for k, c in (v.get("checkpoints") or {}).items()}})
                        for v in figure["variants"]]
        except (KeyError, TypeError) as e:
            raise FigureError(f"conf/figure/{figure.get('name', '?')}.yaml: {e} (keys: name, title, paper, expect, "
                              "note, size{prompts, weights, steps, sr_steps}, variants[{label, overrides, note, model, "
                              "checkpoints, optional}])") from None
        if not variants:
            raise FigureError(f"conf/figure/{figure['name']}.yaml: no variants")
        x_axis = str(figure.get("x_axis") or "w")
        if x_axis not in ("w", "steps"):
            raise FigureError(f"conf/figure/{figure['name']}.yaml: x_axis {x_axis!r}: expected w or steps")
        extra = {k: top[k] for k in ("model", "metrics", "prompts", "seed", "threads") if top.get(k) is not None}
        return cls(name=figure["name"], title=figure["title"], paper=figure["paper"], expect=figure["expect"],
                   note=figure.get("note") or "", size=size, variants=variants, x_axis=x_axis,
                   overrides=[str(o) for o in top.get("overrides") or []], **extra)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def active(v: Variant) -> bool:
    """An optional arm runs only when its model or a checkpoint is configured."""
    return not v.optional or bool(v.model) or any(v.checkpoints.values())


def variant_overrides(spec: FigureSpec, v: Variant) -> list[str]:
    """The run-config overrides of one variant: model and size, user overrides, the variant's own."""
    s = spec.size
    out = [f"model={v.model or spec.model}", f"metrics={spec.metrics}", f"prompts={spec.prompts}",
           f"prompts.limit={int(s.prompts)}", f"guidance.weights={show([float(w) for w in s.weights])}"]
    out += [f"sampler.steps={int(s.steps)}"] if s.steps is not None else []
    out += [f"sampler.sr_steps={show(s.sr_steps)}", f"seed={int(spec.seed)}", f"threads={int(spec.threads)}"]
    out += spec.overrides + list(v.overrides)
    out += [f"model.stages.{i}.checkpoint={_quote(str(c))}" for i, c in sorted(v.checkpoints.items()) if c]
    return out


def compose_run_config(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved ``conf/config.yaml`` with ``overrides``, as a plain dict (Hydra's compose API)."""

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: its search path is conf/
        cfg = compose(config_name="config", overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:60] or "variant"


@dataclass
class VariantResult:
    variant: Variant
    run_dir: Path
    config: dict[str, Any]
    overrides: list[str]
    metrics: pd.DataFrame | None
    wall_time_s: float
    reused: bool
    info: dict[str, Any]


def checkpoint_hashes(cfg: dict[str, Any]) -> list[str]:
    """sha256 of each stage's checkpoint file ('none' where the stage has none: random weights)."""
    out = []
    for st in cfg["model"]["stages"]:
        path = resolve_path(st["checkpoint"]) if st.get("checkpoint") else None
        out.append(rundir.file_sha256(path) if path is not None and path.is_file() else "none")
    return out


def _earlier_generation_s(prev: dict | None, info: dict) -> float:
    """Generation time of images this invocation resumed (a rescore after a metrics change), from the record of
    the invocation that made them (pro rata), so the variant's wall time stays the time its sweep costs."""
    if not prev or not info.get("images_resumed"):
        return 0.0
    earlier = prev.get("info") or {}
    per_image = float(earlier.get("wall_time_s", {}).get("generation", 0.0)) / max(int(earlier.get("num_images", 0)), 1)
    return per_image * info["images_resumed"]


def run_variant(v: Variant, overrides: list[str], run_dir: Path,
                compose: Callable[[Sequence[str]], dict[str, Any]] = compose_run_config) -> VariantResult:
    """Run one variant's sweep in ``run_dir``, or reuse it when it finished with the same config and
    checkpoint files; an unfinished one resumes (bench.run keeps finished images)."""
    cfg = compose(overrides)
    hashes = checkpoint_hashes(cfg)
    record = run_dir / DONE_FILE
    prev = json.loads(record.read_text()) if record.is_file() else None
    if prev is not None and prev.get("checkpoints") != hashes:
        raise FigureError(f"variant {v.label!r}: {run_dir} holds images from other checkpoint files "
                          f"(sha256 {prev.get('checkpoints')} vs now {hashes}); its images are kept. Move that "
                          "directory away, or give the figure another out_dir=...")
    same = prev is not None and json.dumps(prev["config"], sort_keys=True) == json.dumps(cfg, sort_keys=True)
    if same and prev.get("finished"):
        m = run_dir / rundir.METRICS
        return VariantResult(v, run_dir, cfg, overrides, rundir.read_metrics(m) if m.is_file() else None,
                             float(prev["wall_time_s"]), True, prev.get("info", {}))
    t0 = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(record, {"config": cfg, "overrides": overrides, "checkpoints": hashes, "finished": False,
                               "info": (prev or {}).get("info", {})})  # an interrupted rescore keeps the times
    rundir.write_hydra_files(run_dir, cfg, overrides)
    try:
        result = run(cfg, run_dir)
    except RunConfigMismatch as e:
        raise FigureError(f"variant {v.label!r}: {e} (or give the figure another out_dir=...)") from None
    earlier = _earlier_generation_s(prev, result["info"])
    if earlier and "wall_time_s" in result["info"]:
        times = result["info"]["wall_time_s"]
        times.update({k: round(times[k] + earlier, 2) for k in ("generation", "total") if k in times})
    wall = time.time() - t0 + earlier
    rundir.write_json(record, {"config": cfg, "overrides": overrides, "checkpoints": hashes, "finished": True,
                        "wall_time_s": round(wall, 2), "info": result["info"]})
    m = run_dir / rundir.METRICS
    metrics = rundir.read_metrics(m) if (m.is_file() and result["metrics"] is not None) else None
    return VariantResult(v, run_dir, cfg, overrides, metrics, wall, False, result["info"])


def plan(spec: FigureSpec) -> list[tuple[Variant, list[str]]]:
    """The variants that run (optional arms without a model or checkpoint are left out) and their overrides."""
    return [(v, variant_overrides(spec, v)) for v in spec.variants if active(v)]


def num_images(spec: FigureSpec) -> int:
    return len(plan(spec)) * int(spec.size.prompts) * len(spec.size.weights)


def steps_per_image(cfg: dict[str, Any]) -> tuple[int, int]:
    """(base, SR) steps per image of a composed run config; SR steps count only when the model has an SR stage."""
    s = cfg["sampler"]
    n_sr = max(len(cfg["model"].get("stages") or [None]) - 1, 0)
    return int(s["steps"]), n_sr * int(s.get("sr_steps") or s["steps"])


def image_steps(spec: FigureSpec, compose: Callable[[Sequence[str]], dict[str, Any]] = compose_run_config) -> int:
    """Sampler steps the figure takes, summed over its images (base + SR steps of each variant's config): the
    time estimate is this times ``sec_per_image / REF_STEPS``."""
    per_variant = int(spec.size.prompts) * len(spec.size.weights)
    return sum(per_variant * sum(steps_per_image(compose(o))) for _, o in plan(spec))


def make_figure(spec: FigureSpec, out_dir: str | os.PathLike,
                compose: Callable[[Sequence[str]], dict[str, Any]] = compose_run_config) -> dict[str, Path]:
    """Run every variant (resuming), then write ``NAME.png``/``.svg``, ``NAME.csv`` and ``README.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    todo = plan(spec)
    used: set[str] = set()
    results = []
    for i, (v, overrides) in enumerate(todo):
        name = slug(v.label)
        while name in used:
            name += "-b"
        used.add(name)
        print(f"[{spec.name} {i + 1}/{len(todo)}] {v.label}: {spec.size.prompts} prompts x "
              f"{len(spec.size.weights)} weights -> {out / 'runs' / name}", flush=True)
        r = run_variant(v, overrides, out / "runs" / name, compose)
        print(f"[{spec.name} {i + 1}/{len(todo)}] {v.label}: "
              f"{'reused (finished earlier)' if r.reused else 'done'} in {r.wall_time_s:.0f} s", flush=True)
        results.append(r)
    skipped = [v for v in spec.variants if not active(v)]
    table = figure_table(spec, results)
    paths = {"csv": out / f"{spec.name}.csv"}
    rundir.atomic_write_text(table.to_csv(index=False), paths["csv"])
    png = figure_plot(spec, results, out / f"{spec.name}.png", out / f"{spec.name}.svg")
    if png is not None:
        paths["png"], paths["svg"] = png, out / f"{spec.name}.svg"
    samples = samples_plot(spec, results, out / f"{spec.name}_samples.png", 1 if spec.x_axis == "steps" else 2)
    if samples is not None:
        paths["samples"] = samples
    wall = time.time() - t0
    paths["readme"] = write_readme(spec, results, skipped, out, wall)
    print(f"[{spec.name}] wall time {wall / 60:.1f} min; wrote " + ", ".join(str(p) for p in paths.values()),
          flush=True)
    return paths


def figure_table(spec: FigureSpec, results: Sequence[VariantResult]) -> pd.DataFrame:
    """Every metrics row of every variant, with what made it."""
    frames = []
    for i, r in enumerate(results):
        weights = [float(w) for w in spec.size.weights]
        m = r.metrics if r.metrics is not None else pd.DataFrame({"guidance_weight": weights,
                                                                 "category": ["all"] * len(weights)})
        front = pd.DataFrame({"figure": spec.name, "variant": i, "label": r.variant.label,
                              "note": r.variant.note or spec.note, "overrides": " ".join(r.overrides),
                              "run_dir": str(r.run_dir), "wall_time_s": round(r.wall_time_s, 1),
                              "sampler": r.config.get("sampler", {}).get("kind"),
                              "steps": r.config.get("sampler", {}).get("steps"),
                              "random_weights": bool(r.info.get("random_weights", False))}, index=range(len(m)))
        frames.append(pd.concat([front, m.reset_index(drop=True)], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def figure_plot(spec: FigureSpec, results: Sequence[VariantResult], png: Path, svg: Path | None = None) -> Path | None:
    """Pareto (FD vs CLIP score) and metric-vs-w panels (metric-vs-steps for ``x_axis: steps``); panels
    without values are left out. None (and no file) when no variant has any metric value."""
    if spec.x_axis == "steps":
        return steps_plot(spec, results, png, svg)

    curves = [Curve(r.variant.label, category_rows(r.metrics, "all")) for r in results if r.metrics is not None]
    tables = [c.table for c in curves]
    panels = []
    if any(has_values(t, "fd") and has_values(t, "clip_score") for t in tables):
        panels.append("pareto")
    panels += [c for c in ("fd", "clip_score", "alignment") if any(has_values(t, c) for t in tables)]
    if not panels:
        for p in (png, svg):
            if p is not None:
                Path(p).unlink(missing_ok=True)
        return None
    cols = 1 if len(panels) == 1 else 2
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(6.2 * cols, 4.6 * rows + 0.8))
    notes: list[str] = []
    for k, p in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        if p == "pareto":
            notes += draw_pareto(ax, curves, floor=len(curves) == 1)
            ax.set_title("FD vs CLIP score over w (labels: w)", fontsize=9)
        else:
            draw_vs_w(ax, curves, p)
            if p == "alignment":
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{AXIS_NAMES[p]} vs guidance weight", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    random = any(r.info.get("random_weights") for r in results)
    fig.suptitle(f"{spec.title} ({n_text(tables)}){' - RANDOM WEIGHTS' if random else ''}\n{spec.paper}",
                 fontsize=10, parse_math=False)
    if notes:
        fig.text(0.01, 0.005, "\n".join(notes[:6]), fontsize=7, color="0.35", va="bottom", parse_math=False)
    fig.tight_layout(rect=(0, 0.03 if notes else 0, 1, 0.97))
    save_figure(fig, png, svg)
    return png


def sampler_name(label: str) -> str:
    """``dpmpp_2m (logsnr)`` -> ``DPM-Solver++(2M), logSNR grid``; a kind alone -> its name."""
    kind, _, grid = label.partition(" (")
    name = SAMPLER_NAMES.get(kind, kind)
    return f"{name}, {GRID_NAMES.get(grid.rstrip(')'), grid.rstrip(')'))} grid" if grid else name


def steps_table(results: Sequence[VariantResult]) -> pd.DataFrame:
    """The ``all`` rows of every variant with its sampler (kind, and the time grid when not uniform in t) and
    steps (x_axis: steps), sorted by steps."""
    frames = []
    for r in results:
        if r.metrics is not None:
            t = category_rows(r.metrics, "all").copy()
            s = r.config["sampler"]
            grid = str(s.get("grid") or "time")
            t["sampler"] = str(s["kind"]) + ("" if grid == "time" else f" ({grid})")
            t["steps"] = int(s["steps"])
            frames.append(t)
    return pd.concat(frames, ignore_index=True).sort_values("steps") if frames else pd.DataFrame()


def draw_vs_steps(ax: Any, table: pd.DataFrame, column: str) -> None:
    """``column`` against sampler steps, one line per sampler kind, CI band where computed."""
    steps = sorted({int(x) for x in table["steps"]})
    for i, (kind, t) in enumerate(table.groupby("sampler", sort=True)):
        t = t[np.isfinite(t[column].to_numpy(float))]
        if t.empty:
            continue
        x, color = t["steps"].to_numpy(float), f"C{i % 10}"
        ax.plot(x, t[column].to_numpy(float), "-o", color=color, ms=4, lw=1.5, label=sampler_name(kind))
        lo, hi = f"{column}_ci_low", f"{column}_ci_high"
        if lo in t.columns and hi in t.columns:
            l, h = t[lo].to_numpy(float), t[hi].to_numpy(float)
            m = np.isfinite(l) & np.isfinite(h)
            if m.any():
                ax.fill_between(x[m], l[m], h[m], color=color, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xticks(steps, [str(n) for n in steps])
    ax.minorticks_off()
    ax.set_xlabel("sampler steps per stage (model evaluations)", fontsize=8)
    ax.set_ylabel(axis_label(column, [table]), fontsize=8)
    ax.grid(alpha=0.3)


def steps_plot(spec: FigureSpec, results: Sequence[VariantResult], png: Path, svg: Path | None = None) -> Path | None:
    """Exact alignment, CLIP score and FD (rows) against steps at each w (columns), one line per sampler.
    None (and no file) when no variant has any metric value."""
    table = steps_table(results)
    metrics = [c for c in ("alignment", "clip_score", "fd") if not table.empty and has_values(table, c)]
    if not metrics:
        for p in (png, svg):
            if p is not None:
                Path(p).unlink(missing_ok=True)
        return None
    weights = sorted({float(w) for w in table["guidance_weight"]})
    fig = Figure(figsize=(4.6 * len(weights), 3.6 * len(metrics) + 0.9))
    for r, column in enumerate(metrics):
        for c, w in enumerate(weights):
            ax = fig.add_subplot(len(metrics), len(weights), r * len(weights) + c + 1)
            draw_vs_steps(ax, table[table["guidance_weight"].astype(float) == w], column)
            if column == "alignment":
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{AXIS_NAMES[column]}, w = {w:g}{' (no guidance)' if w == 1 else ''}", fontsize=9)
            ax.legend(fontsize=7, loc="best")
    random = any(r.info.get("random_weights") for r in results)
    fig.suptitle(f"{spec.title} ({n_text([table])}){' - RANDOM WEIGHTS' if random else ''}\n{spec.paper}",
                 fontsize=10, parse_math=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save_figure(fig, png, svg)
    return png


def samples_plot(spec: FigureSpec, results: Sequence[VariantResult], png: Path, n_prompts: int = 2) -> Path | None:
    """The first prompts' images across w, one row per (prompt, variant): the same seed in every cell of
    a prompt's rows, so rows differ only by the variant's setting."""

    per_variant = [(r, *grid_rows(r.run_dir, n_prompts)) for r in results]
    if not per_variant:
        return None
    weights = per_variant[0][1]
    rows = []
    for k in range(n_prompts):
        for r, w, grid in per_variant:
            if k < len(grid) and w == weights:
                g = grid[k]
                rows.append((wrap_caption(r.variant.label, 30, 2) + "\n" + wrap_caption(g.prompt, 30, 3),
                             f"{g.category}  seed {g.seed}", g.images))
    return draw_grid(rows, weights, png, title=f"{spec.title}: samples (same seed across a prompt's rows)")


def write_readme(spec: FigureSpec, results: Sequence[VariantResult], skipped: Sequence[Variant], out: Path,
                 wall: float) -> Path:
    """What the figure is, what the paper found, the sizes, each arm's note and wall time."""

    s = spec.size
    lines = [f"# {md_escape(spec.title)}", "", f"Reproduces: {md_escape(spec.paper)}", "",
             f"Paper: {md_escape(spec.expect)}", ""]
    if spec.note:
        lines += [md_escape(spec.note), ""]
    if any(r.info.get("random_weights") for r in results):
        lines += ["> **RANDOM WEIGHTS: at least one variant ran without a trained checkpoint; its curve says nothing "
                  "about a trained model.**", ""]
    steps = (f"{s.steps} base + {show(s.sr_steps)} SR" if s.steps is not None else
             f"each variant's own base + {'the same' if s.sr_steps is None else s.sr_steps} SR")
    lines += [f"Size: {s.prompts} prompts ({md_escape(spec.prompts)}), w = {md_escape(show(list(s.weights)))}, "
              f"{steps} sampler steps, model {md_escape(spec.model)}, metrics "
              f"{md_escape(spec.metrics)}, seed {spec.seed}. Wall time of this invocation: {wall / 60:.1f} min "
              "(variants reused from an earlier invocation count their original time below).", "",
             "| variant | note | images | wall time (s) | run directory |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {md_escape(r.variant.label)} | {md_escape(r.variant.note)} | {r.info.get('num_images', '')} | "
                     f"{r.wall_time_s:.0f}{' (reused)' if r.reused else ''} | {md_escape(str(r.run_dir))} |")
    for v in skipped:
        lines.append(f"| {md_escape(v.label)} | skipped: set its model or checkpoint (see the figure config) | | | |")
    lines += ["", f"Files: {spec.name}.png / .svg (plots), {spec.name}_samples.png (the first prompts across w, "
                  f"per variant), {spec.name}.csv (every metrics row of every variant), runs/*/report.html (each "
                  "variant's own report).", ""]
    path = out / "README.md"
    rundir.atomic_write_text("\n".join(lines), path)
    return path


def main() -> None:
    @hydra.main(version_base="1.3", config_path="../conf", config_name="figures")
    def _main(cfg: DictConfig) -> None:
        d = OmegaConf.to_container(cfg, resolve=True)
        spec = FigureSpec.from_dict(d["figure"], d["run"])
        n = num_images(spec)
        est = image_steps(spec) * float(d["sec_per_image"]) / REF_STEPS / 60
        print(f"figure {spec.name}: {len(plan(spec))} variant(s), {n} images; estimate about {est:.0f} min at "
              f"{d['sec_per_image']} s per image of {REF_STEPS} sampler steps (sec_per_image=...), scaled by each "
              "variant's base + SR steps; metrics not included", flush=True)
        for v, o in plan(spec):
            print(f"  {v.label}: {' '.join(o)}")
        if d.get("dry_run"):
            return
        try:
            make_figure(spec, str(d["out_dir"]))
        except FigureError as e:
            raise SystemExit(f"bench.figures: {e}") from None

    _main()


if __name__ == "__main__":
    main()
