"""Load on the rating-campaign server: simulated raters over loopback, answers per second, latency,
and a check that no acknowledged answer was lost or stored twice.

    python -m benchmarks.rate_load [--raters 50] [--duration 20] [--db URL] [--out benchmarks/rate_load.json]
    python benchmarks/rate_load.py ...

It builds a fake two-model export (``--prompts`` pairs), invites ``--raters`` raters (every pair
seen by ``--ratings-per-pair`` of them, with attention checks), starts ``python -m bench.rate serve``
on 127.0.0.1 (the SQLite default unless ``--db``) and runs every rater at once as an asyncio task
with its own keep-alive connection, for ``--duration`` seconds: each posts its items' answers as
fast as they are acknowledged, every answer different from its previous one to that item and
question, and re-sends a share (``--resend``) right after the acknowledgement (a duplicate, which
must come back ``changed: false``). Traffic goes to 127.0.0.1 only, and the run stops by itself.

Then the raters stop, the server is stopped, and the database is compared with what was
acknowledged: ``lost`` counts acknowledged changes missing from the answer history (or a latest
answer that is not the last acknowledged one), ``duplicated`` history rows beyond the acknowledged
changes (and re-sends that were stored again). Both must be zero. Latency is from writing the
request to reading the whole response, measured in the client, which shares the machine's cores
with the server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:  # run as `python benchmarks/rate_load.py`: import from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench import rundir  # noqa: E402
from bench.pairs import export_pairs, read_pairs  # noqa: E402
from bench.rate.engine import default_url  # noqa: E402
from bench.rate.invite import invite  # noqa: E402
from bench.rate.store import Item, Store  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
ANSWERS = ("left", "indifferent", "right")
QUESTIONS = ("quality", "alignment")


def fake_run(root: Path, name: str, tag: int, prompts: int) -> Path:
    run = root / name
    rows = []
    for p in range(prompts):
        rel = f"images/w3/bench-{p:04d}_s0.png"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (tag * 90 % 256, p % 256, p // 256)).save(run / rel)
        rows.append({"path": rel, "prompt_id": f"bench-{p:04d}", "prompt": f"load test prompt {p}",
                     "category": ("Colors", "Counting", "Text", "Reddit")[p % 4], "seed": p, "guidance_weight": 3.0,
                     "sample_index": 0, "image_index": p, "truth": "", "width": 8, "height": 8})
    rundir.write_manifest(run, rows)
    return run


def build_campaign(root: Path, args: argparse.Namespace) -> tuple[Path, str, list[tuple[str, list[Item]]]]:
    """The export, its database URL and each rater's (token, items)."""
    export = root / "export"
    export_pairs(fake_run(root, "a", 1, args.prompts), fake_run(root, "b", 2, args.prompts), export, k=1)
    url = args.db or default_url(export)
    store = Store(url, read_pairs(export)[0].export_id)
    try:
        invite(export, store, args.raters, base=f"http://{HOST}", ratings_per_pair=args.ratings_per_pair,
               attention_checks=3, seed=0)
        items = store.items()
        raters = [(r.token, items[r.rater_id]) for r in store.raters()]
    finally:
        store.close()
    return export, url, raters


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(export: Path, url: str, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.rate", "serve", f"pairs={export}", f"db={url}",
                                 f"host={HOST}", f"port={port}", "log_level=warning"], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


@dataclass
class Tally:
    """What one rater sent and got back."""

    acked: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    refused: int = 0
    resends: int = 0
    resends_stored: int = 0


class Connection:
    """One keep-alive HTTP/1.1 connection posting JSON to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def post(self, path: str, data: dict) -> tuple[int, dict]:
        body = json.dumps(data).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), json.loads(await self.reader.readexactly(length))

    def close(self) -> None:
        self.writer.close()


async def rater(port: int, token: str, items: list[Item], stop_at: float, resend: float, rng: random.Random) -> Tally:
    t = Tally()
    conn = await Connection.open(port)
    keys = [(i.item_id, q) for q in QUESTIONS for i in items]
    n = 0
    try:
        while time.monotonic() < stop_at:
            key = keys[n % len(keys)]
            n += 1
            previous = t.acked.get(key, [None])[-1]
            ans = ANSWERS[(ANSWERS.index(previous) + 1) % 3] if previous else rng.choice(ANSWERS)
            body = {"token": token, "pair_id": key[0], "question": key[1], "answer": ans}
            t0 = time.perf_counter()
            status, reply = await conn.post("/api/answer", body)
            t.latencies.append(time.perf_counter() - t0)
            t.requests += 1
            if status != 200 or reply.get("changed") is not True:
                t.refused += 1
                continue
            t.acked.setdefault(key, []).append(ans)
            if rng.random() < resend:  # the same answer again, as a page retrying would
                t0 = time.perf_counter()
                status, reply = await conn.post("/api/answer", body)
                t.latencies.append(time.perf_counter() - t0)
                t.requests += 1
                t.resends += 1
                t.resends_stored += status == 200 and reply.get("changed") is not False
    finally:
        conn.close()
    return t


async def load(port: int, raters: list[tuple[str, list[Item]]], duration: float, resend: float) -> tuple[list[Tally], float]:
    t0 = time.monotonic()
    tallies = await asyncio.gather(*(rater(port, tok, items, t0 + duration, resend, random.Random(i))
                                     for i, (tok, items) in enumerate(raters)))
    return list(tallies), time.monotonic() - t0


def verify(url: str, raters: list[tuple[str, list[Item]]], tallies: list[Tally]) -> tuple[int, int]:
    """(lost, duplicated): acknowledged answers missing from the database, and extra stored ones."""
    store = Store(url, create=False)
    try:
        by_token = {r.token: r.rater_id for r in store.raters()}
        lost = dup = 0
        for (token, _), t in zip(raters, tallies):
            rid = by_token[token]
            history: dict[tuple[str, str], list[str]] = {}
            for _, item, q, ans, _ in store.history(rid):
                history.setdefault((item, q), []).append(ans)
            latest = {(a.item_id, a.question): a.answer for a in store.answers(rid)}
            for key in set(t.acked) | set(history):
                sent, got = t.acked.get(key, []), history.get(key, [])
                lost += sum(a != b for a, b in zip(sent, got)) + max(0, len(sent) - len(got))
                lost += bool(sent) and latest.get(key) != sent[-1]
                dup += max(0, len(got) - len(sent))
            dup += t.resends_stored
        return lost, dup
    finally:
        store.close()


def summarise(tallies: list[Tally], elapsed: float, lost: int, dup: int, args: argparse.Namespace) -> dict[str, Any]:
    lat = np.array([x for t in tallies for x in t.latencies]) * 1000.0
    requests = sum(t.requests for t in tallies)
    changes = sum(len(v) for t in tallies for v in t.acked.values())
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": {"raters": args.raters, "duration_s": args.duration, "prompts": args.prompts,
                         "ratings_per_pair": args.ratings_per_pair, "resend_share": args.resend,
                         "database": "sqlite (default: WAL, synchronous=FULL, busy timeout)" if not args.db else
                         "given by --db", "host": HOST},
            "answers_per_s": requests / elapsed, "changed_answers_per_s": changes / elapsed,
            "requests": requests, "changed_answers": changes, "resends": sum(t.resends for t in tallies),
            "refused": sum(t.refused for t in tallies), "elapsed_s": elapsed,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
                           "p99": float(np.percentile(lat, 99)), "max": float(lat.max())},
            "lost": lost, "duplicated": dup,
            "machine": {"cpu_count": os.cpu_count(), "loadavg_end": list(os.getloadavg()),
                        "python": platform.python_version(), "platform": platform.platform()}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raters", type=int, default=50)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (bounded)")
    p.add_argument("--prompts", type=int, default=200, help="pairs in the fake export")
    p.add_argument("--ratings-per-pair", type=int, default=3)
    p.add_argument("--resend", type=float, default=0.1, help="share of answers sent twice")
    p.add_argument("--db", default=None, help="database URL (default: SQLite inside the export)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "rate_load.json")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.raters <= 500:
        p.error("--duration must be in (0, 600] s and --raters in (0, 500]")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="rate_load_") as tmp:
        export, url, raters = build_campaign(Path(tmp), args)
        port = free_port()
        server = start_server(export, url, port, Path(tmp) / "serve.log")
        try:
            cpu0, client0 = cpu_seconds(server.pid), time.process_time()
            tallies, elapsed = asyncio.run(load(port, raters, args.duration, args.resend))
            cpu = {"server_cpu_s": cpu_seconds(server.pid) - cpu0, "client_cpu_s": time.process_time() - client0}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        lost, dup = verify(url, raters, tallies)
    result = summarise(tallies, elapsed, lost, dup, args)
    result["machine"]["loadavg_start"] = load_start
    result["cpu"] = {**cpu, "server_cpu_ms_per_request": 1000 * cpu["server_cpu_s"] / max(1, result["requests"]),
                     "note": "both processes share the machine's cores (os.cpu_count() in machine)"}
    rundir.atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    lat = result["latency_ms"]
    print(f"{args.raters} raters, {elapsed:.1f} s: {result['answers_per_s']:.0f} answers/s "
          f"({result['changed_answers_per_s']:.0f} stored changes/s), p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; "
          f"lost {lost}, duplicated {dup}; wrote {args.out}")
    if lost or dup:
        raise SystemExit("answers were lost or duplicated")
    return result


if __name__ == "__main__":
    main()
