"""The campaign database (bench.rate.store) on SQLite and on a real PostgreSQL server: an answer
is stored once however often it is sent, the latest answer wins, history keeps every change,
undo, one export per database, and concurrent writers."""
from __future__ import annotations

import os
import stat
import threading
from functools import partial
from pathlib import Path

import pytest

from bench.rate.engine import DatabaseURLError, default_url, normalise_url
from bench.rate.store import Item, Rater, Store, StoreError
from bench.rate.writer import BatchWriter
from bench.ratings import RatingsError, read_database
from rate_support import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path: Path):
    if request.param == "sqlite":
        yield default_url(tmp_path)
    else:
        yield from postgres_database()


def _campaign(url: str) -> tuple[Store, list[Item]]:
    store = Store(url, "export-1")
    items = [Item(0, "e-001", "e-001", False), Item(1, "e-002", "e-002", False), Item(2, "e-001/swap", "e-001", True)]
    store.add_raters([(Rater("rater-001", "tok-1", "2026-01-01T00:00:00Z", 1), items),
                      (Rater("rater-002", "tok-2", "2026-01-01T00:00:00Z", 1), items[:2])])
    return store, items


def test_latest_answer_wins_and_history_keeps_every_change(url):
    store, items = _campaign(url)
    try:
        assert store.record("rater-001", items[0], "quality", "left") is True
        assert store.record("rater-001", items[0], "quality", "left") is False  # a re-sent answer: stored once
        assert store.record("rater-001", items[0], "quality", "right") is True
        assert store.record("rater-001", items[2], "quality", "left") is True
        assert store.record("rater-002", items[0], "quality", "indifferent") is True
        latest = {(a.rater_id, a.item_id, a.question): a.answer for a in store.answers()}
        assert latest == {("rater-001", "e-001", "quality"): "right", ("rater-001", "e-001/swap", "quality"): "left",
                          ("rater-002", "e-001", "quality"): "indifferent"}
        assert [h[3] for h in store.history("rater-001")] == ["left", "right", "left"]
        assert store.retract("rater-001", items[0], "quality") is True
        assert store.retract("rater-001", items[0], "quality") is False
        assert [h[3] for h in store.history("rater-001")] == ["left", "right", "left", None]
        assert [a.item_id for a in store.answers("rater-001")] == ["e-001/swap"]
        assert [a.answer for a in store.answers("rater-002")] == ["indifferent"]
        swap = [a for a in store.answers("rater-001")][0]
        assert swap.swapped and swap.pair_id == "e-001" and swap.received_at.endswith("Z")
    finally:
        store.close()


def test_one_database_one_export(url):
    store, _ = _campaign(url)
    store.close()
    again = Store(url, "export-1")  # the same export again: fine, same admin token
    token = again.admin_token()
    assert token == again.admin_token() and len(token) >= 32
    again.close()
    with pytest.raises(StoreError, match="holds the ratings of export export-1, not of this export"):
        Store(url, "export-2")


def test_concurrent_copies_of_one_answer_are_stored_once(url):
    store, items = _campaign(url)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def send(answer: str) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                store.record("rater-001", items[1], "alignment", answer)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=send, args=("left",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert [(h[2], h[3]) for h in store.history("rater-001")] == [("alignment", "left")]
        assert len(store.answers("rater-001")) == 1
    finally:
        store.close()


def test_group_commit_answers_after_the_commit_and_a_failure_fails_alone(url):
    store, items = _campaign(url)
    writer = BatchWriter(store)
    try:
        record = partial(store.record_in, rater_id="rater-001", item=items[0], question="quality")
        first = [writer.submit(partial(record, answer=a)) for a in ("left", "left", "right")]
        bad = writer.submit(lambda conn: 1 / 0)
        other = writer.submit(partial(store.record_in, rater_id="rater-002", item=items[1], question="quality",
                                      answer="left"))
        undo = writer.submit(partial(store.retract_in, rater_id="rater-001", item=items[0], question="quality"))
        assert [f.result(30) for f in first] == [True, False, True]
        with pytest.raises(ZeroDivisionError):
            bad.result(30)
        assert other.result(30) is True and undo.result(30) is True
        assert [h[3] for h in store.history("rater-001")] == ["left", "right", None]
        assert [(a.rater_id, a.answer) for a in store.answers()] == [("rater-002", "left")]
    finally:
        writer.close()
        store.close()


def test_ratings_read_the_database_directly(url):
    store, items = _campaign(url)
    store.record("rater-001", items[0], "quality", "left")
    store.record("rater-001", items[2], "quality", "left")  # an attention check: not a rating
    store.record("rater-002", items[1], "alignment", "right")
    store.close()
    valid, rejected = read_database(url, {"e-001"}, "export-1")
    assert [(r.rater_id, r.pair_id, r.question, r.answer) for r in valid] == [("rater-001", "e-001", "quality", "left")]
    assert len(rejected) == 1 and "unknown pair_id 'e-002'" in rejected[0].reason
    with pytest.raises(RatingsError, match="not of this export"):
        read_database(url, {"e-001"}, "another")


def test_database_urls(tmp_path):
    assert normalise_url("postgresql://u@h:5/d") == "postgresql+psycopg://u@h:5/d"
    assert normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert default_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'ratings.db'}"
    with pytest.raises(DatabaseURLError, match="use sqlite:///FILE or postgresql://"):
        normalise_url("mysql://u@h/d")
    with pytest.raises(RatingsError, match="no such database file"):
        read_database(f"sqlite:///{tmp_path / 'missing.db'}", set())
    assert not (tmp_path / "missing.db").exists()
    Store(f"sqlite:///{tmp_path / 'other.db'}").close()
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(RatingsError, match="no rating campaign"):
        read_database(f"sqlite:///{tmp_path / 'empty.db'}", set())
    store, _ = _campaign(default_url(tmp_path))
    store.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "ratings.db").st_mode)
    assert mode == 0o600  # the file holds the raters' tokens
