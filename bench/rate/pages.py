"""The HTML the server sends: a rater's page (the static rating page with a ``server`` block) and
the admin page. Data goes in as JSON inside a ``<script type="application/json">`` element
(``bench.pairs.script_json``: no string can close it) and is put on the page as text only."""
from __future__ import annotations

from pathlib import Path

from bench.pairs import BlindPair, render_page_data, script_json
from bench.rate.campaign import Seat
from bench.rate.store import StoredAnswer

ADMIN_TEMPLATE = Path(__file__).resolve().parents[1] / "web" / "admin.html"
ADMIN_PLACEHOLDER = "__ADMIN_JSON__"
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


def _shown(pair: BlindPair, swapped: bool) -> tuple[list[str], list[str]]:
    left = ["/img/" + Path(p).name for p in pair.left_images]
    right = ["/img/" + Path(p).name for p in pair.right_images]
    return (right, left) if swapped else (left, right)


def rater_page(seat: Seat, pairs: dict[str, BlindPair], export_id: str, answers: list[StoredAnswer]) -> str:
    """The rating page of one rater: their items in order, their latest answers, where to post."""
    items = []
    for it in seat.order:
        left, right = _shown(pairs[it.pair_id], it.swapped)
        items.append({"pair_id": it.item_id, "prompt": pairs[it.pair_id].prompt, "left": left, "right": right})
    given: dict[str, dict[str, dict[str, str]]] = {}
    for a in answers:
        given.setdefault(a.item_id, {})[a.question] = {"answer": a.answer, "timestamp": a.received_at}
    data = {"export_id": export_id, "pairs": items,
            "server": {"token": seat.rater.token, "rater_id": seat.rater.rater_id, "answers": given,
                       "answer_url": "/api/answer", "retract_url": "/api/retract"}}
    return render_page_data(data, "'self'")


def admin_page(token: str) -> str:
    """The admin page; its script reads ``/api/admin/summary`` with ``token`` every few seconds."""
    template = ADMIN_TEMPLATE.read_text(encoding="utf-8")
    if template.count(ADMIN_PLACEHOLDER) != 1:
        raise RuntimeError(f"bench/web/admin.html must contain {ADMIN_PLACEHOLDER} exactly once")
    return template.replace(ADMIN_PLACEHOLDER, script_json({"token": token, "summary_url": "/api/admin/summary"}))


def message_page(title: str, text: str) -> str:
    """A plain page for the root and for refused links (fixed text, nothing from the request)."""
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{text}</p></body></html>")
