"""Fixtures for the operator-API tests, loaded through `pytest_plugins` by each `test_api_*` module.

Every test runs twice, through conftest's `db_url`: on SQLite in `tmp_path` and on a fresh PostgreSQL
database created for it (and dropped after); PostgreSQL being unreachable fails the test, never skips it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.settings import Settings
from ops.api import create_app
from telemetry.bus import InProcessBus
from tests.conftest import migrated_sessions

ADMIN_TOKEN = "admin-secret-token-for-tests"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api_sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated, empty database: SQLite and PostgreSQL in turn (conftest's `db_url`)."""
    async with migrated_sessions(db_url) as sessions:
        yield sessions


@pytest.fixture
def api_bus() -> InProcessBus:
    return InProcessBus()


@pytest.fixture
def api_settings() -> Settings:
    return Settings(admin_token=SecretStr(ADMIN_TOKEN), call_timeout=7.0)


@pytest.fixture
def api_app(
    api_sessions: async_sessionmaker[AsyncSession], api_bus: InProcessBus, api_settings: Settings
) -> FastAPI:
    return create_app(api_sessions, api_bus, api_settings)


@pytest.fixture
async def admin(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client holding the admin token (tests of other roles pass their own header)."""
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=bearer(ADMIN_TOKEN)
    ) as c:
        yield c


@pytest.fixture
async def anonymous(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client without any token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api_app), base_url="http://api") as c:
        yield c


async def issue_token(admin: httpx.AsyncClient, role: str) -> str:
    """A fresh token of `role`, issued through the API by `admin`."""
    r = await admin.post("/api/tokens", json={"name": f"{role}-test", "role": role})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert isinstance(token, str)
    return token


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the JSON error shape with this status and code; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body
