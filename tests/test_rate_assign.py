"""Which rater sees which pair (bench.rate.assign), the checks on a posted answer
(bench.rate.payload) and attention-check consistency (bench.rate.checks): pure functions."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from bench.rate.assign import CHECK_GAP, check_item_id, deal, plan_round, sequence
from bench.rate.checks import consistency
from bench.rate.payload import Posted, Refused, parse
from bench.rate.store import StoredAnswer

PAIRS = [f"p{i:02d}" for i in range(30)]
CATS = {p: ("Colors", "Counting", "Text")[i % 3] for i, p in enumerate(PAIRS)}


@pytest.mark.parametrize("n,per_pair", [(7, 3), (10, 1), (4, 4), (31, 2)])
def test_every_pair_is_seen_by_ratings_per_pair_distinct_raters_and_loads_are_even(n, per_pair):
    dealt = deal(PAIRS, CATS, n, per_pair, random.Random(0))
    seen = Counter(p for pairs in dealt for p in pairs)
    assert set(seen) == set(PAIRS) and set(seen.values()) == {per_pair}
    assert all(len(set(pairs)) == len(pairs) for pairs in dealt)  # nobody sees a pair twice
    loads = [len(pairs) for pairs in dealt]
    assert max(loads) - min(loads) <= 1 and sum(loads) == len(PAIRS) * per_pair
    for cat in ("Colors", "Counting", "Text"):  # categories spread over raters
        per_rater = [sum(CATS[p] == cat for p in pairs) for pairs in dealt]
        assert max(per_rater) - min(per_rater) <= 2


def test_a_round_smaller_than_ratings_per_pair_sees_everything():
    assert deal(PAIRS, CATS, 2, 3, random.Random(0)) == [PAIRS, PAIRS]
    with pytest.raises(ValueError, match="at least one rater"):
        deal(PAIRS, CATS, 0, 3, random.Random(0))


def test_sequences_are_random_per_rater_with_swapped_repeats_later():
    seqs = plan_round(PAIRS, CATS, ["r1", "r2", "r3"], 2, 3, seed=5, round_no=1)
    assert seqs == plan_round(PAIRS, CATS, ["r1", "r2", "r3"], 2, 3, seed=5, round_no=1)  # deterministic
    orders = [[i.pair_id for i in s if not i.swapped] for s in seqs]
    assert len({tuple(o) for o in orders}) == 3
    for s in seqs:
        checks = [i for i in s if i.swapped]
        assert len(checks) == 3 and [i.position for i in s] == list(range(len(s)))
        for c in checks:
            assert c.item_id == check_item_id(c.pair_id) == c.pair_id + "/swap"
            first = next(i for i in s if i.pair_id == c.pair_id and not i.swapped)
            assert c.position - first.position > CHECK_GAP  # not right after the first showing
        assert len({i.item_id for i in s}) == len(s)
    assert plan_round(PAIRS, CATS, ["r1"], 2, 3, seed=6, round_no=1) != plan_round(PAIRS, CATS, ["r1"], 2, 3, 5, 1)


def test_short_sequences_get_at_most_half_as_many_checks():
    assert [i.swapped for i in sequence(["a"], 3, random.Random(0))] == [False]
    s = sequence(["a", "b", "c", "d"], 5, random.Random(0))
    assert sum(i.swapped for i in s) == 2
    assert sum(i.swapped for i in sequence(PAIRS, 0, random.Random(0))) == 0


def _ans(rater: str, pair: str, swapped: bool, q: str, a: str) -> StoredAnswer:
    return StoredAnswer(rater, pair + ("/swap" if swapped else ""), pair, swapped, q, a, "2026-01-01T00:00:00Z")


def test_consistency_maps_the_check_back_to_the_first_sides():
    answers = [_ans("r1", "p1", False, "quality", "left"), _ans("r1", "p1", True, "quality", "right"),  # agrees
               _ans("r1", "p1", False, "alignment", "left"), _ans("r1", "p1", True, "alignment", "left"),  # not
               _ans("r1", "p2", False, "quality", "indifferent"), _ans("r1", "p2", True, "quality", "indifferent"),
               _ans("r1", "p3", True, "quality", "left"),  # first showing not answered: not compared
               _ans("r2", "p1", False, "quality", "right"), _ans("r2", "p1", True, "quality", "right")]
    c = consistency(answers)
    assert (c["r1"].checks, c["r1"].consistent, c["r1"].share) == (3, 2, pytest.approx(2 / 3))
    assert (c["r2"].checks, c["r2"].consistent) == (1, 0)


@pytest.mark.parametrize("body,status", [
    (b"not json", 400), (b"\xff\xfe", 400), (b"[]", 400), (b'"x"', 400),
    (json.dumps({"token": "t", "pair_id": "p", "question": "quality"}).encode(), 400),  # missing answer
    (json.dumps({"token": "t", "pair_id": "p", "question": "quality", "answer": "left", "rater_id": "x"}).encode(), 400),
    (json.dumps({"token": "t", "pair_id": 3, "question": "quality", "answer": "left"}).encode(), 400),
    (json.dumps({"token": "", "pair_id": "p", "question": "quality", "answer": "left"}).encode(), 400),
    (json.dumps({"token": "t", "pair_id": "p", "question": "beauty", "answer": "left"}).encode(), 422),
    (json.dumps({"token": "t", "pair_id": "p", "question": "quality", "answer": "A"}).encode(), 422),
    (json.dumps({"token": "t" * 5000, "pair_id": "p", "question": "quality", "answer": "left"}).encode(), 413),
])
def test_payload_refusals(body, status):
    got = parse(body, "answer", 4096)
    assert isinstance(got, Refused) and got.status == status, got


def test_payload_accepted():
    body = json.dumps({"token": "t", "pair_id": "p/swap", "question": "alignment", "answer": "indifferent"}).encode()
    assert parse(body, "answer", 4096) == Posted("t", "p/swap", "alignment", "indifferent")
    assert parse(b'{"token": "t", "pair_id": "p", "question": "quality"}', "retract", 4096) == Posted("t", "p", "quality")
    assert parse(b'{"token": "t"}', "state", 4096) == Posted("t")
