"""Group commit: one thread writes every answer, and the answers that arrive while a transaction
is committing go into the next transaction together. A commit on SQLite with ``synchronous=FULL``
is an fsync (milliseconds on a real disk); sharing it among the answers that queued up meanwhile
keeps every answer on disk before its 200 while the server takes many answers a second.

If a batch fails as a whole, its operations are retried one transaction each, so one bad
operation fails alone; a database that stays unavailable fails them all (the server answers 503
and the page sends again).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy import Connection

from bench.rate.store import Store

Op = Callable[[Connection], Any]


class BatchWriter:
    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store, self.max_batch = store, max_batch
        self._queue: queue.Queue[tuple[Op, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="answer-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> Future:
        """Queue ``op``; its future holds the op's result once its transaction has committed."""
        fut: Future = Future()
        self._queue.put((op, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _take(self) -> list[tuple[Op, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                results = self.store.write(lambda conn: [op(conn) for op, _ in batch])
            except Exception:  # noqa: BLE001 (each op is retried alone below, and fails alone)
                self._one_by_one(batch)
                continue
            for (_, fut), result in zip(batch, results):
                fut.set_result(result)

    def _one_by_one(self, batch: list[tuple[Op, Future]]) -> None:
        for op, fut in batch:
            try:
                fut.set_result(self.store.write(op))
            except Exception as e:  # noqa: BLE001 (handed to the request that waits for it)
                fut.set_exception(e)
