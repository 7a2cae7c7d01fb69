"""The served rating page and admin page in a real browser: headless Chromium (Debian's) driven
by Playwright against ``python -m bench.rate serve`` on 127.0.0.1. A rater rates with the
keyboard, reloads and continues, undoes, keeps answering while the server is down (the page
sends once it is back); hostile prompts stay text on both pages.

Needs the `playwright` package and a system Chromium (`.ci/install-chromium.sh`); never run
`playwright install`.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.pairs import read_pairs
from bench.rate.cli import main as rate_main
from bench.rate.engine import default_url
from bench.rate.store import Store
from rate_support import BREAKOUT, HOSTILE, Server, invites, make_export, post_json



@pytest.fixture()
def campaign(tmp_path: Path):
    export = make_export(tmp_path)
    rate_main(["invite", f"pairs={export}", "n=2", "ratings_per_pair=2", "attention_checks=1"])
    server = Server(export).start()
    yield export, server
    server.kill()


@pytest.fixture()
def page(browser, campaign):
    _, server = campaign
    ctx = browser.new_context()
    pg = ctx.new_page()
    pg.dialogs, pg.errors, pg.requests = [], [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    ctx.close()
    assert not pg.errors, pg.errors
    assert not pg.dialogs, f"a dialog fired: {pg.dialogs}"
    assert all(u.startswith(server.base + "/") for u in pg.requests), pg.requests


def shown(page) -> str:
    return page.get_attribute("#pair", "data-pair-id")


def pressed(page, question: str) -> list[str]:
    return page.eval_on_selector_all(f'button[data-question="{question}"][aria-pressed="true"]',
                                     "els => els.map(e => e.dataset.answer)")


def until(check, timeout_s: float = 60, what: str = "") -> None:
    """Poll ``check()`` from here (the pages' CSP forbids the eval behind Playwright's wait_for_function)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def saved(page, timeout_s: float = 60) -> None:
    """Wait until the page has no answer left to send."""
    until(lambda: page.get_attribute("#sync", "data-pending") == "0", timeout_s, "all answers sent")


def stored(export: Path, rater: str) -> dict[tuple[str, str], str]:
    store = Store(default_url(export))
    try:
        return {(a.item_id, a.question): a.answer for a in store.answers(rater)}
    finally:
        store.close()


def test_rate_reload_undo_and_answers_kept_while_the_server_restarts(page, campaign):
    export, server = campaign
    me = invites(export)[0]
    page.goto(me["url"].replace("http://127.0.0.1:8000", server.base))
    order = page.evaluate("JSON.parse(document.getElementById('pairs-data').textContent).pairs.map(p => p.pair_id)")
    n = len(order)
    assert n == len(read_pairs(export)) + 1  # every pair, and one attention check
    assert page.text_content("#progress") == f"Pair 1 of {n}" and page.text_content("#sync") == "All answers saved."
    assert not page.is_visible("#download") and page.input_value("#rater") == me["rater_id"]
    assert page.text_content("#pair-id") == ""  # item ids (which would show the checks) stay hidden
    plan = [("1", "4"), ("2", "5"), ("3", "6")]
    for i, keys in enumerate(plan):
        assert shown(page) == order[i]
        for k in keys:
            page.keyboard.press(k)
        assert page.text_content("#progress") == f"Pair {i + 2} of {n}"
    saved(page)
    names = {"1": "left", "2": "indifferent", "3": "right", "4": "left", "5": "indifferent", "6": "right"}
    want = {(order[i], q): names[k] for i, keys in enumerate(plan) for q, k in zip(("quality", "alignment"), keys)}
    assert stored(export, me["rater_id"]) == want

    page.reload()  # a rater who comes back continues where they stopped
    assert page.text_content("#progress") == f"Pair 4 of {n}" and page.text_content("#done") == f"3 of {n} answered"
    page.keyboard.press("ArrowLeft")
    assert pressed(page, "quality") == ["right"] and pressed(page, "alignment") == ["right"]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("3")  # change an answer, then undo it: the server has the earlier one again
    page.keyboard.press("u")
    saved(page)
    assert stored(export, me["rater_id"])[(order[1], "quality")] == "indifferent"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("1")  # a first answer, undone: the server has none
    saved(page)
    assert stored(export, me["rater_id"])[(order[3], "quality")] == "left"
    page.keyboard.press("U")
    saved(page)
    assert (order[3], "quality") not in stored(export, me["rater_id"])

    server.kill()  # the server goes down; the rater goes on
    page.keyboard.press("1")
    page.keyboard.press("6")
    until(lambda: page.get_attribute("#sync", "data-pending") == "2", 20, "two answers waiting")
    until(lambda: "waiting" in page.text_content("#sync"), 20, "the page to say it is waiting")
    server.start()
    saved(page)
    got = stored(export, me["rater_id"])
    assert got[(order[3], "quality")] == "left" and got[(order[3], "alignment")] == "right"
    assert page.text_content("#progress") == f"Pair 5 of {n}"


def test_hostile_prompts_render_as_text_on_the_rater_and_admin_pages(page, campaign):
    export, server = campaign
    raters = invites(export)
    prompts = {p.pair_id: p.prompt for p in read_pairs(export)}
    page.goto(raters[0]["url"].replace("http://127.0.0.1:8000", server.base))
    order = page.evaluate("JSON.parse(document.getElementById('pairs-data').textContent).pairs.map(p => p.pair_id)")
    seen = set()
    for item in order:
        assert shown(page) == item
        assert page.text_content("#prompt") == prompts[item.removesuffix("/swap")]
        assert page.locator("#prompt *").count() == 0
        page.wait_for_function("() => [...document.querySelectorAll('#left img, #right img')].every(e => e.complete)")
        assert page.eval_on_selector_all("#left img, #right img", "els => els.map(e => e.naturalWidth)") == [8, 8]
        seen.add(page.text_content("#prompt"))
        page.keyboard.press("ArrowRight")
    assert {HOSTILE, BREAKOUT} <= seen
    assert page.locator("script").count() == 2

    for r, ans in zip(raters, ("left", "right")):  # the raters disagree on every pair: all are "disputed"
        for item in prompts:
            assert post_json(server.port, "/api/answer", {"token": r["token"], "pair_id": item, "question": "quality",
                                                          "answer": ans})[0] == 200
    page.goto(f"{server.base}/admin/{server.admin_token()}")
    until(lambda: page.locator("#disputed tr").count() > 1, 30, "the admin page's tables")
    cells = page.eval_on_selector_all("#disputed td.prompt", "els => els.map(e => e.textContent)")
    assert {HOSTILE, BREAKOUT} <= set(cells)
    assert page.locator("#disputed img").count() == 0 and page.locator("script").count() == 2
    assert "rater-001" in page.text_content("#raters") and "Reddit" in page.text_content("#categories")
    assert page.locator("#preference tr").count() > 1 and "A = " in page.text_content("#models")
    page.screenshot(path=str(export / "admin.png"), full_page=True)
    page.wait_for_timeout(300)  # time for an injected handler to fire (the fixture checks dialogs)
