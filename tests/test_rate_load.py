"""The load benchmark of the rating server (benchmarks/rate_load.py), briefly: a few simulated raters
over loopback for two seconds, and its own check that nothing acknowledged was lost or duplicated."""
from __future__ import annotations

import json

from benchmarks.rate_load import main


def test_load_benchmark_smoke(tmp_path):
    out = tmp_path / "rate_load.json"
    result = main(["--raters", "4", "--duration", "2", "--prompts", "12", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["refused"] == 0
    assert result["requests"] > 0 and result["answers_per_s"] > 0 and result["resends"] >= 0
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["settings"]["host"] == "127.0.0.1"
