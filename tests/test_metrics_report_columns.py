"""The Pareto plot's fidelity axis (metrics.pareto_fd: fd | fd_excess | fd_inf) and the new columns in the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bench.report import Curve, draw_pareto
from bench.report.report import metrics_blocks, pareto_fd


def _table() -> pd.DataFrame:
    w = np.array([1.0, 3.0, 7.5])
    fd = np.array([40.0, 30.0, 35.0])
    return pd.DataFrame({
        "guidance_weight": w, "category": "all", "num_images": 90, "fd": fd, "fd_ci_low": fd - 5,
        "fd_ci_high": fd + 6, "fd_real": 20.0, "fd_excess": fd - 20, "fd_excess_ci_low": fd - 28,
        "fd_excess_ci_high": fd - 12, "fd_inf": [12.0, np.nan, 9.0], "fd_extractor": "x/fd",
        "clip_score": [20.0, 22.0, 23.0], "clip_score_ci_low": [19.0, 21.0, 22.0],
        "clip_score_ci_high": [21.0, 23.0, 24.0], "cmmd": 0.1, "cmmd_ci_low": 0.05, "cmmd_ci_high": 0.15,
        "cmmd_estimator": "unbiased", "precision": 0.7, "recall": 0.5, "density": 0.9, "coverage": 0.6, "prdc_k": 3,
    })


@pytest.mark.parametrize("column", ["fd", "fd_excess", "fd_inf"])
def test_pareto_plots_the_chosen_fd_column_with_its_interval(column):
    t = _table()
    ax = Figure().add_subplot(1, 1, 1)
    notes = draw_pareto(ax, [Curve("", t)], fd_column=column)
    line = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
    ok = t[column].notna()
    assert list(line.get_ydata()) == t.loc[ok, column].tolist()
    assert ("FD-infinity" in ax.get_ylabel()) == (column == "fd_inf")
    floors = [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert floors == {"fd": [20.0], "fd_excess": [0.0], "fd_inf": []}[column]
    bars = [c for c in ax.collections if c.get_segments()]
    assert bool(bars) and len(bars) == (1 if column == "fd_inf" else 2)  # fd_inf: no vertical bars
    if column == "fd_inf":
        assert any("w = 3 left out" in n for n in notes) and any("no interval" in n for n in notes)
    with pytest.raises(ValueError, match="fd_column"):
        draw_pareto(ax, [Curve("", t)], fd_column="kid")


def test_report_reads_pareto_fd_from_metrics_json_and_shows_the_new_columns(tmp_path):
    assert pareto_fd(tmp_path) == "fd"
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"pareto_fd": "fd_excess"}}))
    assert pareto_fd(tmp_path) == "fd_excess"
    header, rows = next(b for b in metrics_blocks(_table()) if b[0] == "table")[1:]
    for h in ("FD - floor (CI)", "FD-inf", "precision", "coverage", "CMMD (CI)"):
        assert h in header, h
    assert rows[0][header.index("CMMD (CI)")] == "0.1 (0.05, 0.15)"
