"""Shipping a training chain: the last phase's EMA, the whole chain's loss log, every phase's recipe."""
import json

import pytest

from bench.ship_chain import ship


def _phase(chain, name, first, n, seconds=10.0, ema=b"weights"):
    p = chain / name
    p.mkdir(parents=True)
    (p / "ema.safetensors").write_bytes(ema)
    (p / "recipe.json").write_text(json.dumps({"recipe": {"steps": first + n}, "seed": 0}))
    (p / "loss.csv").write_text("".join(f"{s},0.5,{seconds * (s - first + 1) / n:.1f}\n" for s in range(first, first + n)))


def test_ship_takes_the_last_phase_in_training_order_and_all_of_the_loss(tmp_path):
    chain, out = tmp_path / "chain", tmp_path / "out"
    _phase(chain, "1_mix", 0, 3, ema=b"one")
    _phase(chain, "2_left", 3, 2, ema=b"two")
    _phase(chain, "10_last", 5, 2, ema=b"ten")       # numeric order, not name order ("10" < "2")
    (chain / "notes").mkdir()                        # not a phase: no recipe.json
    ship(chain, out)
    assert (out / "ema.safetensors").read_bytes() == b"ten"
    rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(7))
    assert [float(r[2]) for r in rows][2:5] == [10.0, 15.0, 20.0]   # seconds go on from the phase before
    assert (out / "loss.png").stat().st_size > 0
    assert list(json.loads((out / "recipe.json").read_text())["phases"]) == ["1_mix", "2_left", "10_last"]


def test_ship_refuses_a_gap_between_phases_or_an_unfinished_phase(tmp_path):
    chain = tmp_path / "chain"
    _phase(chain, "1_mix", 0, 3)
    _phase(chain, "2_left", 4, 2)
    with pytest.raises(ValueError, match="starts at step 4"):
        ship(chain, tmp_path / "out")
    (chain / "2_left" / "ema.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="2_left"):
        ship(chain, tmp_path / "out")
    assert not (tmp_path / "out").exists()
