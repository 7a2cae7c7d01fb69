"""The rating page in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
Playwright over file://, with no server and no network.

Needs the `playwright` Python package and a system Chromium (`.ci/install-chromium.sh`);
never run `playwright install` (it downloads a browser).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.pairs import export_pairs, read_key, read_pairs
from bench.ratings import summarize

HOSTILE = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script>"
PROMPTS = [("drawbench-000", "A red colored car.", "Colors"),
           ("drawbench-001", "Three cats and two dogs.", "Counting"),
           ("drawbench-002", "A cube to the left of a sphere.", "Positional"),
           ("drawbench-003", HOSTILE, "Reddit"),
           ("drawbench-004", BREAKOUT, "Reddit")]


def make_run(root: Path, name: str, tag: int, samples: int = 2) -> Path:
    """A fake run directory (manifest.csv as in the run contract, small solid-colour PNGs)."""
    run = root / name
    (run / "images").mkdir(parents=True)
    rows = []
    for p, (pid, text, cat) in enumerate(PROMPTS):
        for s in range(samples):
            rel = f"images/{pid}_s{s}.png"
            Image.new("RGB", (16, 16), (tag * 90 % 256, p * 40, s * 120)).save(run / rel)
            rows.append({"path": rel, "prompt_id": pid, "prompt": text, "category": cat, "seed": s,
                         "guidance_weight": 3.0, "sample_index": s, "image_index": len(rows), "truth": "",
                         "width": 16, "height": 16})
    with open(run / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return run


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    out = tmp_path / "export"
    export_pairs(make_run(tmp_path, "model_a", 1), make_run(tmp_path, "model_b", 2), out, k=2, seed=0)
    return out


@pytest.fixture()
def page(browser, export):
    ctx = browser.new_context(accept_downloads=True)
    pg = ctx.new_page()
    pg.dialogs, pg.errors, pg.requests = [], [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.goto((export / "index.html").as_uri())
    yield pg
    ctx.close()
    assert not pg.errors, pg.errors
    assert not pg.dialogs, f"a dialog fired: {pg.dialogs}"
    assert all(u.startswith(("file://", "blob:", "data:")) for u in pg.requests), pg.requests


def shown_pair(page) -> str:
    return page.get_attribute("#pair", "data-pair-id")


def pressed(page, question: str) -> list[str]:
    return page.eval_on_selector_all(f'button[data-question="{question}"][aria-pressed="true"]',
                                     "els => els.map(e => e.dataset.answer)")


def test_hostile_prompts_render_as_text(page, export):
    order = [p.pair_id for p in read_pairs(export)]
    prompts = {p.pair_id: p.prompt for p in read_pairs(export)}
    assert page.eval_on_selector_all("#left img, #right img", "els => els.map(e => e.naturalWidth)") == [16] * 4
    seen = set()
    for i, pid in enumerate(order):
        assert shown_pair(page) == pid and page.text_content("#progress") == f"Pair {i + 1} of {len(order)}"
        assert page.text_content("#prompt") == prompts[pid]
        seen.add(prompts[pid])
        page.keyboard.press("ArrowRight")
    assert {HOSTILE, BREAKOUT} <= seen
    for _ in order:  # back to the hostile prompt
        if page.text_content("#prompt") == HOSTILE:
            break
        page.keyboard.press("ArrowLeft")
    assert page.text_content("#prompt") == HOSTILE
    assert page.locator("#prompt img").count() == 0 and "&lt;img" in page.inner_html("#prompt")
    assert page.locator("script").count() == 2  # the data block and the page script, nothing injected
    page.wait_for_timeout(200)  # give an injected onerror handler time to fire (the fixture checks dialogs)


def test_rate_reload_undo_download_and_analyse(page, export, tmp_path):
    order = [p.pair_id for p in read_pairs(export)]
    n = len(order)
    assert page.text_content("#progress") == f"Pair 1 of {n}" and page.text_content("#done") == f"0 of {n} answered"
    keys = {("quality", "left"): "1", ("quality", "indifferent"): "2", ("quality", "right"): "3",
            ("alignment", "left"): "4", ("alignment", "indifferent"): "5", ("alignment", "right"): "6"}
    plan = [{"quality": "left", "alignment": "right"},
            {"quality": "indifferent", "alignment": "left"},
            {"quality": "right", "alignment": "indifferent"}]
    for i, answers in enumerate(plan):
        assert shown_pair(page) == order[i]
        for q, a in answers.items():
            page.keyboard.press(keys[q, a])
        # both questions answered: the page moves on to the next pair by itself
        assert page.text_content("#progress") == f"Pair {i + 2} of {n}"
    assert page.text_content("#done") == f"3 of {n} answered"

    page.reload()  # answers and position survive a reload
    assert page.text_content("#progress") == f"Pair 4 of {n}" and page.text_content("#done") == f"3 of {n} answered"
    page.keyboard.press("ArrowLeft")
    assert shown_pair(page) == order[2]
    assert pressed(page, "quality") == ["right"] and pressed(page, "alignment") == ["indifferent"]
    page.click("#back")
    assert shown_pair(page) == order[1]
    assert pressed(page, "quality") == ["indifferent"] and pressed(page, "alignment") == ["left"]

    # change an answer of a finished pair (no auto-advance), then undo restores the earlier answer
    page.keyboard.press("3")
    assert shown_pair(page) == order[1] and pressed(page, "quality") == ["right"]
    page.keyboard.press("u")
    assert shown_pair(page) == order[1] and pressed(page, "quality") == ["indifferent"]
    # answer one question of pair 4, undo it: the pair is open again
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert shown_pair(page) == order[3]
    page.keyboard.press("1")
    assert pressed(page, "quality") == ["left"]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("U")  # undo jumps back to the pair it changed
    assert shown_pair(page) == order[3] and pressed(page, "quality") == [] and pressed(page, "alignment") == []
    assert page.text_content("#done") == f"3 of {n} answered"

    # downloading needs a rater id; typing it must not trigger the answer shortcuts ("1" in "rater-1")
    downloads = []
    page.on("download", lambda d: downloads.append(d))
    page.click("#download")
    assert "rater id" in page.text_content("#status") and not downloads
    page.click("#rater")
    page.keyboard.type("rater-1")
    page.keyboard.press("Enter")
    assert pressed(page, "quality") == [] and page.text_content("#done") == f"3 of {n} answered"
    page.reload()
    assert page.input_value("#rater") == "rater-1"
    page.click("#download")
    deadline = time.monotonic() + 10
    while len(downloads) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    names = sorted(d.suggested_filename for d in downloads)
    assert len(names) == 2 and names[0].endswith(".csv") and names[1].endswith(".json"), names
    files = {}
    for d in downloads:
        files[Path(d.suggested_filename).suffix] = tmp_path / d.suggested_filename
        d.save_as(files[Path(d.suggested_filename).suffix])

    rows = list(csv.DictReader(open(files[".csv"], newline="")))
    assert list(rows[0]) == ["rater_id", "pair_id", "question", "answer", "timestamp"]
    got = {(r["pair_id"], r["question"]): r["answer"] for r in rows}
    want = {(order[i], q): a for i, answers in enumerate(plan) for q, a in answers.items()}
    assert got == want and {r["rater_id"] for r in rows} == {"rater-1"}
    doc = json.loads(files[".json"].read_text())
    assert {(r["pair_id"], r["question"]): r["answer"] for r in doc["ratings"]} == want
    assert doc["export_id"] == read_pairs(export)[0].export_id

    # the downloads feed bench.ratings; the numbers follow from the key
    key = read_key(export)
    for question in ("quality", "alignment"):
        choices = [a if a == "indifferent" else ("A" if a == key[pid].a_side else "B")
                   for (pid, q), a in want.items() if q == question]
        expect = [choices.count(c) / len(choices) for c in ("A", "indifferent", "B")]
        for files_given in ([files[".csv"]], [files[".json"]], [files[".csv"], files[".json"]]):
            s = summarize(export, files_given, n_boot=200, plot=False)
            r = s.table[(s.table["question"] == question) & (s.table["category"] == "all")].iloc[0]
            assert [r.pref_a, r.indifferent, r.pref_b] == pytest.approx(expect)
            assert r.n_ratings == 3 and r.n_raters == 1
    assert s.superseded == 6  # the CSV and the JSON hold the same answers
