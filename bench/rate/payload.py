"""What the server accepts as a posted answer, an undo or a state request.

``POST /api/answer`` takes exactly ``{"token", "pair_id", "question", "answer"}``, all strings;
``POST /api/retract`` (undo) and ``POST /api/state`` take the keys without ``answer`` (and
``/api/state`` only ``token``). Anything else is refused with the reason, before the database is
touched: a body over the size limit (413), not JSON or not an object of these keys (400), a
question or answer outside the allowed values (422).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

QUESTIONS: tuple[str, ...] = ("quality", "alignment")
ANSWERS: tuple[str, ...] = ("left", "indifferent", "right")
MAX_FIELD = 256
KEYS = {"answer": ("token", "pair_id", "question", "answer"), "retract": ("token", "pair_id", "question"),
        "state": ("token",)}


@dataclass(frozen=True)
class Refused:
    status: int
    reason: str


@dataclass(frozen=True)
class Posted:
    token: str
    pair_id: str = ""
    question: str = ""
    answer: str | None = None


def parse(body: bytes, kind: str, limit: int) -> Posted | Refused:
    """The posted fields of a request of ``kind`` (``answer`` | ``retract`` | ``state``), or why not."""
    if len(body) > limit:
        return Refused(413, f"body over {limit} bytes")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return Refused(400, "body is not JSON")
    keys = KEYS[kind]
    if not isinstance(data, dict) or set(data) != set(keys):
        return Refused(400, f"expected a JSON object with exactly the keys {', '.join(keys)}")
    if not all(isinstance(data[k], str) and 0 < len(data[k]) <= MAX_FIELD for k in keys):
        return Refused(400, f"{', '.join(keys)} must be non-empty strings of at most {MAX_FIELD} characters")
    if "question" in data and data["question"] not in QUESTIONS:
        return Refused(422, f"question must be one of {', '.join(QUESTIONS)}")
    if "answer" in data and data["answer"] not in ANSWERS:
        return Refused(422, f"answer must be one of {', '.join(ANSWERS)}")
    return Posted(data["token"], data.get("pair_id", ""), data.get("question", ""), data.get("answer"))
