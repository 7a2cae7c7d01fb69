"""Ship the last phase of a training chain as a stage:

    python -m bench.ship_chain CHAIN_DIR OUT_DIR        # make ship-base: runs/layout -> checkpoints/base

A chain (``make train-layout``) is one directory per phase, named so that they sort in training order
(``1_mix`` ... ``9_counting``), each continuing the one before (``recipe.continue_from``). ``OUT_DIR``
gets the last phase's ``ema.safetensors`` (what sampling loads), ``loss.csv`` with every phase's rows
in order (seconds summed across the phases) and its ``loss.png`` (each phase's start marked), and ``recipe.json`` listing each
phase's own ``recipe.json`` under its name, so the shipped stage says how all of it was trained.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench.training import LOSS_FILE, LOSS_PNG, plot_loss

EMA = "ema.safetensors"


def chain_phases(chain: Path) -> list[Path]:
    """The phase directories of ``chain`` in training order; each must hold a finished phase."""
    phases = sorted((p for p in chain.iterdir() if p.is_dir() and (p / "recipe.json").exists()),
                    key=lambda p: (int(p.name.split("_")[0]) if p.name.split("_")[0].isdigit() else 0, p.name))
    if not phases:
        raise FileNotFoundError(f"{chain}: no phase directories (each with recipe.json) to ship")
    missing = [str(p) for p in phases if not (p / LOSS_FILE).exists() or not (p / EMA).exists()]
    if missing:
        raise FileNotFoundError(f"phases without {LOSS_FILE} or {EMA}: {missing}")
    return phases


def chain_loss(phases: list[Path]) -> tuple[list[str], list[tuple[int, str]]]:
    """Every phase's ``loss.csv`` rows in order, seconds counted on across the phases, and each phase's
    (first step, name); the steps must follow on (a phase continues the last one's step)."""
    rows, starts, offset, last_step = [], [], 0.0, -1
    for p in phases:
        phase_rows = [r.split(",") for r in (p / LOSS_FILE).read_text().splitlines() if r]
        if phase_rows and int(phase_rows[0][0]) != last_step + 1:
            raise ValueError(f"{p}: starts at step {phase_rows[0][0]}, the phase before ended at {last_step}")
        starts += [(last_step + 1, p.name)]
        for step, loss, seconds in phase_rows:
            rows.append(f"{step},{loss},{offset + float(seconds):.1f}")
        if phase_rows:
            last_step, offset = int(phase_rows[-1][0]), offset + float(phase_rows[-1][2])
    return rows, starts


def ship(chain: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir``'s stage files from the chain; returns its ``ema.safetensors``."""
    phases, out = chain_phases(Path(chain)), Path(out_dir)
    rows, starts = chain_loss(phases)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(phases[-1] / EMA, out / EMA)
    (out / LOSS_FILE).write_text("\n".join(rows) + "\n")
    plot_loss(out / LOSS_FILE, out / LOSS_PNG, marks=starts)
    recipes = {p.name: json.loads((p / "recipe.json").read_text()) for p in phases}
    (out / "recipe.json").write_text(json.dumps({"chain": str(chain), "phases": recipes}, indent=2))
    return out / EMA


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m bench.ship_chain CHAIN_DIR OUT_DIR")
    print(ship(sys.argv[1], sys.argv[2]))
