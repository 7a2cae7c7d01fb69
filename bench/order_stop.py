"""Order phases that run until the first step's order passes a threshold (``recipe.until_order``).

The layout curriculum's order phases (docs/base_history.md "The layout curriculum") teach the base which noun of
"A <relation> B" goes where. They escape a plateau late and suddenly, and at a step that differs between
runs: after the same fixed steps one run's first-step order was 0.945 and another's 0.692. So such a
phase checks, every ``every`` steps, the EMA weights' first-step order (``bench.first_step``: the share of
``bench.binding_gap``'s Positional probe scenes whose guided x0 estimate from pure noise puts each colour
on its side), and at its cap, and stops once it reaches ``at_least``; its ``steps`` is then the cap.

Each check appends a row to ``order.csv`` in the run directory (step, order, its 95% Wilson interval, the
mean margin); the check that stops writes ``until.json``, which a later call of the same phase reads to
train no further (a resumed run would otherwise go on to its cap).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from bench.first_step import first_step_order, order_summary
from bench.shapes import probe_scenes

ORDER_CSV, UNTIL_JSON = "order.csv", "until.json"
PROBE_N = 256   # bench.binding_gap's probe scenes: half of them Positional (about 120 with two colours)


def reached(out_dir: str | Path) -> dict | None:
    """The stop this run's phase already made (``until.json``), or None."""
    path = Path(out_dir) / UNTIL_JSON
    return json.loads(path.read_text()) if path.exists() else None


class OrderStop:
    """``stop_when`` for ``bench.training.Loop``: True at the first check whose order is >= ``at_least``."""

    def __init__(self, ema: torch.nn.Module, enc, out_dir: str | Path, at_least: float, every: int, cap: int,
                 seed: int = 0):
        self.ema, self.enc, self.out, self.at_least = ema, enc, Path(out_dir), at_least
        self.every, self.cap = every, cap   # checked every ``every`` steps and at the cap (``steps``)
        self.scenes, self.seed = probe_scenes(PROBE_N, seed), seed

    def measure(self) -> dict:
        """The EMA weights' first-step order on the probe scenes (``bench.first_step.order_summary``)."""
        return order_summary(first_step_order(self.ema, self.enc, self.scenes, seed=self.seed))

    def __call__(self, step: int) -> bool:
        return (step % self.every == 0 or step == self.cap) and self.check(step)

    def check(self, step: int) -> bool:
        """Measure, log the row, and (order >= at_least) write ``until.json``; True when it did."""
        s = self.measure()
        path = self.out / ORDER_CSV
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "order", "order_lo", "order_hi", "margin", "n"])
            w.writerow([step, f"{s['order']:.4f}", f"{s['order_lo']:.4f}", f"{s['order_hi']:.4f}",
                        f"{s['margin']:.6f}", s["n"]])
        if s["order"] < self.at_least:
            return False
        (self.out / UNTIL_JSON).write_text(json.dumps({"step": step, "at_least": self.at_least, **s}, indent=2))
        return True
