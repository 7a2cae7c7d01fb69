"""Inviting raters: random tokens, each rater's sequence, and ``DIR/invites.csv``.

A token is ``secrets.token_urlsafe(24)`` (192 random bits): the link ``BASE/r/TOKEN`` is the
rater's only credential. ``invites.csv`` (``rater_id, token, url``) lists every rater invited so
far; it is written with owner-only permissions and the server never serves it.
"""
from __future__ import annotations

import csv
import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bench import rundir
from bench.pairs import read_pairs
from bench.rate.assign import plan_round
from bench.rate.store import Rater, Store, now_iso

INVITES = "invites.csv"
INVITE_COLUMNS = ("rater_id", "token", "url")


@dataclass(frozen=True)
class Invite:
    rater_id: str
    token: str
    url: str
    items: int


def rater_url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}/r/{token}"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def invite(pairs_dir: str | os.PathLike, store: Store, n: int, *, base: str, ratings_per_pair: int,
           attention_checks: int, seed: int) -> list[Invite]:
    """Invite ``n`` raters as a new round (``bench.rate.assign``); rewrite ``DIR/invites.csv``."""
    if n < 1:
        raise ValueError(f"n={n}: invite at least one rater")
    pairs = read_pairs(pairs_dir)
    existing = store.raters()
    taken = {r.rater_id for r in existing}
    round_no = max((r.round for r in existing), default=0) + 1
    ids, i = [], len(existing) + 1
    while len(ids) < n:
        rid = f"rater-{i:03d}"
        if rid not in taken:
            ids.append(rid)
        i += 1
    categories = {p.pair_id: p.category for p in pairs}
    sequences = plan_round([p.pair_id for p in pairs], categories, ids, ratings_per_pair, attention_checks, seed,
                           round_no)
    at = now_iso()
    new = [(Rater(rid, new_token(), at, round_no), items) for rid, items in zip(ids, sequences)]
    store.add_raters(new)
    write_invites(pairs_dir, store.raters(), base)
    return [Invite(r.rater_id, r.token, rater_url(base, r.token), len(items)) for r, items in new]


def write_invites(pairs_dir: str | os.PathLike, raters: list[Rater], base: str) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INVITE_COLUMNS)
    w.writerows([r.rater_id, r.token, rater_url(base, r.token)] for r in raters)
    path = Path(pairs_dir) / INVITES
    rundir.atomic_write_text(buf.getvalue(), path, mode=0o600)  # tokens: private from the first byte
    return path
