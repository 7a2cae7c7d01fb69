"""DrawBench (Saharia et al. 2022): 200 prompts in 11 categories, rated by people.

The file ``drawbench.csv`` has the columns ``prompt, category``; prompts are kept exactly as
written (the Misspellings and Rare Words categories are deliberately odd). Ids are
``drawbench-0001`` ... in file order.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .errors import read_prompt_table
from .fetch import DataFile, ensure_data_file
from .records import PromptRecord

# Per-category counts of the 200 prompts (SOURCES.md of the prompt data).
CATEGORY_COUNTS: dict[str, int] = {
    "Colors": 25, "Conflicting": 10, "Counting": 19, "DALL-E": 20, "Descriptions": 20,
    "Gary Marcus et al.": 10, "Misspellings": 10, "Positional": 20, "Rare Words": 7, "Reddit": 38, "Text": 21,
}


def from_origin(data: bytes) -> bytes:
    """Convert the public mirror's ``DrawBench.csv`` (header ``Prompts,Category``, a trailing
    space in ``Gary Marcus et al. ``, no final newline) to the project's ``drawbench.csv``:
    header ``prompt,category``, categories stripped, rows re-written by ``csv.writer``."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    if not rows or [h.strip().lower() for h in rows[0]] not in (["prompts", "category"], ["prompt", "category"]):
        raise ValueError(f"expected the header Prompts,Category, got {rows[0] if rows else 'an empty file'}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["prompt", "category"])
    for row in rows[1:]:
        if len(row) != 2:
            raise ValueError(f"expected 2 fields per row, got {row!r}")
        writer.writerow([row[0], row[1].strip()])
    return out.getvalue().encode("utf-8")


DRAWBENCH_FILE = DataFile(
    name="drawbench.csv",
    url="https://raw.githubusercontent.com/mwomick/VaReSynth/06b6b877879a172a26e484b045a1049cb8f9a050/"
        "data/DrawBench.csv",
    sha256="bb80aa245d10307b3a21057f3079de91839cb30a7caa15619aa2ae96bafdc059",
    description="DrawBench, 200 prompts, columns prompt,category",
    normalize=from_origin,
)


def read_drawbench(path: str | Path) -> list[PromptRecord]:
    """Parse a DrawBench CSV (columns ``prompt, category``) into records in file order."""
    return read_prompt_table(path, prefix="drawbench")


def load_drawbench(path: str | Path | None = None, *, download: bool = False) -> list[PromptRecord]:
    """DrawBench from ``path``, else from ``$BENCH_DATA_DIR/drawbench.csv`` (downloaded into
    the data directory first when missing and ``download`` is allowed)."""
    return read_drawbench(path if path is not None else ensure_data_file(DRAWBENCH_FILE, download=download))
