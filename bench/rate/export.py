"""``python -m bench.rate export``: a campaign's latest answers as the rating page downloads them.

CSV: ``rater_id, pair_id, question, answer, timestamp`` (``\\n`` line ends, quoted only where
needed), one row per rater, pair and question, raters in order and pairs in ``pairs.csv``
order; JSON (``.json``): ``{"export_id", "ratings": [...]}`` with the same rows. Attention checks
are left out (their consistency is on the admin page); ``timestamp`` is when the server stored
the answer. ``bench.ratings`` reads either file.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from bench import rundir
from bench.pairs import BlindPair
from bench.rate.store import Store

RATING_COLUMNS = ("rater_id", "pair_id", "question", "answer", "timestamp")
QUESTION_ORDER = {"quality": 0, "alignment": 1}


def rating_rows(store: Store, pairs: list[BlindPair]) -> list[dict[str, str]]:
    order = {p.pair_id: i for i, p in enumerate(pairs)}
    rows = [a for a in store.answers() if not a.swapped and a.pair_id in order]
    rows.sort(key=lambda a: (a.rater_id, order[a.pair_id], QUESTION_ORDER.get(a.question, 9)))
    return [{"rater_id": a.rater_id, "pair_id": a.pair_id, "question": a.question, "answer": a.answer,
             "timestamp": a.received_at} for a in rows]


def write_ratings(store: Store, pairs: list[BlindPair], out: str | os.PathLike) -> int:
    """Write the rating file ``out`` (CSV, or JSON by suffix); returns the number of rows."""
    rows = rating_rows(store, pairs)
    out = Path(out)
    if out.suffix.lower() == ".json":
        export_id = pairs[0].export_id if pairs else ""
        text = json.dumps({"export_id": export_id, "ratings": rows}, indent=1) + "\n"
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RATING_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(text, out)
    return len(rows)
