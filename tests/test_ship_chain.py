"""Shipping a training chain: the last phase's EMA, the whole chain's loss log, every phase's recipe."""
import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from bench.ship_chain import ship


def _phase(chain, name, first, n, seconds=10.0, mark=0.0, ema_step=None, **recipe):
    """A finished phase: steps first .. first + n - 1 logged, its EMA saved at first + n."""
    p = chain / name
    p.mkdir(parents=True)
    meta = {"imagen_bench": json.dumps({"train_steps": first + n if ema_step is None else ema_step})}
    save_file({"w": torch.full((2,), mark)}, str(p / "ema.safetensors"), metadata=meta)
    (p / "recipe.json").write_text(json.dumps({"recipe": {"steps": first + n, **recipe}, "seed": 0}))
    (p / "loss.csv").write_text("".join(f"{s},0.5,{seconds * (s - first + 1) / n:.1f}\n" for s in range(first, first + n)))
    return p


def test_ship_takes_the_last_phase_in_training_order_and_all_of_the_loss(tmp_path):
    chain, out, start = tmp_path / "chain", tmp_path / "out", tmp_path / "v1.safetensors"
    start.write_bytes(b"the first weights")
    _phase(chain, "1_mix", 0, 3, mark=1)
    _phase(chain, "2_left", 3, 2, mark=2, steps_after=2)              # its end: 2 steps past its first
    last = _phase(chain, "10_last", 5, 2, mark=10)                    # numeric order, not name order ("10" < "2")
    (chain / "notes").mkdir()                                         # not a phase: no recipe.json
    ship(chain, out, started_from=start)
    assert (out / "ema.safetensors").read_bytes() == (last / "ema.safetensors").read_bytes()
    rows = [r.split(",") for r in (out / "loss.csv").read_text().splitlines()]
    assert [int(r[0]) for r in rows] == list(range(7))
    assert [float(r[2]) for r in rows][2:5] == [10.0, 15.0, 20.0]   # seconds go on from the phase before
    assert (out / "loss.png").stat().st_size > 0
    record = json.loads((out / "recipe.json").read_text())
    assert list(record["phases"]) == ["1_mix", "2_left", "10_last"]
    assert record["started_from"] == {"path": str(start), "sha256": hashlib.sha256(b"the first weights").hexdigest()}


def test_an_order_phase_ends_where_its_check_stopped_it(tmp_path):
    chain = tmp_path / "chain"
    _phase(chain, "1_mix", 0, 3)
    order = _phase(chain, "2_order", 3, 2)
    (order / "recipe.json").write_text(json.dumps({"recipe": {"steps": 100}}))   # the cap, not reached
    with pytest.raises(ValueError, match="unfinished"):
        ship(chain, tmp_path / "out")
    (order / "until.json").write_text(json.dumps({"step": 5}))
    ship(chain, tmp_path / "out")
    assert len((tmp_path / "out" / "loss.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("fault, match", [("gap", "starts at step 4"), ("killed", "unfinished"),
                                          ("ema behind", "EMA at step 3"), ("unnumbered", "<number>_<name>")])
def test_ship_refuses_a_chain_it_cannot_vouch_for_and_writes_nothing(tmp_path, fault, match):
    chain = tmp_path / "chain"
    _phase(chain, "1_mix", 0, 3)
    if fault == "gap":
        _phase(chain, "2_left", 4, 2)
    elif fault == "killed":               # logged 2 of the 4 steps its recipe asks for
        p = _phase(chain, "2_left", 3, 2)
        (p / "recipe.json").write_text(json.dumps({"recipe": {"steps": 7}}))
    elif fault == "ema behind":           # killed between checkpoints: the log runs past the EMA
        _phase(chain, "2_left", 3, 2, ema_step=3)
    else:
        _phase(chain, "left", 3, 2)
    with pytest.raises(ValueError, match=match):
        ship(chain, tmp_path / "out")
    assert not (tmp_path / "out").exists()
