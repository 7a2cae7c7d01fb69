"""bench.paired: paired bootstrap over prompts, independent intervals in quadrature, verdicts, and the
calibration that justifies them (false "worse" verdicts at most ~ (1 - ci_level) / 2 under no change)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.paired import (BETTER, NO_EVIDENCE, WORSE, PairedError, compare_pair, image_values, independent_interval,
                          paired_bootstrap, paired_rows, verdict)


def test_verdict_is_direction_aware():
    assert verdict(0.1, 0.3, "higher") == BETTER and verdict(0.1, 0.3, "lower") == WORSE
    assert verdict(-0.3, -0.1, "higher") == WORSE and verdict(-0.3, -0.1, "lower") == BETTER
    assert verdict(-0.1, 0.1, "higher") == NO_EVIDENCE and verdict(0.0, 0.0, "lower") == NO_EVIDENCE
    assert verdict(float("nan"), 1.0, "higher") == NO_EVIDENCE


def test_independent_interval_adds_half_widths_in_quadrature():
    lo, hi = independent_interval(10.0, 3.0, 15.0, 4.0)
    assert (lo, hi) == pytest.approx((0.0, 10.0))
    assert all(math.isnan(x) for x in independent_interval(1.0, float("nan"), 2.0, 1.0))


def test_paired_bootstrap_resamples_prompts_jointly():
    rng = np.random.default_rng(0)
    hard = pd.Series(rng.normal(0, 5, 40), index=[f"p{i}" for i in range(40)])  # prompts differ a lot
    a = hard + rng.normal(0, 0.1, 40)
    b = hard + 0.3 + rng.normal(0, 0.1, 40)
    ma, mb, lo, hi, n = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert n == 40 and lo > 0.2 and hi < 0.4  # paired: the prompt spread cancels
    # the same numbers unpaired would not see it (per-run half-widths ~ 1.96 x 5 / sqrt(40) ~ 1.5 each)
    h = 1.96 * float(np.std(a, ddof=1)) / math.sqrt(40)
    ulo, uhi = independent_interval(a.mean(), h, b.mean(), h)
    assert ulo < 0 < uhi
    # prompts present in one run only are left out; deterministic for a seed
    assert paired_bootstrap(a, b.iloc[:10], seed=1)[4] == 10
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)


def test_false_worse_rate_under_no_change_is_at_most_the_one_sided_level():
    """Two independent runs of the same model (other noise) over 12 prompts (a CI category row), 400 times:
    the 95% paired interval says "worse" in at most ~2.5% (+ small-n slack) of them."""
    rng = np.random.default_rng(123)
    idx = [f"p{i}" for i in range(12)]
    worse = 0
    trials = 400
    for t in range(trials):
        difficulty = rng.normal(0, 2, 12)
        a = pd.Series(difficulty + rng.normal(0, 1, 12), index=idx)
        b = pd.Series(difficulty + rng.normal(0, 1, 12), index=idx)
        _, _, lo, hi, _ = paired_bootstrap(a, b, n_boot=500, seed=t)
        worse += verdict(lo, hi, "higher") == WORSE
    assert worse / trials <= 0.06


def _run(tmp_path, name, clip, correct, weights=(1.0,), fd=30.0):
    run = tmp_path / name
    run.mkdir()
    rows, per = [], []
    for w in weights:
        for i, (c, ok) in enumerate(zip(clip, correct)):
            path = f"images/w{w:g}/p{i}_s0.png"
            cat = ("Colors", "Counting")[i % 2]
            rows.append({"path": path, "prompt_id": f"p{i}", "prompt": f"prompt {i}", "category": cat,
                         "seed": i, "guidance_weight": w, "sample_index": 0})
            per.append({"path": path, "prompt_id": f"p{i}", "guidance_weight": w, "category": cat, "seed": i,
                        "clip_score": c, "correct": ok})
    pd.DataFrame(rows).to_csv(run / "manifest.csv", index=False)
    per = pd.DataFrame(per)
    per.to_csv(run / "image_scores.csv", index=False)
    m = []
    for w in weights:
        for cat in ("all", "Colors", "Counting"):
            sel = per[(per.guidance_weight == w) & ((per.category == cat) if cat != "all" else True)]
            m.append({"guidance_weight": w, "category": cat, "num_images": len(sel),
                      "clip_score": sel.clip_score.mean(), "alignment": sel.correct.astype(float).mean(),
                      "fd": fd, "fd_ci_low": fd - 2, "fd_ci_high": fd + 2})
    pd.DataFrame(m).to_csv(run / "metrics.csv", index=False)
    return run


def test_compare_pair_reads_runs_and_reports_every_metric_row(tmp_path):
    a = _run(tmp_path, "a", clip=[20, 21, 22, 23, 24, 25], correct=[True] * 6)
    b = _run(tmp_path, "b", clip=[21, 22, 23, 24, 25, 26], correct=[True, False, True, False, True, False], fd=40.0)
    vals = image_values(b)
    assert list(vals.columns) == ["prompt_id", "sample_index", "guidance_weight", "category", "clip_score", "correct"]
    assert vals["correct"].tolist() == [1.0, 0.0] * 3
    got = compare_pair(a, b, n_boot=500).set_index(["metric", "category"])
    assert got.loc[("clip_score", "all"), "diff"] == pytest.approx(1.0)
    assert got.loc[("clip_score", "all"), "verdict"] == BETTER   # every prompt +1: interval [1, 1]
    assert got.loc[("alignment", "Counting"), "verdict"] == WORSE  # all 3 Counting prompts now wrong
    assert got.loc[("fd", "all"), "verdict"] == WORSE               # 10 +- 2 sqrt(2)
    assert "ignores the pairing" in got.loc[("fd", "all"), "method"]
    assert ("cmmd", "all") not in got.index                          # no such column: no row


def test_no_image_scores_falls_back_to_row_intervals_and_no_shared_prompts_is_an_error(tmp_path):
    a = _run(tmp_path, "a", clip=[20, 21], correct=[True, True])
    b = _run(tmp_path, "b", clip=[20, 21], correct=[True, True])
    (b / "image_scores.csv").unlink()
    got = compare_pair(a, b)
    assert (got.loc[got.metric == "clip_score", "verdict"] == NO_EVIDENCE).all()  # no clip_score_ci columns
    c = _run(tmp_path, "c", clip=[20, 21], correct=[True, True])
    per = pd.read_csv(c / "image_scores.csv")
    per["prompt_id"] = "other" + per["prompt_id"]
    per.to_csv(c / "image_scores.csv", index=False)
    with pytest.raises(PairedError, match="share no prompt_id"):
        compare_pair(a, c)
    assert paired_rows(None, None, pd.read_csv(a / "metrics.csv"), pd.read_csv(a / "metrics.csv"),
                       metrics=["fd"])["verdict"].eq(NO_EVIDENCE).all()
