"""Analysis of side-by-side ratings (bench.ratings): unblinding, preference rates with
bootstrap CIs, rejection of bad rows, and inter-rater agreement on hand-computed cases."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from bench.ratings import (RatingsError, bootstrap_shares, fleiss_kappa, krippendorff_alpha_nominal,
                           percent_agreement, summarize)

REPO = Path(__file__).resolve().parents[1]
EXPORT_ID = "e0e0e0e0aaaaaaaa"
# pair id -> (category, side model A was shown on)
PAIRS = {"e0e0e0e0-001": ("Colors", "left"), "e0e0e0e0-002": ("Colors", "right"),
         "e0e0e0e0-003": ("Counting", "left"), "e0e0e0e0-004": ("Counting", "right")}
COLUMNS = ["rater_id", "pair_id", "question", "answer", "timestamp"]


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """A hand-written export directory: pairs.csv and key.csv as bench.pairs writes them."""
    out = tmp_path / "export"
    out.mkdir()
    with open(out / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair_id", "prompt_id", "prompt", "category", "left_images", "right_images", "export_id"])
        for i, (pid, (cat, _)) in enumerate(PAIRS.items()):
            w.writerow([pid, f"drawbench-{i:03d}", f"prompt {i}", cat, f"img/{i}l.png", f"img/{i}r.png", EXPORT_ID])
    with open(out / "key.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair_id", "prompt_id", "a_side", "left_model", "right_model", "left_run",
                    "left_guidance_weight", "right_run", "right_guidance_weight"])
        for i, (pid, (_, side)) in enumerate(PAIRS.items()):
            lr = ("A", "B") if side == "left" else ("B", "A")
            runs = {"A": ("/runs/model_a", "3"), "B": ("/runs/model_b", "1")}
            w.writerow([pid, f"drawbench-{i:03d}", side, *lr, *runs[lr[0]], *runs[lr[1]]])
    return out


def write_csv(path: Path, rows: list[list[str]], header: list[str] = COLUMNS) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# rater r1, in the rater's view (left / right), and what it means after unblinding
R1 = [["r1", "e0e0e0e0-001", "quality", "left", "2025-01-01T10:00:00Z"],         # A
      ["r1", "e0e0e0e0-002", "quality", "left", "2025-01-01T10:00:01Z"],         # B
      ["r1", "e0e0e0e0-003", "quality", "indifferent", "2025-01-01T10:00:02Z"],  # indifferent
      ["r1", "e0e0e0e0-004", "quality", "right", "2025-01-01T10:00:03Z"],        # A
      ["r1", "e0e0e0e0-001", "alignment", "left", "2025-01-01T10:00:04Z"],       # A
      ["r1", "e0e0e0e0-002", "alignment", "right", "2025-01-01T10:00:05Z"],      # A
      ["r1", "e0e0e0e0-003", "alignment", "left", "2025-01-01T10:00:06Z"],       # A
      ["r1", "e0e0e0e0-004", "alignment", "left", "2025-01-01T10:00:07Z"]]       # B


def row(table, question: str, category: str):
    r = table[(table["question"] == question) & (table["category"] == category)]
    assert len(r) == 1
    return r.iloc[0]


def test_known_ratings_give_known_rates(export, tmp_path):
    f = write_csv(tmp_path / "r1.csv", R1)
    s = summarize(export, [f], n_boot=500)
    q, a = row(s.table, "quality", "all"), row(s.table, "alignment", "all")
    assert (q.n_ratings, q.n_pairs, q.n_raters) == (4, 4, 1)
    assert (q.pref_a, q.indifferent, q.pref_b) == (0.5, 0.25, 0.25)
    assert (a.pref_a, a.indifferent, a.pref_b) == (0.75, 0.0, 0.25)
    colors, counting = row(s.table, "quality", "Colors"), row(s.table, "quality", "Counting")
    assert (colors.pref_a, colors.pref_b) == (0.5, 0.5) and colors.n_pairs == 2
    assert (counting.pref_a, counting.indifferent, counting.pref_b) == (0.5, 0.5, 0.0)
    assert row(s.table, "alignment", "Colors").pref_a == 1.0
    for col in ("pref_a", "indifferent", "pref_b"):  # the CI holds the estimate, inside [0, 1]
        assert ((s.table[f"{col}_lo"] <= s.table[col]) & (s.table[col] <= s.table[f"{col}_hi"])).all()
        assert ((s.table[f"{col}_lo"] >= 0) & (s.table[f"{col}_hi"] <= 1)).all()
    ac = row(s.table, "alignment", "Colors")  # every rating says A: the CI is degenerate
    assert (ac.pref_a_lo, ac.pref_a_hi) == (1.0, 1.0)
    assert np.isnan(q.percent_agreement) and q.n_pairs_multi_rated == 0  # one rater: no agreement
    assert q.a_run == "/runs/model_a (w=3)" and q.b_run == "/runs/model_b (w=1)"
    # outputs: the summary table and the plot
    on_disk = list(csv.DictReader(open(export / "ratings_summary.csv")))
    assert len(on_disk) == len(s.table) == 6 and on_disk[0]["question"] == "quality"
    assert on_disk[0]["category"] == "all" and float(on_disk[0]["pref_a"]) == 0.5
    with Image.open(export / "ratings.png") as im:
        assert im.size[0] > 500 and im.size[1] > 300
    assert not (export / "ratings_rejected.csv").exists()


def test_json_and_csv_raters_merge(export, tmp_path):
    f1 = write_csv(tmp_path / "r1.csv", R1)
    r2 = [dict(zip(COLUMNS, ["r2", p, "quality", "right", "2025-01-02T00:00:00+00:00"])) for p in PAIRS]
    f2 = tmp_path / "r2.json"
    f2.write_text(json.dumps({"export_id": EXPORT_ID, "rater_id": "r2", "ratings": r2}))
    s = summarize(export, [f1, f2], n_boot=200)
    q = row(s.table, "quality", "all")
    # r2 said "right" 4 times: B, A, B, A -> with r1: A = 2 + 2, indifferent 1, B = 1 + 2
    assert (q.n_ratings, q.n_raters, q.n_pairs_multi_rated) == (8, 2, 4)
    assert (q.pref_a, q.indifferent, q.pref_b) == (4 / 8, 1 / 8, 3 / 8)
    # r1: left, left, indifferent, right; r2: right x4 -> agree on pair 004 only
    assert q.percent_agreement == pytest.approx(1 / 4)
    # giving the same file twice changes nothing: the duplicates are superseded
    s2 = summarize(export, [f1, f2, f1], n_boot=200, plot=False)
    assert s2.superseded == len(R1)
    assert row(s2.table, "quality", "all").pref_a == q.pref_a


def test_unknown_pairs_and_malformed_rows_are_rejected(export, tmp_path):
    rows = R1[:2] + [
        ["r1", "ffffffff-009", "quality", "left", ""],                  # line 4: unknown pair
        ["r1", "e0e0e0e0-003", "fidelity", "left", ""],                 # line 5: unknown question
        ["r1", "e0e0e0e0-003", "quality", "A", ""],                     # line 6: A/B instead of left/right
        ["", "e0e0e0e0-003", "alignment", "left", ""],                  # line 7: no rater
        ["r1", "e0e0e0e0-004", "alignment", "left", "yesterday"],       # line 8: bad timestamp
    ] + R1[2:4]
    f = write_csv(tmp_path / "bad.csv", rows)
    s = summarize(export, [f], n_boot=100)
    got = {(r.row, r.reason.split(" ")[0]) for r in s.rejected}
    assert got == {("line 4", "unknown"), ("line 5", "question"), ("line 6", "answer"), ("line 7", "empty"),
                   ("line 8", "timestamp")}
    assert all(r.file == str(f) for r in s.rejected)
    assert "unknown pair_id 'ffffffff-009'" in s.rejected[0].reason
    assert len(s.ratings) == 4  # every valid row is kept
    assert row(s.table, "quality", "all").n_ratings == 4
    rejected = list(csv.DictReader(open(export / "ratings_rejected.csv")))
    assert [r["row"] for r in rejected] == ["line 4", "line 5", "line 6", "line 7", "line 8"]
    with pytest.raises(RatingsError, match=r"5 rating row\(s\) rejected \(strict=true\):\n  .*bad.csv, line 4: "
                                           r"unknown pair_id"):
        summarize(export, [f], strict=True)


def test_unusable_files_are_errors(export, tmp_path):
    garbage = tmp_path / "g.json"
    garbage.write_text('{"ratings": [1, 2,')
    with pytest.raises(RatingsError, match=r"g.json, line 1: not valid JSON"):
        summarize(export, [garbage])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"export_id": "0123456789abcdef", "ratings": []}))
    with pytest.raises(RatingsError, match=r"other.json: ratings of export 0123456789abcdef, but this export is "
                       + EXPORT_ID):
        summarize(export, [other])
    nocols = write_csv(tmp_path / "n.csv", [["x", "y"]], header=["who", "what"])
    with pytest.raises(RatingsError, match=r"n.csv: not a rating CSV \(missing column\(s\) rater_id, pair_id, "
                                           r"question, answer"):
        summarize(export, [nocols])
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"rater_id": "r", "pair_id": "e0e0e0e0-001", "question": "quality"}, "x"]))
    with pytest.raises(RatingsError, match=r"no valid ratings"):
        summarize(export, [items])
    with pytest.raises(RatingsError, match=r"items.json, ratings\[0\]: missing answer"):
        summarize(export, [items], strict=True)


# counts of (left, indifferent, right) per item; worked by hand:
# P_i = 1, 1/3, 1/3, 0 -> percent agreement 5/12; p = (1/2, 1/6, 1/3), P_e = 7/18 -> kappa = 1/22;
# coincidences o_LL=4, o_LI=.5, o_LR=1.5, o_IR=1.5, o_RR=1; n = (6, 2, 4); D_o = 7/12, D_e = 2/3 -> alpha = 1/8
HAND = np.array([[3, 0, 0], [2, 0, 1], [0, 1, 2], [1, 1, 1]])
# unequal raters: P_i = 1, 0, 1 -> 2/3; p = (3/7, 1/7, 3/7), P_e = 19/49 -> kappa = 41/90;
# o_LL=2, o_LI=o_IL=1, o_RR=3, n = (3, 1, 3) -> D_o = 2/7, D_e = 5/7 -> alpha = 3/5 (one-rating items ignored)
UNEQUAL = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 3]])


def test_agreement_on_hand_computed_cases():
    assert percent_agreement(HAND) == pytest.approx(5 / 12)
    assert fleiss_kappa(HAND) == pytest.approx(1 / 22)
    assert krippendorff_alpha_nominal(HAND) == pytest.approx(1 / 8)
    assert percent_agreement(UNEQUAL) == pytest.approx(2 / 3)
    assert fleiss_kappa(UNEQUAL) == pytest.approx(41 / 90)
    assert krippendorff_alpha_nominal(UNEQUAL) == pytest.approx(3 / 5)
    assert krippendorff_alpha_nominal(np.vstack([UNEQUAL, [[0, 1, 0]]])) == pytest.approx(3 / 5)
    perfect = np.array([[2, 0, 0], [0, 0, 2], [0, 3, 0]])
    assert (percent_agreement(perfect), fleiss_kappa(perfect), krippendorff_alpha_nominal(perfect)) == (1, 1, 1)
    assert np.isnan(fleiss_kappa(np.array([[2, 0, 0], [3, 0, 0]])))  # one category only: undefined


def test_agreement_through_the_summary(export, tmp_path):
    """Three raters whose quality answers on pairs 001-004 give the counts of HAND."""
    answers = {"e0e0e0e0-001": ["left"] * 3, "e0e0e0e0-002": ["left", "left", "right"],
               "e0e0e0e0-003": ["indifferent", "right", "right"], "e0e0e0e0-004": ["left", "indifferent", "right"]}
    files = []
    for r in range(3):
        rows = [[f"rater{r}", p, "quality", a[r], ""] for p, a in answers.items()]
        files.append(write_csv(tmp_path / f"rater{r}.csv", rows))
    s = summarize(export, files, n_boot=100)
    q = row(s.table, "quality", "all")
    assert q.n_pairs_multi_rated == 4 and q.n_raters == 3
    assert q.percent_agreement == pytest.approx(5 / 12)
    assert q.fleiss_kappa == pytest.approx(1 / 22)
    assert q.krippendorff_alpha == pytest.approx(1 / 8)


def test_bootstrap_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(1)
    counts = rng.multinomial(3, [0.5, 0.2, 0.3], size=80)  # 80 pairs, 3 ratings each
    point, lo, hi = bootstrap_shares(counts, n_boot=4000, ci=0.95, seed=0)
    assert point == pytest.approx(counts.sum(0) / counts.sum())
    ref = stats.bootstrap((counts[:, 0], counts.sum(1)), lambda a, n, axis=-1: a.sum(axis) / n.sum(axis),
                          paired=True, vectorized=True, n_resamples=4000, method="percentile",
                          confidence_level=0.95, random_state=np.random.default_rng(5))
    assert lo[0] == pytest.approx(ref.confidence_interval.low, abs=0.015)
    assert hi[0] == pytest.approx(ref.confidence_interval.high, abs=0.015)
    again = bootstrap_shares(counts, n_boot=4000, ci=0.95, seed=0)
    assert np.array_equal(again[1], lo) and np.array_equal(again[2], hi)  # fixed seed


def test_cli(export, tmp_path):
    f = write_csv(tmp_path / "r1.csv", R1)
    bad = write_csv(tmp_path / "bad.csv", [["r9", "nope", "quality", "left", ""]])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "bench.ratings", f"pairs={export}", f"ratings=[{f},{bad}]", "n_boot=200"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"rejected: {bad}, line 2: unknown pair_id 'nope'" in r.stdout
    assert "8 ratings from 1 rater(s) used; 1 rejected" in r.stdout
    assert "quality    all" in r.stdout and "0.50 [" in r.stdout
    assert (export / "ratings_summary.csv").is_file() and (export / "ratings.png").is_file()
    r = subprocess.run(cmd + ["strict=true"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and f"{bad}, line 2: unknown pair_id 'nope'" in r.stderr
