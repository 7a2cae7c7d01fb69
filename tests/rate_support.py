"""Shared helpers of the rating-campaign tests (tests/test_rate_*.py): fake runs and exports, a
fresh PostgreSQL database per test, a real ``python -m bench.rate serve`` process, and raw HTTP.

PostgreSQL: the server ``.ci/postgres.sh`` starts (``make test`` runs it), at
``$BENCH_TEST_POSTGRES_URL``. Without a server the tests that need one are skipped with the reason,
except in CI (``CI=true``), where they fail.
"""
from __future__ import annotations

import csv
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from bench.pairs import export_pairs, export_runs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql://bench@127.0.0.1:54329/bench_test"
HOSTILE = "<img src=x onerror=alert(1)>"
BREAKOUT = "</script><script>alert(2)</script>"
PROMPTS = [("drawbench-000", "A red colored car.", "Colors"),
           ("drawbench-001", "Three cats and two dogs.", "Counting"),
           ("drawbench-002", "A cube to the left of a sphere.", "Positional"),
           ("drawbench-003", HOSTILE, "Reddit"),
           ("drawbench-004", BREAKOUT, "Reddit"),
           ("drawbench-005", 'A sign that says "Diffusion".', "Text")]


def make_run(root: Path, name: str, tag: int, prompts: list[tuple[str, str, str]] = PROMPTS, samples: int = 2,
             scores: dict[str, tuple[float, bool | None]] | None = None) -> Path:
    """A fake run directory: manifest.csv and small solid-colour PNGs; with ``scores`` (prompt id ->
    CLIP score, correct) also image_scores.csv as bench.metrics writes it."""
    run = root / name
    (run / "images" / "w3").mkdir(parents=True)
    rows, score_rows = [], []
    for p, (pid, text, cat) in enumerate(prompts):
        for s in range(samples):
            rel = f"images/w3/{pid}_s{s}.png"
            Image.new("RGB", (8, 8), ((tag * 83) % 256, (p * 37) % 256, (s * 101 + tag) % 256)).save(run / rel)
            rows.append({"path": rel, "prompt_id": pid, "prompt": text, "category": cat, "seed": s,
                         "guidance_weight": 3.0, "sample_index": s, "image_index": len(rows), "truth": "",
                         "width": 8, "height": 8})
            if scores is not None:
                clip, correct = scores.get(pid, (0.0, None))
                score_rows.append({"path": rel, "prompt_id": pid, "guidance_weight": 3.0, "category": cat, "seed": s,
                                   "clip_score": clip, "correct": "" if correct is None else str(correct),
                                   "color_correct": ""})
    _write_csv(run / "manifest.csv", rows)
    if scores is not None:
        _write_csv(run / "image_scores.csv", score_rows)
    return run


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def make_export(root: Path, prompts: list[tuple[str, str, str]] = PROMPTS, k: int = 1, seed: int = 0) -> Path:
    """A two-model export (bench.pairs) of fake runs under ``root``."""
    out = root / "export"
    export_pairs(make_run(root, "model_a", 1, prompts), make_run(root, "model_b", 2, prompts), out, k=k, seed=seed)
    return out


def make_multi_export(root: Path, n_models: int, prompts: list[tuple[str, str, str]] = PROMPTS, **kw) -> Path:
    out = root / "multi"
    runs = [make_run(root, f"model_{i}", i + 1, prompts) for i in range(n_models)]
    export_runs(runs, out, k=1, **kw)
    return out


# ---------------------------------------------------------------- PostgreSQL

def _server_missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason} (make test runs .ci/postgres.sh)")
    pytest.skip(f"no PostgreSQL server: {reason}; start one with `bash .ci/postgres.sh`")


def postgres_database() -> Iterator[str]:
    """A new, empty database on the test server for one test (dropped after); yields its URL."""
    base = os.environ.get("BENCH_TEST_POSTGRES_URL", DEFAULT_PG)
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        _server_missing(f"{base}: {str(e).strip().splitlines()[0]}")
    name = "bench_rate_" + secrets.token_hex(6)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- a real server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m bench.rate serve`` in a child process on 127.0.0.1."""

    def __init__(self, pairs: Path, db: str | None = None, port: int | None = None) -> None:
        self.pairs, self.db, self.port = pairs, db, port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log = pairs / f"serve-{self.port}.log"

    def start(self, timeout: float = 90.0) -> Server:
        args = [sys.executable, "-m", "bench.rate", "serve", f"pairs={self.pairs}", f"port={self.port}",
                "log_level=warning"] + ([f"db={self.db}"] if self.db else [])
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if request(self.port, "GET", "/")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def admin_token(self) -> str:
        text = self.log.read_text()
        return text.rsplit("/admin/", 1)[1].split()[0]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30.0) -> tuple[int, bytes]:
    """One raw HTTP request to 127.0.0.1 (the path is sent exactly as given, never normalised)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def post_json(port: int, path: str, data: object) -> tuple[int, dict]:
    status, body = request(port, "POST", path, json.dumps(data).encode(), {"Content-Type": "application/json"})
    return status, json.loads(body or b"{}")


def invites(pairs: Path) -> list[dict[str, str]]:
    with open(pairs / "invites.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
