"""Every read and write of a campaign's database (tables in ``bench.rate.schema``).

An answer is committed before :meth:`Store.record` returns; a re-sent answer equal to the rater's
latest one for that item and question changes nothing, a different one replaces it, and every
change (and every undo) is appended to ``answer_history``. The upsert is one statement with a
condition, so two copies of the same answer arriving at once are stored once on SQLite and on
PostgreSQL alike.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bench.rate.engine import IMMEDIATE, make_engine, safe_url
from bench.rate.schema import answer_history, answers, assignments, campaign, metadata, raters

ADMIN_TOKEN = "admin_token"
T = TypeVar("T")
EXPORT_ID = "export_id"


class StoreError(RuntimeError):
    """A database that does not belong to this export, or holds no campaign."""


@dataclass(frozen=True)
class Rater:
    rater_id: str
    token: str
    invited_at: str
    round: int


@dataclass(frozen=True)
class Item:
    """One entry of a rater's sequence: a pair, or an attention check (``swapped``)."""

    position: int
    item_id: str
    pair_id: str
    swapped: bool


@dataclass(frozen=True)
class StoredAnswer:
    """A rater's latest answer to an item and question (``answer`` in the rater's view)."""

    rater_id: str
    item_id: str
    pair_id: str
    swapped: bool
    question: str
    answer: str
    received_at: str


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds and ``Z`` (what the rating page writes)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """A campaign database; ``create``: make the tables (and the admin token) if missing."""

    def __init__(self, url: str, export_id: str | None = None, *, create: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        db = self.engine.url.database
        if not create and self.engine.dialect.name == "sqlite" and not (db and Path(db).is_file()):
            raise StoreError(f"{safe_url(url)}: no such database file")
        if create:
            self._private_file()  # before any table (and the WAL, which takes the file's mode) exists
            metadata.create_all(self.engine)
        elif not inspect(self.engine).has_table("answers"):
            self.engine.dispose()
            raise StoreError(f"{safe_url(url)}: no rating campaign in this database (no answers table)")
        self.export_id = self._check_export(export_id, create)
        self._statements()

    def _private_file(self) -> None:
        """A SQLite file holds the raters' tokens: readable by its owner only."""
        db = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and db:
            Path(db).touch(mode=0o600, exist_ok=True)
            Path(db).chmod(0o600)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                yield conn

    def _check_export(self, export_id: str | None, create: bool) -> str | None:
        stored = self.fact(EXPORT_ID)
        if stored is None and export_id is not None and create:
            self._set_fact(EXPORT_ID, export_id)
            return export_id
        if stored is not None and export_id is not None and stored != export_id:
            self.engine.dispose()
            raise StoreError(f"{safe_url(self.url)} holds the ratings of export {stored}, not of this export ({export_id}); "
                             f"give another db=URL")
        return stored or export_id

    # ------------------------------------------------------------ campaign facts

    def fact(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(campaign.c.value).where(campaign.c.key == key)).scalar()

    def _set_fact(self, key: str, value: str) -> None:
        stmt = self._insert(campaign).values(key=key, value=value).on_conflict_do_nothing(index_elements=["key"])
        with self._write() as conn:
            conn.execute(stmt)

    def admin_token(self) -> str:
        """The admin page's token: made once (random), then the same on every start."""
        if self.fact(ADMIN_TOKEN) is None:
            self._set_fact(ADMIN_TOKEN, secrets.token_urlsafe(24))
        token = self.fact(ADMIN_TOKEN)
        assert token is not None
        return token

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT (the one with ``on_conflict_*``)."""
        return pg_insert(table) if self.engine.dialect.name == "postgresql" else sqlite_insert(table)

    # ------------------------------------------------------------ raters and their items

    def add_raters(self, new: list[tuple[Rater, list[Item]]]) -> None:
        """Insert raters with their sequences, all in one transaction."""
        with self._write() as conn:
            for r, items in new:
                conn.execute(insert(raters).values(rater_id=r.rater_id, token=r.token, invited_at=r.invited_at,
                                                   round=r.round))
                if items:
                    conn.execute(insert(assignments), [
                        {"rater_id": r.rater_id, "position": i.position, "item_id": i.item_id, "pair_id": i.pair_id,
                         "swapped": i.swapped} for i in items])

    def raters(self) -> list[Rater]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(raters).order_by(raters.c.rater_id)).all()
        return [Rater(r.rater_id, r.token, r.invited_at, r.round) for r in rows]

    def items(self, rater_id: str | None = None) -> dict[str, list[Item]]:
        """Each rater's sequence (of one rater, if given), in the order shown."""
        stmt = select(assignments).order_by(assignments.c.rater_id, assignments.c.position)
        if rater_id is not None:
            stmt = stmt.where(assignments.c.rater_id == rater_id)
        out: dict[str, list[Item]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                out.setdefault(r.rater_id, []).append(Item(r.position, r.item_id, r.pair_id, bool(r.swapped)))
        return out

    # ------------------------------------------------------------ answers

    def write(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` in one write transaction, committed on return."""
        with self._write() as conn:
            return op(conn)

    def record(self, rater_id: str, item: Item, question: str, answer: str) -> bool:
        """Store ``answer`` as the rater's latest for ``item`` and ``question``; committed on return.
        True if it changed the latest answer (then it is also appended to the history)."""
        return self.write(lambda conn: self.record_in(conn, rater_id, item, question, answer))

    def retract(self, rater_id: str, item: Item, question: str) -> bool:
        """Undo: the rater has no answer to ``item`` and ``question`` any more (history keeps the undo)."""
        return self.write(lambda conn: self.retract_in(conn, rater_id, item, question))

    def _statements(self) -> None:
        """The answer statements, built once (with bound parameters) rather than per answer."""
        cols = ("rater_id", "item_id", "question", "pair_id", "swapped", "answer", "received_at")
        ins = self._insert(answers).values({c: bindparam(c) for c in cols})
        self._upsert = ins.on_conflict_do_update(
            index_elements=[answers.c.rater_id, answers.c.item_id, answers.c.question],
            set_={"answer": ins.excluded.answer, "received_at": ins.excluded.received_at},
            where=answers.c.answer != ins.excluded.answer,
        ).returning(answers.c.rater_id)
        self._delete = delete(answers).where(
            answers.c.rater_id == bindparam("rater_id"), answers.c.item_id == bindparam("item_id"),
            answers.c.question == bindparam("question")).returning(answers.c.rater_id)
        self._history = insert(answer_history)

    def record_in(self, conn: Connection, rater_id: str, item: Item, question: str, answer: str) -> bool:
        """:meth:`record` inside the caller's transaction (``bench.rate.writer`` commits many at once)."""
        row = {"rater_id": rater_id, "item_id": item.item_id, "question": question, "pair_id": item.pair_id,
               "swapped": item.swapped, "answer": answer, "received_at": now_iso()}
        changed = conn.execute(self._upsert, row).first() is not None
        if changed:
            conn.execute(self._history, row)
        return changed

    def retract_in(self, conn: Connection, rater_id: str, item: Item, question: str) -> bool:
        """:meth:`retract` inside the caller's transaction."""
        key = {"rater_id": rater_id, "item_id": item.item_id, "question": question}
        changed = conn.execute(self._delete, key).first() is not None
        if changed:
            conn.execute(self._history, {**key, "pair_id": item.pair_id, "swapped": item.swapped, "answer": None,
                                         "received_at": now_iso()})
        return changed

    def answers(self, rater_id: str | None = None) -> list[StoredAnswer]:
        """The latest answers (of one rater, if given), by rater, then arrival."""
        stmt = select(answers).order_by(answers.c.rater_id, answers.c.received_at)
        if rater_id is not None:
            stmt = stmt.where(answers.c.rater_id == rater_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [StoredAnswer(r.rater_id, r.item_id, r.pair_id, bool(r.swapped), r.question, r.answer, r.received_at)
                for r in rows]

    def history(self, rater_id: str | None = None) -> list[tuple[str, str, str, str | None, str]]:
        """Every answer and undo as it arrived: (rater_id, item_id, question, answer or None, received_at)."""
        stmt = select(answer_history).order_by(answer_history.c.id)
        if rater_id is not None:
            stmt = stmt.where(answer_history.c.rater_id == rater_id)
        with self.engine.connect() as conn:
            return [(r.rater_id, r.item_id, r.question, r.answer, r.received_at) for r in conn.execute(stmt)]

    def history_size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(answer_history)).scalar() or 0)
