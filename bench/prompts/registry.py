"""One entry point for every prompt set: ``load_prompts(name, ...)``, called by the runs as
``load_prompts(**cfg.prompts)`` with the keys of ``conf/prompts/<name>.yaml``."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal, Sequence, get_args

from .coco import load_coco
from .drawbench import load_drawbench
from .errors import PromptFileError, check_unique, make_record, read_prompt_table, read_text
from .parti import load_parti
from .records import PromptRecord
from .shapes_set import shapes_prompts

PromptSetName = Literal["shapes", "drawbench", "coco", "parti", "file"]
PROMPT_SETS: tuple[str, ...] = get_args(PromptSetName)
USER_CATEGORY = "user"


def read_prompt_file(path: str | Path) -> list[PromptRecord]:
    """A user's prompt file, by extension: ``.txt`` one prompt per line (category ``user``);
    ``.csv`` columns ``prompt`` [, ``category``] [, ``id``]; ``.tsv`` the same, tab-separated
    with quoting off, like PartiPrompts. Ids default to ``user-0001`` ... in file order."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_prompt_table(p, prefix=USER_CATEGORY, default_category=USER_CATEGORY)
    if suffix == ".tsv":
        return read_prompt_table(p, prefix=USER_CATEGORY, delimiter="\t", quoting=csv.QUOTE_NONE,
                                 default_category=USER_CATEGORY)
    if suffix != ".txt":
        raise PromptFileError("unknown prompt file type; use .txt (one prompt per line), .csv or .tsv", p)
    lines = read_text(p).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    if not lines:
        raise PromptFileError("empty file, expected one prompt per line", p, 1)
    out = []
    for i, line in enumerate(lines, start=1):
        text = line[:-1] if line.endswith("\r") else line
        if not text.strip():
            raise PromptFileError("empty prompt (blank line)", p, i)
        out.append((i, make_record(p, i, f"{USER_CATEGORY}-{i:04d}", text, USER_CATEGORY)))
    check_unique(out, p)
    return [rec for _, rec in out]


def load_prompts(name: PromptSetName, *, limit: int | None = None, path: str | Path | None = None, n: int = 300,
                 seed: int = 0, categories: Sequence[str] | None = None,
                 download: bool = False) -> list[PromptRecord]:
    """The prompts of set ``name``.

    - ``path``: the file to read (required for ``file``; for drawbench/coco/parti it replaces
      the default ``$BENCH_DATA_DIR`` file; a ``.json`` COCO path is read as the official
      captions format). Not allowed for ``shapes``, which is generated.
    - ``n``, ``seed``: size and seed of the generated ``shapes`` set (ignored otherwise).
    - ``categories``: keep only these categories (each must exist in the set).
    - ``limit``: keep the first ``limit`` prompts in file order, after the category filter.
    - ``download``: allow downloading a missing drawbench/coco/parti file (sha256-checked).
    """
    if name not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {name!r}; choose one of {', '.join(PROMPT_SETS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"prompts.limit must be a positive integer or null, got {limit!r}")
    if name == "shapes":
        if path is not None:
            raise ValueError("prompts.path must be null for the generated shapes set")
        records = shapes_prompts(n, seed)
    elif name == "file":
        if path is None:
            raise ValueError("prompts=file needs prompts.path=<a .txt, .csv or .tsv file>")
        records = read_prompt_file(Path(path).expanduser())
    else:
        loader = {"drawbench": load_drawbench, "coco": load_coco, "parti": load_parti}[name]
        records = loader(None if path is None else Path(path).expanduser(), download=download)
    if categories is not None:
        wanted = list(categories)
        present = sorted({r.category for r in records})
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ValueError(f"prompts.categories: {unknown} not in prompt set {name!r}; "
                             f"its categories are {present}")
        records = [r for r in records if r.category in set(wanted)]
    return records[:limit] if limit is not None else records
