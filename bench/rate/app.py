"""The campaign's HTTP routes (Starlette).

    GET  /                     a plain page (nothing about the campaign)
    GET  /r/{token}            the rater's page (403 for an unknown token)
    GET  /img/{name}           an image of the export's pairs, by its content-hash name (else 404)
    POST /api/answer           {"token", "pair_id", "question", "answer"}: stored, then 200
    POST /api/retract          {"token", "pair_id", "question"}: the rater's undo, then 200
    POST /api/state            {"token"}: the rater's own latest answers
    GET  /admin/{token}        the admin page (403 for a wrong token)
    GET  /api/admin/summary    the admin page's numbers (Authorization: Bearer ADMIN_TOKEN)

A rater is known only by the token in the request; every read and write is scoped to that
rater's own items, so no request can read or change another rater's answers. An answer is
committed to the database before the 200 goes out (answers arriving together share a commit:
``bench.rate.writer``); a database error answers 503 (the page retries). Reads run in
Starlette's thread pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bench.rate.campaign import Campaign, Seat
from bench.rate.live import LiveSummary
from bench.rate.pages import HEADERS, admin_page, message_page, rater_page
from bench.rate.payload import Posted, Refused, parse
from bench.rate.writer import BatchWriter

IMAGE_HEADERS = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}


def _json(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _refused(status: int, reason: str) -> JSONResponse:
    return _json(status, {"ok": False, "error": reason})


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` (a stream is not read further)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class RateApp:
    def __init__(self, campaign: Campaign, *, max_body_bytes: int, live: LiveSummary) -> None:
        self.c = campaign
        self.limit = max_body_bytes
        self.live = live
        self.writer: BatchWriter | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.writer = BatchWriter(self.c.store)
        try:
            yield
        finally:
            self.writer.close()

    async def write(self, op: Any) -> bool:
        """Run a store operation through the group-commit writer; returns once it is committed."""
        assert self.writer is not None, "the app's lifespan starts the writer"
        return await asyncio.wrap_future(self.writer.submit(op))

    async def posted(self, request: Request, kind: str) -> tuple[Posted, Seat] | JSONResponse:
        body = await _body(request, self.limit)
        got = Refused(413, f"body over {self.limit} bytes") if body is None else parse(body, kind, self.limit)
        if isinstance(got, Refused):
            return _refused(got.status, got.reason)
        seat = await run_in_threadpool(self.c.seat, got.token)  # may reload the raters from the database
        if seat is None:
            return _refused(403, "unknown token")
        if kind != "state" and got.pair_id not in seat.items:
            known = got.pair_id.removesuffix("/swap") in self.c.pairs
            return _refused(422 if known else 404, "pair not in your sequence" if known else "unknown pair")
        return got, seat

    async def answer(self, request: Request) -> Response:
        got = await self.posted(request, "answer")
        if isinstance(got, JSONResponse):
            return got
        p, seat = got
        changed = await self.write(partial(self.c.store.record_in, rater_id=seat.rater.rater_id,
                                           item=seat.items[p.pair_id], question=p.question, answer=p.answer))
        return _json(200, {"ok": True, "changed": changed})

    async def retract(self, request: Request) -> Response:
        got = await self.posted(request, "retract")
        if isinstance(got, JSONResponse):
            return got
        p, seat = got
        changed = await self.write(partial(self.c.store.retract_in, rater_id=seat.rater.rater_id,
                                           item=seat.items[p.pair_id], question=p.question))
        return _json(200, {"ok": True, "changed": changed})

    async def state(self, request: Request) -> Response:
        got = await self.posted(request, "state")
        if isinstance(got, JSONResponse):
            return got
        _, seat = got
        mine = await run_in_threadpool(self.c.store.answers, seat.rater.rater_id)
        return _json(200, {"ok": True, "rater_id": seat.rater.rater_id, "items": [i.item_id for i in seat.order],
                           "answers": [{"pair_id": a.item_id, "question": a.question, "answer": a.answer,
                                        "timestamp": a.received_at} for a in mine]})

    async def rater(self, request: Request) -> Response:
        seat = await run_in_threadpool(self.c.seat, request.path_params["token"])
        if seat is None:
            return HTMLResponse(message_page("Not a valid rating link", "Check the link you were sent."), 403,
                                headers=HEADERS)
        mine = await run_in_threadpool(self.c.store.answers, seat.rater.rater_id)
        return HTMLResponse(rater_page(seat, self.c.pairs, self.c.export_id, mine), headers=HEADERS)

    async def image(self, request: Request) -> Response:
        path = self.c.image_path(request.path_params["name"])
        if path is None:
            return Response("not found", 404, media_type="text/plain")
        return FileResponse(path, media_type="image/png", headers=IMAGE_HEADERS)

    def _is_admin(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self.c.admin_token.encode())

    async def admin(self, request: Request) -> Response:
        if not self._is_admin(request.path_params["token"]):
            return HTMLResponse(message_page("Not a valid admin link", "Check the link."), 403, headers=HEADERS)
        return HTMLResponse(admin_page(self.c.admin_token), headers=HEADERS)

    async def admin_summary(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self._is_admin(auth[len("Bearer "):]):
            return _refused(403, "admin token required")
        return _json(200, await run_in_threadpool(self.live.get))

    async def root(self, request: Request) -> Response:
        return HTMLResponse(message_page("DrawBench rating", "Open the rating link you were sent."), headers=HEADERS)


async def _database_error(request: Request, exc: Exception) -> Response:
    return _refused(503, "the database is busy or unavailable; try again")


def build_app(campaign: Campaign, *, max_body_bytes: int = 4096, live: LiveSummary | None = None) -> Starlette:
    """The ASGI application serving ``campaign``."""
    h = RateApp(campaign, max_body_bytes=max_body_bytes,
                live=live or LiveSummary(campaign, n_boot=500, ci=0.95, every_s=2.0))
    routes = [Route("/", h.root), Route("/r/{token}", h.rater), Route("/img/{name}", h.image),
              Route("/api/answer", h.answer, methods=["POST"]), Route("/api/retract", h.retract, methods=["POST"]),
              Route("/api/state", h.state, methods=["POST"]), Route("/admin/{token}", h.admin),
              Route("/api/admin/summary", h.admin_summary)]
    return Starlette(routes=routes, exception_handlers={SQLAlchemyError: _database_error}, lifespan=h.lifespan)
