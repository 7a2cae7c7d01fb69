"""Plots and reports of run directories: Pareto curves, alignment vs w, sample grids, report.md/html.

Nothing is drawn at import time. The run directory's tables are read through ``bench.rundir``.
"""
from .grid import grid_rows, write_grid
from .pareto import Curve, alignment_figure, category_rows, draw_pareto, draw_vs_w, pareto_figure
from .report import write_report, write_run_outputs

__all__ = ["Curve", "alignment_figure", "category_rows", "draw_pareto", "draw_vs_w", "grid_rows", "pareto_figure",
           "write_grid", "write_report", "write_run_outputs"]
