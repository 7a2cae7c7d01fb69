"""Many models in one export (bench.pairs runs=[...]), Bradley-Terry strengths and the win-rate
matrix (bench.rate.bradley_terry, bench.rate.ranking through bench.ratings), and the agreement of
the automatic metrics with the raters (bench.rate.metric_agreement)."""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.pairs import PairsError, export_pairs, export_runs, read_image_key, read_key, read_pairs
from bench.rate.bradley_terry import bootstrap, fit, win_probability
from bench.ratings import summarize
from rate_support import PROMPTS, REPO, make_run

MANY = [(f"drawbench-{i:03d}", f"prompt number {i}", ("Colors", "Counting", "Text")[i % 3]) for i in range(12)]


def pixel_name(path: Path) -> str:
    img = Image.open(path).convert("RGB")
    return hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).hexdigest()[:24] + ".png"


def test_all_design_compares_every_pair_of_models_on_every_prompt(tmp_path):
    runs = [make_run(tmp_path, f"secret_model_{i}", i + 1) for i in range(3)]
    ex = export_runs(runs, tmp_path / "out", k=2, seed=1)
    assert ex.num_pairs == 3 * len(PROMPTS) and [m.label for m in ex.models] == ["A", "B", "C"]
    key, pairs = read_key(ex.out), read_pairs(ex.out)
    seen = Counter((p.prompt_id, tuple(sorted(key[p.pair_id].models()))) for p in pairs)
    assert set(seen.values()) == {1}
    assert {m for _, m in seen} == {("A", "B"), ("A", "C"), ("B", "C")}
    for p in pairs:  # the key names the model shown on each side, and its images are that run's
        k = key[p.pair_id]
        first, second = k.models()
        assert first < second and (k.left_model, k.right_model) == ((first, second) if k.a_side == "left" else
                                                                    (second, first))
        run = {"A": runs[0], "B": runs[1], "C": runs[2]}
        for side, images in (("left", p.left_images), ("right", p.right_images)):
            model = k.left_model if side == "left" else k.right_model
            want = [pixel_name(run[model] / f"images/w3/{p.prompt_id}_s{s}.png") for s in range(2)]
            assert [Path(x).name for x in images] == want
    sides = Counter(key[p.pair_id].a_side for p in pairs)
    assert sides["left"] and sides["right"]
    for name in ("pairs.csv", "mturk.csv", "index.html"):
        assert "secret_model" not in (ex.out / name).read_text(encoding="utf-8")
    image_key = read_image_key(ex.out)
    assert len(image_key) == ex.num_pairs * 2 * 2 and {s.model for s in image_key} == {"A", "B", "C"}
    design = json.loads((ex.out / "design.json").read_text())
    assert design["design"] == "all" and [c["prompts"] for c in design["prompts_per_model_pair"]] == [len(PROMPTS)] * 3


def test_balanced_design_states_its_subset(tmp_path):
    runs = [make_run(tmp_path, f"m{i}", i + 1, MANY, samples=1) for i in range(4)]
    ex = export_runs(runs, tmp_path / "out", k=1, design="balanced", per_prompt=1, seed=0)
    assert ex.num_pairs == len(MANY) and ex.design == "balanced"
    design = json.loads((ex.out / "design.json").read_text())
    counts = {(c["first"], c["second"]): c["prompts"] for c in design["prompts_per_model_pair"]}
    assert set(counts) == set(itertools.combinations("ABCD", 2)) and set(counts.values()) == {2}  # 12 prompts / 6
    assert design["per_prompt"] == 1 and len({p.prompt_id for p in read_pairs(ex.out)}) == len(MANY)
    ex2 = export_runs(runs, tmp_path / "out2", k=1, design="balanced", per_prompt=4, seed=0)
    assert ex2.num_pairs == 4 * len(MANY)
    per_prompt = Counter(p.prompt_id for p in read_pairs(ex2.out))
    assert set(per_prompt.values()) == {4}
    with pytest.raises(PairsError, match="per_prompt=7: between 1 and 6"):
        export_runs(runs, tmp_path / "bad", k=1, design="balanced", per_prompt=7)
    with pytest.raises(PairsError, match="design='some'"):
        export_runs(runs, tmp_path / "bad", k=1, design="some")
    with pytest.raises(PairsError, match="do not cover the same prompts"):
        export_runs(runs + [make_run(tmp_path, "short", 9, MANY[:5], samples=1)], tmp_path / "bad", k=1)


def test_two_runs_are_the_same_export_as_a_and_b(tmp_path):
    a, b = make_run(tmp_path, "a", 1), make_run(tmp_path, "b", 2)
    export_pairs(a, b, tmp_path / "ab", k=2, seed=4)
    export_runs([a, b], tmp_path / "runs", k=2, seed=4)
    for name in ("pairs.csv", "key.csv", "key_images.csv", "mturk.csv", "index.html"):
        assert (tmp_path / "ab" / name).read_bytes() == (tmp_path / "runs" / name).read_bytes(), name


def test_cli_runs(tmp_path):
    runs = [make_run(tmp_path, f"m{i}", i + 1, MANY, samples=1) for i in range(3)]
    out = tmp_path / "cli"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "bench.pairs", f"runs=[{','.join(map(str, runs))}]", f"out={out}",
                        "k=1", "design=balanced", "per_prompt=2"], cwd=tmp_path, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert f"{2 * len(MANY)} pairs among 3 runs, design balanced" in r.stdout and "design.json" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bench.pairs", f"runs=[{runs[0]}]", f"out={tmp_path / 'x'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "need at least two" in r.stderr


def test_bradley_terry_matches_the_closed_form_and_recovers_known_strengths():
    theta = fit(np.array([[0, 30], [10, 0]]), prior=0)  # two models: theta_a - theta_b = log(30 / 10)
    assert theta[0] - theta[1] == pytest.approx(np.log(3)) and theta.sum() == pytest.approx(0)
    assert win_probability(theta)[0, 1] == pytest.approx(0.75)
    assert np.isfinite(fit(np.array([[0, 5, 5], [0, 0, 5], [0, 0, 0]]))).all()  # a model that never wins
    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.3, -0.2, -1.1])
    groups = np.zeros((300, 4, 4))
    for g in range(300):
        for i, j in itertools.combinations(range(4), 2):
            for _ in range(3):
                win = rng.random() < 1 / (1 + np.exp(truth[j] - truth[i]))
                groups[g, i, j] += win
                groups[g, j, i] += not win
    point, lo, hi = bootstrap(groups, n_boot=400, seed=1)
    assert np.abs(point - truth).max() < 0.1
    assert ((lo < truth) & (truth < hi)).all() and (hi - lo).max() < 0.3


def _write_ratings(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rater_id", "pair_id", "question", "answer", "timestamp"])
        w.writerows(rows)
    return path


def test_many_models_get_a_ranking_and_a_win_rate_matrix(tmp_path):
    runs = [make_run(tmp_path, f"m{i}", i + 1, MANY, samples=1) for i in range(3)]
    ex = export_runs(runs, tmp_path / "out", k=1, seed=2)
    key = read_key(ex.out)
    strength = {"A": 0, "B": 1, "C": 2}  # C beats everyone, B beats A
    rows = []
    for p in read_pairs(ex.out):
        k = key[p.pair_id]
        winner = max(k.models(), key=strength.get)
        side = k.left_model == winner and "left" or "right"
        for rater in ("r1", "r2"):
            rows.append([rater, p.pair_id, "quality", side, ""])
        rows.append(["r3", p.pair_id, "quality", "indifferent" if winner == "B" else side, ""])
        rows.append(["r1", p.pair_id, "alignment", "left", ""])
    s = summarize(ex.out, [_write_ratings(tmp_path / "r.csv", rows)], n_boot=200)
    quality = s.strengths[s.strengths["question"] == "quality"].set_index("model")
    assert list(quality.sort_values("rank").index) == ["C", "B", "A"]
    assert (quality["strength_lo"] <= quality["strength"]).all() and (quality["strength"] <= quality["strength_hi"]).all()
    assert quality.loc["C", "run"].startswith(str(runs[2].resolve()))
    w = s.winrates[s.winrates["question"] == "quality"].set_index(["model", "opponent"])
    assert w.loc[("C", "A"), "win_rate"] == 1.0 and w.loc[("A", "C"), "win_rate"] == 0.0
    assert w.loc[("B", "A"), "win_rate"] == pytest.approx(5 / 6)  # 2 wins and 1 tie of 3 ratings per prompt
    assert w.loc[("B", "A"), "ties"] == len(MANY) and w.loc[("B", "A"), "n"] == 3 * len(MANY)
    blocks = s.table[(s.table["question"] == "quality") & (s.table["category"] == "all")]
    assert sorted(zip(blocks["model_a"], blocks["model_b"])) == [("A", "B"), ("A", "C"), ("B", "C")]
    ac = blocks[(blocks["model_a"] == "A") & (blocks["model_b"] == "C")].iloc[0]
    assert (ac.pref_a, ac.pref_b) == (0.0, 1.0) and ac.b_run.startswith(str(runs[2].resolve()))
    for name in ("ratings_strengths.csv", "ratings_winrates.csv", "ratings_ranking.png", "ratings_summary.csv"):
        assert (ex.out / name).is_file()
    assert s.plot is None and s.ranking_plot == ex.out / "ratings_ranking.png"


def test_metrics_agreement_with_the_raters_majority(tmp_path):
    prompts = MANY[:6]
    # CLIP: A higher on prompts 0-2, B higher on 3-4, equal on 5; correct: known on prompts 0-2 only
    a_scores = {p[0]: (0.9 if i < 3 else 0.1 if i < 5 else 0.5, [True, True, True][i] if i < 3 else None)
                for i, p in enumerate(prompts)}
    b_scores = {p[0]: (0.2 if i < 3 else 0.8 if i < 5 else 0.5, [False, False, True][i] if i < 3 else None)
                for i, p in enumerate(prompts)}
    a = make_run(tmp_path, "a", 1, prompts, samples=1, scores=a_scores)
    b = make_run(tmp_path, "b", 2, prompts, samples=1, scores=b_scores)
    out = tmp_path / "out"
    export_pairs(a, b, out, k=1, seed=3)
    key = read_key(out)
    # raters' majority prefers A on prompts 0-3 and B on 4-5 (quality); alignment: A everywhere but
    # an indifferent majority on prompt 5 and no majority on prompt 4
    rows = []
    for p in read_pairs(out):
        i = int(p.prompt_id[-3:])
        a_side = key[p.pair_id].a_side
        b_side = "right" if a_side == "left" else "left"
        q = [a_side] * 2 + [b_side] if i < 4 else [b_side] * 2 + [a_side]
        al = {4: [a_side, b_side, "indifferent"], 5: ["indifferent", "indifferent", a_side]}.get(i, [a_side] * 3)
        for r in range(3):
            rows += [[f"r{r}", p.pair_id, "quality", q[r], ""], [f"r{r}", p.pair_id, "alignment", al[r], ""]]
    s = summarize(out, [_write_ratings(tmp_path / "r.csv", rows)], n_boot=100, plot=False)
    m = s.metrics.set_index(["metric", "question"])
    clip_q = m.loc[("clip_score", "quality")]
    assert (clip_q.n_pairs, clip_q.n_decisive, clip_q.agree, clip_q.metric_tie) == (6, 5, 4, 1)
    assert (clip_q.agreement, clip_q.agreement_lo, clip_q.agreement_hi) == pytest.approx((0.8, 0.37553, 0.96378),
                                                                                          abs=1e-4)
    clip_a = m.loc[("clip_score", "alignment")]  # decisive: 0-3 (A); CLIP says A on 0-2, B on 3
    assert (clip_a.n_decisive, clip_a.agree, clip_a.majority_indifferent, clip_a.no_majority) == (4, 3, 1, 1)
    corr_q = m.loc[("correct", "quality")]  # known on 0-2: A on 0-1, a tie on 2
    assert (corr_q.n_pairs, corr_q.n_decisive, corr_q.agree, corr_q.metric_tie) == (3, 2, 2, 1)
    assert (out / "ratings_metrics.csv").is_file()
