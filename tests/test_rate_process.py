"""The campaign server as a real process (``python -m bench.rate serve`` on uvicorn, 127.0.0.1):
killed with SIGKILL mid-campaign and restarted, it has every answer it acknowledged (SQLite, and
PostgreSQL); and no path outside the export's images is served."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.rate.cli import main as rate_main
from bench.rate.engine import default_url
from bench.rate.store import Store
from rate_support import Server, invites, make_export, post_json, postgres_database, request

ANSWERS = ("left", "indifferent", "right")


class Rater(threading.Thread):
    """Posts answers to its items as fast as the server acknowledges them, each one different from
    its previous answer to that item and question; records what was acknowledged, in order."""

    def __init__(self, port: int, token: str, items: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.items, self.stop = port, token, items, stop
        self.acked: dict[tuple[str, str], list[str]] = {}
        self.in_flight: tuple[tuple[str, str], str] | None = None
        self.errors = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key = (self.items[n % len(self.items)], ("quality", "alignment")[(n // len(self.items)) % 2])
            previous = self.acked.get(key, [None])[-1]
            ans = ANSWERS[(ANSWERS.index(previous) + 1) % 3] if previous else "left"
            self.in_flight = (key, ans)
            try:
                status, body = post_json(self.port, "/api/answer", {"token": self.token, "pair_id": key[0],
                                                                    "question": key[1], "answer": ans})
            except OSError:
                self.errors += 1
                return  # the server is gone
            if status == 200:
                assert body["changed"] is True
                self.acked.setdefault(key, []).append(ans)
                self.in_flight = None
            n += 1


def _kill_mid_campaign(export: Path, db: str | None) -> None:
    rate_main(["invite", f"pairs={export}", "n=4", "ratings_per_pair=2"] + ([f"db={db}"] if db else []))
    server = Server(export, db).start()
    url = db or default_url(export)
    store = Store(url)
    seqs = store.items()
    stop = threading.Event()
    raters = [Rater(server.port, r["token"], [i.item_id for i in seqs[r["rater_id"]]], stop) for r in invites(export)]
    for r in raters:
        r.start()
    deadline = time.monotonic() + 60
    while sum(len(v) for r in raters for v in r.acked.values()) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # mid-campaign: requests are in flight
    stop.set()
    for r in raters:
        r.join(30)
    acked = sum(len(v) for r in raters for v in r.acked.values())
    assert acked >= 150, "the raters got too few answers through before the kill"
    print(f"killed after {acked} acknowledged answers, {sum(r.in_flight is not None for r in raters)} in flight")

    server.start()  # the same database, a new process
    try:
        for rater, row in zip(raters, invites(export)):
            history: dict[tuple[str, str], list[str]] = {}
            for _, item, q, ans, _ in store.history(row["rater_id"]):
                history.setdefault((item, q), []).append(ans)
            latest = {(a.item_id, a.question): a.answer for a in store.answers(row["rater_id"])}
            for key, sent in rater.acked.items():
                stored = history.get(key, [])
                # every acknowledged answer is there, in order; at most the one in flight at the kill follows
                assert stored[:len(sent)] == sent, (key, sent, stored)
                extra = stored[len(sent):]
                assert extra in ([], [rater.in_flight[1]] if rater.in_flight and rater.in_flight[0] == key else [])
                assert latest[key] == stored[-1]
            status, state = post_json(server.port, "/api/state", {"token": row["token"]})
            assert status == 200 and len(state["answers"]) == len(latest)
        status, body = post_json(server.port, "/api/answer", {"token": invites(export)[0]["token"],
                                                              "pair_id": raters[0].items[0], "question": "quality",
                                                              "answer": "indifferent"})
        assert status == 200  # and it goes on taking answers
    finally:
        server.kill()
        store.close()


def test_sigkill_mid_campaign_loses_no_acknowledged_answer_sqlite(tmp_path):
    _kill_mid_campaign(make_export(tmp_path), None)


@pytest.fixture()
def pg_url():
    yield from postgres_database()


def test_sigkill_mid_campaign_loses_no_acknowledged_answer_postgresql(tmp_path, pg_url):
    _kill_mid_campaign(make_export(tmp_path), pg_url)


def test_no_path_outside_the_export_images_is_served(tmp_path):
    export = make_export(tmp_path)
    rate_main(["invite", f"pairs={export}", "n=1"])
    secret = (export / "key.csv").read_bytes()
    (tmp_path / "outside.png").write_bytes((export / "img" / next((export / "img").iterdir()).name).read_bytes())
    stray = "0123456789abcdef01234567.png"  # a well-formed name that is not an image of the export
    (export / "img" / stray).write_bytes(b"\x89PNG not listed")
    server = Server(export).start()
    try:
        good = "/img/" + next((export / "img").iterdir()).name
        assert request(server.port, "GET", good)[0] == 200
        paths = ["/img/../key.csv", "/img/..%2fkey.csv", "/img/%2e%2e/key.csv", "/img/%2e%2e%2fkey.csv",
                 "/img/..%5ckey.csv", "/img/....//key.csv", "/img/%2e%2e%2f%2e%2e%2foutside.png", "/../key.csv",
                 "/key.csv", "/pairs.csv", "/invites.csv", "/ratings.db", "/design.json", "/key_images.csv",
                 "/index.html", "//etc/passwd", "/img/", "/img/" + stray, "/img/key.csv", "/img/%00.png",
                 "/img/" + "a" * 5000, "/r/../key.csv", "/admin/../key.csv", "/static/../key.csv",
                 good + "/../../key.csv", good.replace("/img/", "/img/./")]
        for path in paths:
            status, body = request(server.port, "GET", path)
            assert status in (403, 404, 405), (path, status)
            assert secret not in body and b"rater_id,token" not in body and b"SQLite" not in body, path
    finally:
        server.kill()
