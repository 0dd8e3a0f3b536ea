"""The app as a whole: health, OpenAPI, and the JSON error shape for whatever goes wrong."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.settings import Settings
from ops.api import create_app
from telemetry.bus import CommandReply, InProcessBus
from tests.test_api_support import ADMIN_TOKEN, assert_error, bearer

pytest_plugins = ("tests.test_api_support",)


async def test_healthz_ok_without_token(anonymous: httpx.AsyncClient) -> None:
    r = await anonymous.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_healthz_503_when_the_database_is_unreachable(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite")
    app = create_app(make_sessionmaker(engine), InProcessBus(), Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
        r = await c.get("/healthz")
    await engine.dispose()
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"


async def test_openapi_and_docs(anonymous: httpx.AsyncClient) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    assert {
        "/api/chargers",
        "/api/chargers/{charger_id}",
        "/api/chargers/{charger_id}/ocpp/{action}",
        "/api/id-tokens/{id_token}",
        "/api/transactions",
        "/api/tokens",
        "/healthz",
    } <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = await anonymous.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize(
    ("method", "url", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/api/nope", 404, "not_found"),
        ("PUT", "/api/chargers", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ],
)
async def test_framework_errors_are_json(
    admin: httpx.AsyncClient, method: str, url: str, status: int, code: str
) -> None:
    assert_error(await admin.request(method, url), status, code)


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}]
)
async def test_a_body_not_sent_as_json_is_415(admin: httpx.AsyncClient, headers: dict[str, str]) -> None:
    r = await admin.post("/api/chargers", content=b'{"id": "CP"}', headers=headers)
    assert_error(r, 415, "unsupported_media_type")
    assert (await admin.get("/api/chargers")).json() == {"items": [], "next": None}


async def test_oversized_body_is_413_declared_or_streamed(admin: httpx.AsyncClient) -> None:
    big = b'{"id": "' + b"x" * (2 << 20) + b'"}'
    json_type = {"content-type": "application/json"}
    assert_error(await admin.post("/api/chargers", content=big, headers=json_type), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    r = await admin.post("/api/chargers", content=chunks(), headers=json_type)
    assert_error(r, 413, "payload_too_large")
    assert (await admin.get("/api/chargers")).json() == {"items": [], "next": None}


async def test_unhandled_exception_is_a_bare_500(
    api_app: FastAPI, api_bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        raise RuntimeError("boom")

    api_bus.hold("CP-1", broken)
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=bearer(ADMIN_TOKEN)
    ) as c:
        await c.post("/api/chargers", json={"id": "CP-1"})
        with caplog.at_level(logging.ERROR, logger="ops.api"):
            r = await c.post("/api/chargers/CP-1/ocpp/Reset", json={"type": "Hard"})
        assert r.status_code == 500
        assert r.json() == {"error": "internal", "detail": "internal server error"}
        assert "boom" not in r.text and "Traceback" not in r.text
        assert "RuntimeError" in caplog.text
        assert (await c.get("/healthz")).status_code == 200  # the app keeps serving


@pytest.mark.parametrize(
    "path", ["/api/tickets/99999999999999999999999", "/api/transactions?offset=10000000000000000000000"]
)
async def test_numbers_beyond_64_bits_are_422_not_500(admin: httpx.AsyncClient, path: str) -> None:
    """Issue 12: an integer the database cannot hold is the caller's mistake (SQLite and Postgres alike)."""
    r = await admin.get(path)
    assert r.status_code == 422 and r.json()["error"] in ("invalid_request", "out_of_range"), r.text


async def test_the_bare_address_points_to_docs_crew_status_and_health(anonymous: httpx.AsyncClient) -> None:
    r = await anonymous.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for link in ('href="/docs"', 'href="/crew"', 'href="/status"', 'href="/healthz"', 'href="/metrics"'):
        assert link in r.text
