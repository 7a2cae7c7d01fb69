"""Ship the last phase of a training chain as a stage:

    python -m bench.ship_chain CHAIN_DIR OUT_DIR [STARTED_FROM]   # make ship-base: runs/layout -> checkpoints/base

A chain (``make train-layout``) is one directory per phase, named ``<number>_<name>`` in training order
(``1_mix`` ... ``10_attn32``), each continuing the one before (``recipe.continue_from``). ``OUT_DIR``
gets the last phase's ``ema.safetensors`` (what sampling loads), ``loss.csv`` with every phase's rows
in order (seconds summed across the phases) and its ``loss.png`` (each phase's start marked), and
``recipe.json`` listing each phase's own ``recipe.json`` under its name, with the file the chain started
from (``STARTED_FROM``, by path and sha256: the path may since hold other weights), so the shipped stage
says how all of it was trained. Every phase must have reached its end: ``recipe.steps``, its
``steps_after`` past its first step, or the stop an order phase wrote (``until.json``).
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from bench.order_stop import reached
from bench.rundir import file_sha256
from bench.training import LOSS_FILE, LOSS_PNG, plot_loss
from imagen.checkpoint import read_meta

EMA = "ema.safetensors"
PHASE_NAME = re.compile(r"^(\d+)_")


def chain_phases(chain: Path) -> list[Path]:
    """The phase directories of ``chain`` (those with a ``recipe.json``) in training order."""
    phases = [p for p in chain.iterdir() if p.is_dir() and (p / "recipe.json").exists()]
    if not phases:
        raise FileNotFoundError(f"{chain}: no phase directories (each with recipe.json) to ship")
    unnumbered = [p.name for p in phases if not PHASE_NAME.match(p.name)]
    if unnumbered:
        raise ValueError(f"{chain}: phase directories must be named <number>_<name>, not {unnumbered}")
    missing = [str(p) for p in phases if not (p / LOSS_FILE).exists() or not (p / EMA).exists()]
    if missing:
        raise FileNotFoundError(f"phases without {LOSS_FILE} or {EMA}: {missing}")
    return sorted(phases, key=lambda p: int(PHASE_NAME.match(p.name).group(1)))


def phase_end(phase: Path, recipe: dict, first_step: int) -> int:
    """The step count the phase trains to: where its order check stopped it, ``steps_after`` past its
    first step, or ``steps`` (``recipe``: the phase's ``recipe.json``)."""
    stopped = reached(phase)
    if stopped:
        return int(stopped["step"])
    recipe = recipe["recipe"]
    return first_step + recipe["steps_after"] if recipe.get("steps_after") is not None else recipe["steps"]


def chain_loss(phases: list[Path], recipes: dict[str, dict]) -> tuple[list[str], list[tuple[int, str]]]:
    """Every phase's ``loss.csv`` rows in order, seconds counted on across the phases, and each phase's
    (first step, name). Each phase must start where the one before ended and have reached its end."""
    rows, starts, offset, done = [], [], 0.0, 0
    for p in phases:
        phase_rows = [r.split(",") for r in (p / LOSS_FILE).read_text().splitlines() if r]
        first = int(phase_rows[0][0]) if phase_rows else done
        if first != done:
            raise ValueError(f"{p}: starts at step {first}, the phase before ended at step {done}")
        end, ema_step = phase_end(p, recipes[p.name], first), read_meta(p / EMA)["train_steps"]
        done = first + len(phase_rows)
        if done != end or ema_step != end:
            raise ValueError(f"{p}: unfinished (logged to step {done}, EMA at step {ema_step}, the phase ends "
                             f"at {end}); run it to its end")
        starts.append((first, p.name))
        rows += [f"{step},{loss},{offset + float(seconds):.1f}" for step, loss, seconds, *_ in phase_rows]
        offset += float(phase_rows[-1][2]) if phase_rows else 0.0
    return rows, starts


def ship(chain: str | Path, out_dir: str | Path, started_from: str | Path | None = None) -> Path:
    """Write ``out_dir``'s stage files from the chain; returns its ``ema.safetensors``."""
    phases, out = chain_phases(Path(chain)), Path(out_dir)
    recipes = {p.name: json.loads((p / "recipe.json").read_text()) for p in phases}
    rows, starts = chain_loss(phases, recipes)
    record = {"chain": str(chain), "phases": recipes}
    if started_from is not None:
        record["started_from"] = {"path": str(started_from), "sha256": file_sha256(started_from)}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(phases[-1] / EMA, out / EMA)
    (out / LOSS_FILE).write_text("\n".join(rows) + "\n")
    plot_loss(out / LOSS_FILE, out / LOSS_PNG, marks=starts)
    (out / "recipe.json").write_text(json.dumps(record, indent=2))
    return out / EMA


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m bench.ship_chain CHAIN_DIR OUT_DIR [STARTED_FROM]")
    print(ship(*sys.argv[1:]))
