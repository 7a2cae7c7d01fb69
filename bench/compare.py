"""Compare runs: their Pareto curves on one figure, legends from their config differences, one CSV.

    python -m bench.compare runs=[DIR1,DIR2,...] out=DIR [category=all]
    python -m bench.compare runs=[results/multirun/2025-01-01/12-00-00] out=DIR   # a Hydra multirun

A run's legend entry names only the settings that differ between the compared runs, read
from each run's resolved config (``.hydra/config.yaml``) and config-group choices
(``.hydra/hydra.yaml``), e.g. ``model=imagen_base sampler.steps=25``. A key that a group
choice already explains (``model=imagen_tiny`` changes ``model.stages...``) is not repeated.

Writes ``DIR/compare.csv`` (every metrics row of every run, with ``run``, ``label`` and one
column per differing setting), ``DIR/pareto.png`` / ``.svg`` and, when the runs have
alignment values, ``DIR/alignment.png``.

Paired verdicts (bench.paired): with two or more runs, ``DIR/paired.csv`` holds per (metric, guidance
weight, category) the values ``a`` (the first run) and ``b``, ``diff = b - a``, its interval
``[ci_low, ci_high]`` and a verdict for b against a: ``better``, ``worse`` or ``no evidence``.
CLIP score and exact alignment: paired bootstrap over prompts (same prompt ids, same resample for both
runs); FD / KID / CMMD: the runs' own calibrated half-widths in quadrature (ignores the pairing:
conservative). With more than two runs every run is paired with the first (column ``run``: the b run).
Settings ``paired.n_boot``, ``paired.ci_level``, ``paired.seed`` (conf/compare.yaml).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig, ListConfig

from bench import paired as pairedstats
from bench import rundir
from bench.cli import missing_arguments
from bench.report.pareto import (Curve, category_rows, describe_column, draw_vs_w, has_values, pareto_figure,
                                 save_figure)

log = logging.getLogger(__name__)
_UNSET = "<unset>"


class CompareError(ValueError):
    """The runs cannot be compared; the message names the directory or file and what to do."""


@dataclass
class Comparison:
    runs: list[Path]
    labels: list[str]
    settings: list[dict[str, str]]  # per run: differing key -> shown value
    table: pd.DataFrame
    csv: Path
    pareto: Path | None
    alignment: Path | None
    paired: pd.DataFrame | None = None
    paired_csv: Path | None = None


def expand_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run directories from paths that are run directories or Hydra multirun folders (numbered
    subfolders, in numeric order); duplicates dropped, order kept."""
    out: list[Path] = []
    for p in map(Path, paths):
        if rundir.is_run_dir(p):
            found = [p]
        elif p.is_dir():
            found = sorted((d for d in p.iterdir() if d.is_dir() and d.name.isdigit() and rundir.is_run_dir(d)),
                           key=lambda d: int(d.name))
            if not found:
                raise CompareError(f"{p}: neither a run directory (no manifest.csv or metrics.csv) nor a Hydra "
                                   "multirun folder with numbered run subfolders")
        else:
            raise CompareError(f"{p}: no such directory")
        out += [d for d in found if d not in out]
    return out


def show(value: Any) -> str:
    """A config value as Hydra override syntax would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "s": [{"k": 2}]}`` -> ``{"a.b": 1, "s.0.k": 2}``; lists of scalars stay values."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
    elif isinstance(d, list) and any(isinstance(v, (dict, list)) for v in d):
        for i, v in enumerate(d):
            out.update(flatten_config(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d
    return out


def run_config(run_dir: Path) -> dict[str, Any]:
    cfg = rundir.read_config(run_dir)
    if cfg is None:
        log.warning("%s has no .hydra/config.yaml: its legend cannot name its settings", run_dir)
    return cfg or {}


def group_choices(run_dir: Path, cfg: dict[str, Any]) -> dict[str, str]:
    """Config-group choices (``model: imagen_base``): from .hydra/hydra.yaml, else the group=option
    overrides, else each group's ``name`` key."""
    hydra_cfg = rundir.read_hydra_file(run_dir, "hydra") or {}
    choices = ((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    out = {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra") and v is not None}
    for o in rundir.read_hydra_file(run_dir, "overrides") or []:
        key, _, val = str(o).lstrip("+~").partition("=")
        if val and "." not in key and not val.startswith("[") and key in cfg and isinstance(cfg[key], dict):
            out.setdefault(key, val)
    for g, v in cfg.items():
        if isinstance(v, dict) and "name" in v and g not in out:
            out[g] = show(v["name"])
    return out


def differing_settings(configs: Sequence[dict[str, Any]], choices: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Per run, the settings that differ between runs, as ``{key: value}`` in config order.

    A group whose choice differs appears as ``group: option``; a key under such a group appears
    only when two runs with the same option still differ in it.
    """
    flat = [flatten_config(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    shown = [{k: show(f.get(k, _UNSET)) if k in f else _UNSET for k in keys} for f in flat]
    diff = [k for k in keys if len({s[k] for s in shown}) > 1]
    groups = list(dict.fromkeys(g for ch in choices for g in ch))
    changed = [g for g in groups if len({ch.get(g, _UNSET) for ch in choices}) > 1]
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k.split(".")[0], i)
    changed.sort(key=lambda g: first.get(g, len(keys)))

    def explained(k: str) -> bool:
        g = k.split(".")[0]
        if g not in changed:
            return False
        by_choice: dict[str, set[str]] = {}
        for ch, s in zip(choices, shown):
            by_choice.setdefault(ch.get(g, _UNSET), set()).add(s[k])
        return all(len(v) == 1 for v in by_choice.values())

    keep = []
    for k in diff:
        g = k.split(".")[0]
        if g in changed and (k == f"{g}.name" or explained(k)):
            continue  # the group choice says it
        keep.append(k)
    out = []
    for ch, s in zip(choices, shown):
        d = {g: ch.get(g, _UNSET) for g in changed}
        d.update({k: s[k] for k in keep})
        out.append(d)
    return out


def config_labels(run_dirs: Sequence[Path]) -> tuple[list[str], list[dict[str, str]]]:
    """Legend labels ("model=imagen_base sampler.steps=25") and the differing settings per run;
    the directory name where no setting differs."""
    configs = [run_config(d) for d in run_dirs]
    settings = differing_settings(configs, [group_choices(d, c) for d, c in zip(run_dirs, configs)])
    labels = [" ".join(f"{k}={v}" for k, v in s.items()) for s in settings]
    if len(set(labels)) < len(labels) or not all(labels):
        labels = [f"{lab} ({d.name})".strip() if lab else str(d.name) for lab, d in zip(labels, run_dirs)]
    return labels, settings


def combined_table(run_dirs: Sequence[Path], labels: Sequence[str], settings: Sequence[dict[str, str]]) -> pd.DataFrame:
    frames = []
    for d, lab, s in zip(run_dirs, labels, settings):
        f = d / rundir.METRICS
        if not f.is_file():
            raise CompareError(f"{f} does not exist: score the run first (python -m bench.metrics.score_run {d})")
        m = rundir.read_metrics(f)
        front = pd.DataFrame({"run": [str(d)] * len(m), "label": [lab] * len(m),
                              **{k: [v] * len(m) for k, v in s.items()}})
        frames.append(pd.concat([front, m.reset_index(drop=True)], axis=1))
    return pd.concat(frames, ignore_index=True)


def paired_table(run_dirs: Sequence[Path], n_boot: int = 2000, ci_level: float = 0.95,
                 seed: int = 0) -> pd.DataFrame | None:
    """Each run after the first against the first (bench.paired.compare_pair); None for one run. A ``run``
    column (the b run) leads when there are more than two runs."""
    if len(run_dirs) < 2:
        return None
    frames = []
    for d in run_dirs[1:]:
        try:
            t = pairedstats.compare_pair(run_dirs[0], d, n_boot=n_boot, ci_level=ci_level, seed=seed)
        except pairedstats.PairedError as e:
            raise CompareError(str(e)) from None
        if len(run_dirs) > 2:
            t.insert(0, "run", str(d))
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def compare_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike, category: str = "all",
                 labels: Sequence[str] | None = None, n_boot: int = 2000, ci_level: float = 0.95,
                 seed: int = 0) -> Comparison:
    """Draw the runs' Pareto curves (rows of ``category``) on one figure and write the combined CSV."""
    run_dirs = expand_runs(runs)
    if not run_dirs:
        raise CompareError("no runs given: runs=[DIR1,DIR2,...]")
    auto, settings = config_labels(run_dirs)
    if labels:
        if len(labels) != len(run_dirs):
            raise CompareError(f"labels has {len(labels)} entries for {len(run_dirs)} runs")
        auto = list(labels)
    table = combined_table(run_dirs, auto, settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "compare.csv"
    rundir.atomic_write_text(table.to_csv(index=False), csv)
    curves = [Curve(lab, category_rows(table[table["run"] == str(d)], category)) for d, lab in zip(run_dirs, auto)]
    if not any(len(c.table) for c in curves):
        raise CompareError(f"no metrics rows with category={category!r} in these runs")
    spaces = {describe_column([c.table], "fd_extractor") for c in curves} | \
             {describe_column([c.table], "clip_model") for c in curves}
    warn = " - WARNING: different feature spaces, not comparable" if len(spaces) > 2 else ""
    pareto = pareto_figure(curves, out / "pareto.png", out / "pareto.svg",
                           title=f"{len(curves)} runs, category {category}{warn}")
    paired = paired_table(run_dirs, n_boot=n_boot, ci_level=ci_level, seed=seed)
    paired_csv = None
    if paired is not None:
        paired_csv = out / "paired.csv"
        rundir.atomic_write_text(paired.to_csv(index=False), paired_csv)
    return Comparison(run_dirs, auto, settings, table, csv, pareto, _alignment(curves, out / "alignment.png"),
                      paired, paired_csv)


def _alignment(curves: list[Curve], png: Path) -> Path | None:
    if not any(has_values(c.table, "alignment") for c in curves):
        png.unlink(missing_ok=True)
        return None
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    draw_vs_w(ax, curves, "alignment")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Exact alignment vs guidance weight", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png)
    return png


def main() -> None:
    missing = missing_arguments(sys.argv[1:], ("runs", "out"))
    if missing and not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg ... to Hydra
        raise SystemExit(f"bench.compare: missing {', '.join(missing)}; "
                         "usage: python -m bench.compare runs=[DIR1,DIR2,...] out=DIR [category=all]")

    @hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
    def _main(cfg: DictConfig) -> None:
        runs = [str(r) for r in cfg.runs] if isinstance(cfg.runs, ListConfig) else [str(cfg.runs)]
        labels = [str(x) for x in cfg.labels] if cfg.labels else None
        try:
            c = compare_runs(runs, str(cfg.out), category=str(cfg.category), labels=labels,
                             n_boot=int(cfg.paired.n_boot), ci_level=float(cfg.paired.ci_level),
                             seed=int(cfg.paired.seed))
        except CompareError as e:
            raise SystemExit(f"bench.compare: {e}") from None
        for d, lab in zip(c.runs, c.labels):
            print(f"{lab}: {d}")
        cols = [k for k in ("label", "guidance_weight", "num_images", "fd", "clip_score", "alignment") if k in c.table]
        view = c.table[c.table["category"] == str(cfg.category)][cols]
        print(view.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if c.paired is not None:
            print(f"\npaired verdicts against {c.runs[0]} (diff = b - a; CLIP score / alignment: paired bootstrap "
                  "over prompts; FD / KID / CMMD: independent half-widths in quadrature, ignores the pairing: "
                  "conservative):")
            print(pairedstats.format_paired(c.paired))
        print(f"wrote {c.csv}" + (f", {c.pareto}" if c.pareto else " (no FD / CLIP score: no Pareto plot)")
              + (f", {c.alignment}" if c.alignment else "") + (f", {c.paired_csv}" if c.paired_csv else ""))

    _main()


if __name__ == "__main__":
    main()
