"""Bearer tokens and roles on every /api/ route."""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.settings import Settings
from ops.api import create_app
from telemetry.bus import InProcessBus
from tests.conftest import StartRuntime
from tests.test_api_support import ADMIN_TOKEN, assert_error, bearer, issue_token

pytest_plugins = ("tests.test_api_support",)


async def test_every_api_route_needs_a_token(admin: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> None:
    spec = (await admin.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            r = await anonymous.request(method.upper(), url, json={})
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
            checked += 1
    assert checked >= 12


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer wrong-token",
        f"Basic {ADMIN_TOKEN}".encode(),
        b"Bearer",
        f"Bearer {ADMIN_TOKEN}x".encode(),
        "Bearer ünïcode".encode("latin-1"),
    ],
)
async def test_bad_tokens_are_refused(anonymous: httpx.AsyncClient, header: bytes) -> None:
    r = await anonymous.get("/api/chargers", headers={b"Authorization": header})
    assert_error(r, 401, "unauthorized")


async def test_roles_are_ordered(admin: httpx.AsyncClient) -> None:
    tokens = {role: await issue_token(admin, role) for role in ("viewer", "crew", "operator", "admin")}
    for role, token in tokens.items():
        headers = bearer(token)
        assert (await admin.get("/api/chargers", headers=headers)).status_code == 200
        r = await admin.post("/api/chargers", json={"id": f"CP-{role}"}, headers=headers)
        if role in ("viewer", "crew"):
            assert_error(r, 403, "forbidden")
        else:
            assert r.status_code == 201, r.text
        r = await admin.get("/api/tokens", headers=headers)
        if role == "admin":
            assert r.status_code == 200
        else:
            assert_error(r, 403, "forbidden")


async def test_token_lifecycle_never_shows_the_secret_again(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/tokens", json={"name": "grafana", "role": "viewer", "region": "north"})
    assert r.status_code == 201
    created = r.json()
    token = created["token"]
    assert set(created) == {"id", "name", "role", "region", "created_at", "revoked_at", "token"}
    assert created["created_at"].endswith("Z") and created["revoked_at"] is None

    listed = (await admin.get("/api/tokens")).json()["items"]
    assert [t["name"] for t in listed] == ["grafana"]
    assert token not in str(listed) and "token" not in listed[0] and "token_sha256" not in listed[0]
    assert (await admin.get("/api/transactions", headers=bearer(token))).status_code == 200

    assert (await admin.delete(f"/api/tokens/{created['id']}")).status_code == 204
    assert_error(await admin.get("/api/transactions", headers=bearer(token)), 401, "unauthorized")
    revoked = (await admin.get("/api/tokens")).json()["items"][0]
    assert revoked["revoked_at"].endswith("Z")
    assert (await admin.delete(f"/api/tokens/{created['id']}")).status_code == 204
    assert (await admin.get("/api/tokens")).json()["items"][0]["revoked_at"] == revoked["revoked_at"]
    assert_error(await admin.delete("/api/tokens/999"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "root"},
        {"name": "", "role": "viewer"},
        {"role": "viewer"},
        {"name": "x", "role": "viewer", "extra": 1},
    ],
)
async def test_token_requests_are_validated(admin: httpx.AsyncClient, body: dict[str, object]) -> None:
    assert_error(await admin.post("/api/tokens", json=body), 422, "invalid_request")


async def test_without_configured_admin_token_nobody_is_admin(
    api_sessions: async_sessionmaker[AsyncSession], api_bus: InProcessBus
) -> None:
    for configured in (None, SecretStr("")):
        app = create_app(api_sessions, api_bus, Settings(admin_token=configured))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as c:
            for header in (bearer(ADMIN_TOKEN), {"Authorization": "Bearer "}):
                assert_error(await c.get("/api/tokens", headers=header), 401, "unauthorized")


async def test_refused_calls_are_audited_without_the_secret_and_limited(
    admin: httpx.AsyncClient, anonymous: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: every 401 / 403 is one `chargeops.audit` line (path, address, reason, the token's id — never
    its secret), at most `audit.BURST` a minute per address, however many are refused."""
    import logging

    from chargeops import audit

    viewer = await issue_token(admin, "viewer")
    audit.reset()  # a fresh minute for this test
    with caplog.at_level(logging.WARNING, logger="chargeops.audit"):
        r = await anonymous.post("/api/tokens", json={"name": "x", "role": "admin"}, headers=bearer(viewer))
        assert r.status_code == 403
        for i in range(30):
            r = await anonymous.get("/api/chargers", headers=bearer(f"cop_guess{i}"))
            assert r.status_code == 401
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "chargeops.audit"]
    assert len(lines) == audit.BURST
    assert "API 403 POST /api/tokens" in lines[0] and "needs admin, has viewer" in lines[0]
    assert "token " in lines[0] and viewer not in lines[0]
    assert all("API 401 GET /api/chargers" in line and "unknown token" in line for line in lines[1:])
    assert not any("cop_guess" in line for line in lines)


async def test_metrics_can_be_kept_behind_a_token(start_runtime: StartRuntime) -> None:
    """Issue 12: with `metrics_token` set, /metrics answers only that bearer token (default: open)."""
    runtime = await start_runtime(metrics_token=SecretStr("metrics-secret-123"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=bearer("wrong"))).status_code == 401
        r = await http.get("/metrics", headers=bearer("metrics-secret-123"))
        assert r.status_code == 200 and "chargeops_" in r.text
        assert (await http.get("/healthz")).status_code in (200, 503)  # health stays open
