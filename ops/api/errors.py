"""One error shape for every failure, `{"error": CODE, "detail": TEXT}`, so clients parse a single format.

Framework errors (validation, unknown route, wrong method) are rewritten into it; `middleware` does the same
for oversized bodies and unexpected exceptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from chargeops.logs import LineBudget
from telemetry.metrics import API_REFUSED

log = logging.getLogger("chargeops.api")

# Seconds an overloaded API asks clients to wait.
OVERLOADED_RETRY_AFTER = 2
_overload_lines = LineBudget(10)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    429: "rate_limited",
    415: "unsupported_media_type",
}


class ErrorOut(BaseModel):
    """The body of every 4xx and 5xx answer (some carry more fields, e.g. OCPP error codes)."""

    error: str
    detail: str


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer with."""
    return {status: {"model": ErrorOut} for status in statuses}


class ApiError(Exception):
    """Raised by routes and dependencies; `extra` adds fields next to `error` and `detail`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers


def error_response(
    status: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": code, "detail": detail, **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation(errors: Sequence[Any]) -> str:
    """`loc: message` per problem, built from pydantic's messages only: the offending input is never echoed,
    because it may be a password."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()))
        message = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            where, message = "body", f"invalid JSON ({err.get('ctx', {}).get('error', 'unparseable')})"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.extra, exc.headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "bad_request")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422, or 415 when the body was rejected only because it was not sent as JSON (FastAPI then never
    parses it, and pydantic's complaint about the body's type would mislead)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors) and not media_type.endswith("json"):
        return error_response(
            415, "unsupported_media_type", "send the body as Content-Type: application/json"
        )
    return error_response(422, "invalid_request", describe_validation(errors))


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """A number the database cannot hold (an id beyond 64 bits, say): the caller's mistake, not a 500, and
    one log line without the SQL or its parameters."""
    log.warning(
        "%s %s: a value out of the database's range (%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return error_response(422, "out_of_range", "a number in the request is out of range")


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    """Every API database connection stayed busy for the pool's timeout: the API is overloaded, which is
    not the caller's fault nor a bug; 503 tells clients to come back (the chargers' pool is not touched)."""
    API_REFUSED.labels("overloaded").inc()
    write, held = _overload_lines.spend(time.monotonic())
    if held:
        log.warning("%d more requests refused as overloaded in the last minute", held)
    if write:
        log.warning("%s %s: the API's database connections are all busy", request.method, request.url.path)
    return error_response(
        503,
        "overloaded",
        "the API's database connections are all busy; retry shortly",
        headers={"Retry-After": str(OVERLOADED_RETRY_AFTER)},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(PoolTimeout, _pool_exhausted)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(DataError, _out_of_range)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
