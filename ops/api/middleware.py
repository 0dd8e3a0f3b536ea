"""ASGI middleware that keeps the JSON error shape where FastAPI's handlers cannot: oversized request bodies
and exceptions that escaped every handler."""

from __future__ import annotations

import logging
import time
import traceback

from sqlalchemy.exc import StatementError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ops.api.errors import error_response

log = logging.getLogger(__name__)
access = logging.getLogger("chargeops.access")


class BodyLimitMiddleware:
    """Refuses request bodies over `limit` bytes with 413: at once when Content-Length says so, else as soon
    as the streamed body passes the limit, so a huge upload is never buffered whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "payload_too_large", self._detail())(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # surfaces through the HTTPException handler as JSON
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self) -> str:
        return f"request body larger than {self.limit} bytes"


def log_unhandled(exc: BaseException, scope: Scope) -> None:
    """Log with the stack, but for database errors without the message: it lists the bound parameters, which
    may hold a password hash or a token digest."""
    where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
    if isinstance(exc, StatementError):
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "unhandled %s (%s) on %s; statement: %s\n%s",
            type(exc).__name__,
            type(exc.orig).__name__,
            where,
            exc.statement,
            stack,
        )
    else:
        log.error("unhandled %s on %s", type(exc).__name__, where, exc_info=exc)


class CatchAllMiddleware:
    """Turns any exception that escaped the routes into a JSON 500.

    Sits inside Starlette's ServerErrorMiddleware, which would answer with plain text and then re-raise, so
    the server would log the raw exception (and its message) a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log_unhandled(exc, scope)
            if not started:
                await error_response(500, "internal", "internal server error")(scope, receive, send)


class AccessLogMiddleware:
    """One INFO line per answered request on `chargeops.access`: method, path and query, status, time taken,
    client address and the token's id and name once authentication knew them (`scope["state"]`), never a
    secret (tokens travel in headers, which are not logged)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        logged = False

        async def recording_send(message: Message) -> None:
            # The line is written before the last body chunk leaves, so the log is in answer order: a client
            # that has its response can rely on the line being there.
            nonlocal status, logged
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body" and not message.get("more_body", False) and not logged
            ):
                logged = True
                self._log(scope, status, (time.perf_counter() - started) * 1000)
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if not logged:
                self._log(scope, status, (time.perf_counter() - started) * 1000)

    @staticmethod
    def _log(scope: Scope, status: int, ms: float) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("path", "?") + (f"?{query}" if query else "")
        client = scope["client"][0] if scope.get("client") else "?"
        who = scope.get("state", {}).get("principal")
        if who is None:
            token = ""
        elif who.token_id is None:
            token = f" {who.name}"  # the admin token from the settings
        else:
            token = f" token {who.token_id} {who.name}"
        access.info(
            "%s %s %d %.1f ms %s%s", scope.get("method", "?"), target, status, ms, client, token,
            extra={"status": status, "duration_ms": round(ms, 1), "client": client,
                   "token_id": who.token_id if who is not None else None},
        )  # fmt: skip
