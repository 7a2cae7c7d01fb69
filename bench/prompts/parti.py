"""PartiPrompts (Yu et al. 2022): 1,632 prompts in 12 categories and 11 challenge types.

``partiprompts.tsv`` has the columns ``Prompt, Category, Challenge, Note``. It is parsed
with quoting off (``csv.QUOTE_NONE``): quotes are part of the text, and one prompt begins
with a double quote. Prompts are kept exactly (a few have leading or trailing spaces).
Ids are ``parti-0001`` ... in file order; the record's category is the Parti Category.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import read_prompt_table
from .fetch import DataFile, ensure_data_file
from .records import PromptRecord

PARTI_FILE = DataFile(
    name="partiprompts.tsv",
    url="https://raw.githubusercontent.com/google-research/parti/2c99f6652cbc7f0d0441aa91f4c7e7055bcb0071/"
        "PartiPrompts.tsv",
    sha256="fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb",
    description="PartiPrompts, 1,632 prompts, tab-separated Prompt,Category,Challenge,Note",
)


def read_parti(path: str | Path) -> list[PromptRecord]:
    """Parse PartiPrompts TSV into records in file order."""
    return read_prompt_table(path, prefix="parti", delimiter="\t", quoting=csv.QUOTE_NONE)


def load_parti(path: str | Path | None = None, *, download: bool = False) -> list[PromptRecord]:
    """PartiPrompts from ``path``, else from ``$BENCH_DATA_DIR/partiprompts.tsv`` (downloaded
    into the data directory first when missing and ``download`` is allowed)."""
    return read_parti(path if path is not None else ensure_data_file(PARTI_FILE, download=download))
