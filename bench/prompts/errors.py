"""Strict reading of prompt files, and the error it raises.

:func:`read_prompt_table` reads any table of prompts (CSV, or TSV with quoting off) with
the ``csv`` module. Every problem in a prompt file (missing file, missing column, empty
prompt, text that is not UTF-8, a duplicate id) raises :class:`PromptFileError` naming the
file and the line. Nothing is skipped silently.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .records import PromptRecord

# Longer prompts are refused: text encoders read at most a few hundred tokens (T5 in Imagen: 128),
# the longest prompt of DrawBench / PartiPrompts / COCO has under 400 characters, and a megabyte
# "prompt" is a broken file, not a caption.
MAX_PROMPT_CHARS = 10_000


class PromptFileError(ValueError):
    """A prompt file is missing or malformed; the message names the file and line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)


class PromptDownloadError(PromptFileError):
    """A prompt file could not be downloaded, or the download did not match its pinned sha256."""


def read_text(path: str | Path) -> str:
    """The whole file decoded as UTF-8 (a leading byte-order mark is dropped); raises
    :class:`PromptFileError` for a missing file or bytes that are not UTF-8 (with the line)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise PromptFileError("file not found", p) from None
    except IsADirectoryError:
        raise PromptFileError("is a directory, expected a prompt file", p) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PromptFileError(f"not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start}); "
                              "save the file as UTF-8", p, line) from None


@dataclass(frozen=True)
class Row:
    """One data row of a table: the line it starts on (1-based, the header is line 1) and its
    values by lower-cased column name."""

    line: int
    values: dict[str, str]


def read_rows(path: str | Path, *, required: Sequence[str], delimiter: str = ",",
              quoting: int = csv.QUOTE_MINIMAL) -> tuple[list[str], list[Row]]:
    """Parse a CSV/TSV with a header row using the ``csv`` module. Column names match
    case-insensitively; ``required`` columns must exist; every row must have as many fields as
    the header (blank lines included: they are errors, not skipped). Returns the lower-cased
    header and the rows."""
    p = Path(path)
    text = read_text(p)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise PromptFileError(f"cannot parse header: {e}", p, 1) from None
    if header is None:
        raise PromptFileError(f"empty file, expected a header with columns {', '.join(required)}", p, 1)
    names = [h.strip().lower() for h in header]
    for name in names:
        if names.count(name) > 1:
            raise PromptFileError(f"column {name!r} appears twice in the header", p, 1)
    missing = [c for c in required if c.lower() not in names]
    if missing:
        raise PromptFileError(f"missing column(s) {', '.join(map(repr, missing))}; the header has "
                              f"{', '.join(map(repr, header))}", p, 1)
    rows: list[Row] = []
    line = reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            hint = (f" (a prompt may hold at most {MAX_PROMPT_CHARS:,} characters)"
                    if "field larger than field limit" in str(e) else "")
            raise PromptFileError(f"cannot parse row: {e}{hint}", p, line) from None
        if not fields:
            raise PromptFileError("empty line (every line after the header must hold one prompt)", p, line)
        if len(fields) != len(names):
            raise PromptFileError(f"expected {len(names)} fields like the header, got {len(fields)}"
                                  + (" (an unquoted delimiter inside a prompt?)" if len(fields) > len(names)
                                     else ""), p, line)
        rows.append(Row(line, dict(zip(names, fields))))
        line = reader.line_num + 1
    return names, rows


def require_text(value: str, what: str, path: str | Path, line: int) -> str:
    """``value`` unchanged, or :class:`PromptFileError` when it is empty or only whitespace."""
    if not value.strip():
        raise PromptFileError(f"empty {what}", path, line)
    return value


def make_record(path: str | Path, line: int, id: str, text: str, category: str,
                truth: str | None = None) -> PromptRecord:
    """A :class:`PromptRecord`, with any validation error reported at ``path:line``."""
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptFileError(f"prompt of {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                              "(MAX_PROMPT_CHARS): is this a prompt file?", path, line)
    try:
        return PromptRecord(id, text, category, truth)
    except ValueError as e:
        raise PromptFileError(str(e), path, line) from None


def check_unique(records: Iterable[tuple[int, PromptRecord]], path: str | Path) -> None:
    """Raise :class:`PromptFileError` at the second line that repeats an id."""
    seen: dict[str, int] = {}
    for line, rec in records:
        if rec.id in seen:
            raise PromptFileError(f"duplicate prompt id {rec.id!r} (first on line {seen[rec.id]})", path, line)
        seen[rec.id] = line


def read_prompt_table(path: str | Path, *, prefix: str, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL,
                      default_category: str | None = None) -> list[PromptRecord]:
    """Records from a table with a ``prompt`` column, a ``category`` column (required unless
    ``default_category`` is given) and an optional ``id`` column, in file order. Prompts are
    kept exactly; categories and ids are stripped. Ids default to ``<prefix>-0001`` ..."""
    required = ("prompt",) if default_category is not None else ("prompt", "category")
    names, rows = read_rows(path, required=required, delimiter=delimiter, quoting=quoting)
    out = []
    for i, r in enumerate(rows, start=1):
        text = require_text(r.values["prompt"], "prompt", path, r.line)
        category = (require_text(r.values["category"], "category", path, r.line).strip()
                    if "category" in names else str(default_category))
        pid = require_text(r.values["id"], "id", path, r.line).strip() if "id" in names else f"{prefix}-{i:04d}"
        out.append((r.line, make_record(path, r.line, pid, text, category)))
    check_unique(out, path)
    return [rec for _, rec in out]
