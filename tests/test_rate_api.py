"""The campaign server's routes (bench.rate.app) in process, on SQLite and on PostgreSQL: answers
are stored once and refused without storing anything, raters are kept apart, the rater and admin
pages, invitations, the export and its analysis."""
from __future__ import annotations

import csv
import json
import re
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bench.pairs import TEMPLATE, read_pairs
from bench.rate.app import build_app
from bench.rate.campaign import Campaign
from bench.rate.cli import main as rate_main
from bench.rate.engine import default_url
from bench.rate.invite import invite
from bench.rate.live import LiveSummary
from bench.rate.store import Store
from bench.ratings import summarize
from rate_support import BREAKOUT, HOSTILE, PROMPTS, invites, make_export, postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request, tmp_path: Path):
    """(client, campaign) of a fresh export with three raters (two per pair, two checks each)."""
    export = make_export(tmp_path)
    urls = iter([default_url(export)]) if request.param == "sqlite" else postgres_database()
    url = next(urls)
    store = Store(url, read_pairs(export)[0].export_id)
    invite(export, store, 3, base="http://testserver", ratings_per_pair=2, attention_checks=2, seed=0)
    campaign = Campaign(export, store)
    app = build_app(campaign, max_body_bytes=4096, live=LiveSummary(campaign, n_boot=100, ci=0.95, every_s=0))
    with TestClient(app) as client:
        yield client, campaign
    store.close()
    for _ in urls:  # drops the PostgreSQL database
        pass


def seats(campaign: Campaign) -> list:
    return campaign.seats()


def answer(client: TestClient, token: str, pair_id: str, question: str = "quality", ans: str = "left"):
    return client.post("/api/answer", json={"token": token, "pair_id": pair_id, "question": question, "answer": ans})


def test_answers_are_acknowledged_once_stored_and_resent_answers_stored_once(served):
    client, c = served
    s = seats(c)[0]
    first = s.order[0].item_id
    r = answer(client, s.rater.token, first)
    assert r.status_code == 200 and r.json() == {"ok": True, "changed": True}
    assert [(a.item_id, a.answer) for a in c.store.answers(s.rater.rater_id)] == [(first, "left")]
    assert answer(client, s.rater.token, first).json() == {"ok": True, "changed": False}
    assert answer(client, s.rater.token, first, ans="right").json()["changed"] is True
    assert [h[3] for h in c.store.history(s.rater.rater_id)] == ["left", "right"]
    r = client.post("/api/retract", json={"token": s.rater.token, "pair_id": first, "question": "quality"})
    assert r.status_code == 200 and c.store.answers(s.rater.rater_id) == []


def test_refused_requests_store_nothing(served):
    client, c = served
    a, b = seats(c)[0], seats(c)[1]
    only_a = next(i.item_id for i in a.order if i.item_id not in b.items)
    good = {"token": a.rater.token, "pair_id": a.order[0].item_id, "question": "quality", "answer": "left"}
    cases = [
        (dict(good, token="not-a-token"), 403),
        (dict(good, token=b.rater.token, pair_id=only_a), 422),  # a pair of another rater's sequence
        (dict(good, pair_id="ffffffff-999"), 404),
        (dict(good, pair_id="../../key.csv"), 404),
        (dict(good, question="beauty"), 422),
        (dict(good, answer="A"), 422),
        (dict(good, answer=None), 400),
        (dict(good, extra="x"), 400),
        ({k: v for k, v in good.items() if k != "answer"}, 400),
    ]
    for body, status in cases:
        r = client.post("/api/answer", json=body)
        assert r.status_code == status, (body, r.status_code, r.text)
    for raw, status in [(b"{not json", 400), (b"", 400), (b"x" * 5000, 413),
                        (json.dumps(dict(good, token="t" * 4100)).encode(), 413)]:
        assert client.post("/api/answer", content=raw, headers={"Content-Type": "application/json"}).status_code == status
    r = client.post("/api/answer", content=b"{}", headers={"Content-Length": "999999"})
    assert r.status_code == 413
    assert client.get("/api/answer").status_code == 405
    assert c.store.history() == [] and c.store.answers() == []


def test_a_rater_cannot_read_or_change_another_raters_answers(served):
    client, c = served
    a, b = seats(c)[0], seats(c)[1]
    shared = next(i.item_id for i in a.order if i.item_id in b.items)
    assert answer(client, a.rater.token, shared, ans="left").status_code == 200
    assert answer(client, b.rater.token, shared, ans="right").status_code == 200  # b's own answer, apart
    state_b = client.post("/api/state", json={"token": b.rater.token}).json()
    assert state_b["rater_id"] == b.rater.rater_id
    assert [(x["pair_id"], x["answer"]) for x in state_b["answers"]] == [(shared, "right")]
    page_b = client.get(f"/r/{b.rater.token}").text
    assert a.rater.token not in page_b and a.rater.rater_id not in page_b
    assert client.post("/api/retract", json={"token": b.rater.token, "pair_id": shared, "question": "quality"}).json()["changed"]
    assert [(x.item_id, x.answer) for x in c.store.answers(a.rater.rater_id)] == [(shared, "left")]
    assert client.post("/api/state", json={"token": "nope"}).status_code == 403


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def _tags(text: str) -> list[str]:
    p = _Tags()
    p.feed(text)
    return p.tags


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="pairs-data">(.*?)</script>', html, re.S)
    assert m and "<" not in m.group(1)
    return json.loads(m.group(1))


def test_rater_page_is_the_blinded_page_with_checks_swapped_and_progress_kept(served):
    client, c = served
    s = seats(c)[0]
    r = client.get(f"/r/{s.rater.token}")
    assert r.status_code == 200 and "connect-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    assert _tags(r.text) == _tags(TEMPLATE.read_text(encoding="utf-8"))  # nothing added by the data
    assert HOSTILE not in r.text and "</script><script>alert(2)" not in r.text
    data = page_data(r.text)
    pairs = {p.pair_id: p for p in read_pairs(c.dir)}
    assert [p["pair_id"] for p in data["pairs"]] == [i.item_id for i in s.order]
    for item, shown in zip(s.order, data["pairs"]):
        p = pairs[item.pair_id]
        left, right = ["/img/" + Path(x).name for x in p.left_images], ["/img/" + Path(x).name for x in p.right_images]
        assert (shown["left"], shown["right"]) == ((right, left) if item.swapped else (left, right))
        assert shown["prompt"] == p.prompt
    assert {p["prompt"] for p in data["pairs"]} & {HOSTILE, BREAKOUT}
    assert data["server"]["rater_id"] == s.rater.rater_id and data["server"]["answers"] == {}
    answer(client, s.rater.token, s.order[0].item_id, "quality", "left")
    answer(client, s.rater.token, s.order[0].item_id, "alignment", "right")
    again = page_data(client.get(f"/r/{s.rater.token}").text)["server"]["answers"]
    assert {q: v["answer"] for q, v in again[s.order[0].item_id].items()} == {"quality": "left", "alignment": "right"}
    assert client.get("/r/not-a-token").status_code == 403
    img = data["pairs"][0]["left"][0]
    got = client.get(img)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png" and got.content[:4] == b"\x89PNG"


def test_admin_page_and_live_summary(served):
    client, c = served
    assert client.get("/admin/wrong").status_code == 403
    assert client.get("/api/admin/summary").status_code == 403
    assert client.get("/api/admin/summary", headers={"Authorization": "Bearer wrong"}).status_code == 403
    page = client.get(f"/admin/{c.admin_token}")
    assert page.status_code == 200 and "admin-data" in page.text
    for s in seats(c):  # everyone answers every item: left, and the checks consistently (right)
        for item in s.order:
            for q in ("quality", "alignment"):
                assert answer(client, s.rater.token, item.item_id, q, "right" if item.swapped else "left").status_code == 200
    summary = client.get("/api/admin/summary", headers={"Authorization": f"Bearer {c.admin_token}"}).json()
    assert [r["rater_id"] for r in summary["raters"]] == [s.rater.rater_id for s in seats(c)]
    for r in summary["raters"]:
        assert r["answered"] == r["questions"] and r["complete_items"] == r["items"]
        assert r["checks_compared"] == 2 * r["checks"] and r["consistency"] == 1.0
    cats = {r["category"]: r for r in summary["categories"]}
    assert cats["Reddit"]["pairs"] == 2 and all(r["answered"] == r["target"] == r["pairs"] * 2 * 2
                                                for r in cats.values())
    quality = next(r for r in summary["agreement"] if r["question"] == "quality")
    assert quality["pairs_multi_rated"] == len(PROMPTS) and quality["percent_agreement"] == 1.0
    pref = summary["preference"]
    assert pref["kind"] == "shares" and [m["label"] for m in pref["models"]] == ["A", "B"]
    overall = next(r for r in pref["rows"] if r["question"] == "quality" and r["category"] == "all")
    assert overall["pref_a"] + overall["pref_b"] == pytest.approx(1.0) and overall["pref_a_lo"] <= overall["pref_a"]
    assert summary["answers"] == len(PROMPTS) * 2 * 2


def test_invite_export_and_analysis_from_the_command_line(tmp_path, capsys):
    export = make_export(tmp_path)
    rate_main(["invite", f"pairs={export}", "n=3", "ratings_per_pair=2", "attention_checks=1",
               "base_url=https://rate.example.org/"])
    printed = capsys.readouterr().out
    rows = invites(export)
    assert [r["rater_id"] for r in rows] == ["rater-001", "rater-002", "rater-003"]
    assert list(rows[0]) == ["rater_id", "token", "url"]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", r["token"]) for r in rows) and len({r["token"] for r in rows}) == 3
    assert all(r["url"] == f"https://rate.example.org/r/{r['token']}" and r["url"] in printed for r in rows)
    assert stat.S_IMODE((export / "invites.csv").stat().st_mode) == 0o600
    rate_main(["invite", f"pairs={export}", "n=1"])  # a second round
    assert [r["rater_id"] for r in invites(export)][-1] == "rater-004"
    twin = make_export(tmp_path / "twin")  # the same export and seed: the sequences repeat, the tokens do not
    rate_main(["invite", f"pairs={twin}", "n=3", "ratings_per_pair=2", "attention_checks=1"])
    assert not {r["token"] for r in invites(twin)} & {r["token"] for r in rows}
    s1, s2 = Store(default_url(export)), Store(default_url(twin))
    assert s1.items()["rater-001"] == s2.items()["rater-001"]
    s1.close()
    s2.close()

    store = Store(default_url(export))
    campaign = Campaign(export, store)
    plan = {}
    for s in campaign.seats():
        for n, item in enumerate(s.order):
            for q in ("quality", "alignment"):
                ans = ("left", "indifferent", "right")[(n + len(q)) % 3]
                store.record(s.rater.rater_id, item, q, ans)
                if not item.swapped:
                    plan[(s.rater.rater_id, item.pair_id, q)] = ans
    store.close()
    out = tmp_path / "ratings.csv"
    rate_main(["export", f"pairs={export}", f"out={out}"])
    text = out.read_text(encoding="utf-8")
    assert text.startswith("rater_id,pair_id,question,answer,timestamp\n") and "\r" not in text
    got = {(r["rater_id"], r["pair_id"], r["question"]): r["answer"] for r in csv.DictReader(open(out, newline=""))}
    assert got == plan and "/swap" not in text
    rate_main(["export", f"pairs={export}", f"out={tmp_path / 'ratings.json'}"])
    doc = json.loads((tmp_path / "ratings.json").read_text())
    assert doc["export_id"] == read_pairs(export)[0].export_id and len(doc["ratings"]) == len(plan)

    from_csv = summarize(export, [out], n_boot=200, plot=False).table
    from_db = summarize(export, [default_url(export)], n_boot=200, plot=False).table
    from_json = summarize(export, [tmp_path / "ratings.json"], n_boot=200, plot=False).table
    assert from_csv.equals(from_db) and from_csv.equals(from_json)
    assert int(from_csv[from_csv["category"] == "all"]["n_ratings"].sum()) == len(plan)


def test_command_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="usage: python -m bench.rate serve"):
        rate_main([])
    with pytest.raises(SystemExit, match="missing n"):
        rate_main(["invite", f"pairs={tmp_path}"])
    with pytest.raises(SystemExit, match="pairs.csv: not found"):
        rate_main(["invite", f"pairs={tmp_path}", "n=2"])
    export = make_export(tmp_path)
    with pytest.raises(SystemExit, match="n=0: invite at least one rater"):
        rate_main(["invite", f"pairs={export}", "n=0"])
    with pytest.raises(SystemExit, match="use sqlite:///FILE or postgresql://"):
        rate_main(["invite", f"pairs={export}", "n=1", "db=mysql://x/y"])
    with pytest.raises(SystemExit, match="bench.rate invite"):
        rate_main(["invite", f"pairs={export}", "n=1", "no_such_key=1"])
