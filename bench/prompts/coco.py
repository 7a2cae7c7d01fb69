"""MS-COCO val2014 captions, one per image, category ``coco``.

Two formats are read:

- the 30k caption list ``coco30k_esd.csv`` (columns ``image_id, caption, evaluation_seed``;
  a ``prompt`` column is accepted in place of ``caption``), in file order;
- the official ``captions_val2014.json`` (``annotations``: ``id, image_id, caption``). It
  holds about five captions per image; the one with the smallest annotation ``id`` is
  kept, and images are ordered by that annotation id.

Captions are stripped and runs of whitespace collapsed to one space (some official
captions end in a newline), the same normalisation as the 30k list. Ids are
``coco-<image_id, 12 digits>``, as in COCO's file names (``COCO_val2014_000000203564.jpg``);
:func:`coco_image_id` maps an id back.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from .errors import PromptFileError, check_unique, make_record, read_rows, read_text, require_text
from .fetch import DataFile, ensure_data_file
from .records import PromptRecord

CATEGORY = "coco"
_ID = re.compile(r"^coco-(\d{12,})$")


def coco_prompt_id(image_id: int) -> str:
    """The prompt id of a COCO image id: ``coco-000000203564``."""
    return f"coco-{image_id:012d}"


def coco_image_id(prompt: PromptRecord | str) -> int:
    """The COCO image id encoded in a COCO prompt id (or record)."""
    pid = prompt.id if isinstance(prompt, PromptRecord) else prompt
    m = _ID.match(pid)
    if not m:
        raise ValueError(f"{pid!r} is not a COCO prompt id (expected coco-<12-digit image id>)")
    return int(m.group(1))


def _clean(caption: str) -> str:
    return " ".join(caption.split())


def from_origin(data: bytes) -> bytes:
    """Convert the origin list (rohitgandikota/erasing ``data/coco_30k.csv``: columns
    ``image_id`` zero-padded, ``source``, ``prompt``, ``evaluation_seed``) to the project's
    ``coco30k_esd.csv``: ``image_id`` as a plain integer, ``caption`` stripped and whitespace
    collapsed, ``evaluation_seed``; rows re-written by ``csv.writer``."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    if not rows:
        raise ValueError("empty file")
    names = [h.strip().lower() for h in rows[0]]
    text_col = "prompt" if "prompt" in names else "caption"
    try:
        i_id, i_text, i_seed = names.index("image_id"), names.index(text_col), names.index("evaluation_seed")
    except ValueError:
        raise ValueError(f"expected columns image_id, prompt, evaluation_seed; got {rows[0]}") from None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image_id", "caption", "evaluation_seed"])
    for row in rows[1:]:
        if len(row) != len(names):
            raise ValueError(f"expected {len(names)} fields per row, got {row!r}")
        writer.writerow([int(row[i_id]), _clean(row[i_text]), row[i_seed]])
    return out.getvalue().encode("utf-8")


COCO30K_FILE = DataFile(
    name="coco30k_esd.csv",
    url="https://raw.githubusercontent.com/rohitgandikota/erasing/3d10dd1b2df4ec4e74edcadac4200c7401585138/"
        "data/coco_30k.csv",
    sha256="949f4b982a0bfe0d5553c5562f0d47c03188887852bd3e71f868f261cb1d91d7",
    description="30,000 MS-COCO val2014 captions, columns image_id,caption,evaluation_seed",
    normalize=from_origin,
)


def _image_id(value: object, path: str | Path, line: int | None, where: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PromptFileError(f"{where}image_id must be an integer, got {value!r}", path, line)
    text = str(value).strip()
    if not text.isdigit():
        raise PromptFileError(f"{where}image_id must be a non-negative integer, got {value!r}", path, line)
    return int(text)


def read_coco_csv(path: str | Path) -> list[PromptRecord]:
    """Parse a COCO caption CSV (``image_id`` and ``caption`` or ``prompt``), in file order."""
    names, rows = read_rows(path, required=("image_id",))
    text_col = "caption" if "caption" in names else "prompt"
    if text_col not in names:
        raise PromptFileError("missing column 'caption' (or 'prompt')", path, 1)
    out = []
    for r in rows:
        image_id = _image_id(r.values["image_id"], path, r.line)
        text = _clean(require_text(r.values[text_col], "caption", path, r.line))
        out.append((r.line, make_record(path, r.line, coco_prompt_id(image_id), text, CATEGORY)))
    check_unique(out, path)
    return [rec for _, rec in out]


def read_coco_json(path: str | Path) -> list[PromptRecord]:
    """Parse an official COCO captions file (``captions_val2014.json``): one caption per
    image, the one with the smallest annotation id, images ordered by that id. Errors name
    the JSON line for syntax errors and ``annotations[i]`` for a bad entry."""
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise PromptFileError(f"invalid JSON: {e.msg}", path, e.lineno) from None
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(anns, list):
        raise PromptFileError("expected a COCO captions file: an object with an 'annotations' list", path)
    if not anns:
        raise PromptFileError("the 'annotations' list is empty", path)
    first: dict[int, tuple[int, str]] = {}
    seen_ids: dict[int, int] = {}
    for i, a in enumerate(anns):
        where = f"annotations[{i}]: "
        if not isinstance(a, dict) or not {"id", "image_id", "caption"} <= a.keys():
            raise PromptFileError(f"{where}expected an object with id, image_id, caption; got {a!r:.200}", path)
        ann_id = _image_id(a["id"], path, None, where + "annotation id: ")
        if ann_id in seen_ids:
            raise PromptFileError(f"{where}duplicate annotation id {ann_id} (first at annotations"
                                  f"[{seen_ids[ann_id]}])", path)
        seen_ids[ann_id] = i
        image_id = _image_id(a["image_id"], path, None, where)
        caption = a["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise PromptFileError(f"{where}empty caption for image {image_id}", path)
        if image_id not in first or ann_id < first[image_id][0]:
            first[image_id] = (ann_id, caption)
    ordered = sorted(first.items(), key=lambda kv: kv[1][0])
    return [PromptRecord(coco_prompt_id(image_id), _clean(caption), CATEGORY) for image_id, (_, caption) in ordered]


def read_coco(path: str | Path) -> list[PromptRecord]:
    """COCO captions from a ``.json`` (official format) or a ``.csv`` (caption list)."""
    return read_coco_json(path) if str(path).lower().endswith(".json") else read_coco_csv(path)


def load_coco(path: str | Path | None = None, *, download: bool = False) -> list[PromptRecord]:
    """COCO captions from ``path``, else from ``$BENCH_DATA_DIR/coco30k_esd.csv`` (downloaded
    into the data directory first when missing and ``download`` is allowed)."""
    return read_coco(path if path is not None else ensure_data_file(COCO30K_FILE, download=download))
