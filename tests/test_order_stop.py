"""Order phases of variable length: stop once the first step's order is learnt, then count on from there."""
import csv
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from bench.first_step import order_scenes
from bench.order_stop import PROBE_N
from bench.shapes import probe_scenes
from bench.train import Recipe, train
from bench.training import state_step
from test_train import _recipe

ENC = {"kind": "minilm", "max_length": 16}


def _rows(d) -> list[dict]:
    with (d / "order.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A two-step run every phase below continues from."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("first")
    train(_recipe(2), d, ckpt_every=2, text_encoder_cfg=ENC)
    return d / "train_state.safetensors"


def test_a_phase_stops_at_the_first_check_that_reaches_the_order_and_stays_stopped(tmp_path, first):
    phase = replace(_recipe(10), continue_from=str(first), until_order=0.0, until_every=2)
    out = tmp_path / "order"
    train(phase, out, ckpt_every=2, text_encoder_cfg=ENC)
    stopped = json.loads((out / "until.json").read_text())
    assert stopped["step"] == 4 and state_step(out / "train_state.safetensors") == 4
    rows = _rows(out)
    assert [r["step"] for r in rows] == ["4"]
    n = len(order_scenes(probe_scenes(PROBE_N, 0)))
    assert int(rows[0]["n"]) == stopped["n"] == n > 50
    assert 0 <= float(rows[0]["order_lo"]) <= float(rows[0]["order"]) <= float(rows[0]["order_hi"]) <= 1
    before = load_file(str(out / "train_state.safetensors"))
    train(phase, out, ckpt_every=2, text_encoder_cfg=ENC)     # called again: it trains no further
    after = load_file(str(out / "train_state.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(_rows(out)) == 1 and (out / "loss.csv").read_text().splitlines()[-1].startswith("3,")


def test_a_phase_that_never_reaches_the_order_runs_to_its_cap_and_logs_every_check(tmp_path, first):
    phase = replace(_recipe(6), continue_from=str(first), until_order=1.01, until_every=2)
    out = tmp_path / "cap"
    train(phase, out, ckpt_every=2, text_encoder_cfg=ENC)
    assert state_step(out / "train_state.safetensors") == 6 and not (out / "until.json").exists()
    assert [r["step"] for r in _rows(out)] == ["4", "6"]
    train(phase, out, ckpt_every=2, text_encoder_cfg=ENC)     # called again: at its cap, nothing to add
    assert [r["step"] for r in _rows(out)] == ["4", "6"] and state_step(out / "train_state.safetensors") == 6


def test_steps_after_count_on_from_the_phase_before_whatever_step_it_stopped_at(tmp_path, first):
    straight = tmp_path / "straight"
    train(_recipe(5), straight, ckpt_every=5, text_encoder_cfg=ENC)
    after = replace(_recipe(999), continue_from=str(first), steps_after=3)
    out = tmp_path / "after"
    train(after, out, ckpt_every=5, text_encoder_cfg=ENC)
    a, b = load_file(str(straight / "train_state.safetensors")), load_file(str(out / "train_state.safetensors"))
    assert int(b["step"]) == 5 and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="steps_after counts on from continue_from"):
        Recipe(stage="base", steps_after=3)
