"""Shared fixtures: real databases (SQLite file, fresh Postgres database) and a running chargeops process."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from chargeops.settings import Settings
from ops.runtime import Runtime

PG_ADMIN_DSN = os.environ.get("CHARGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/chargeops.db"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh Postgres database for one test. No Postgres is a failure, never a skip."""
    name = f"chargeops_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """Runs the test once on the embedded default and once on the real Postgres."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/chargeops.db"
    else:
        yield request.getfixturevalue("pg_url")


StartRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def start_runtime(sqlite_url: str) -> AsyncIterator[StartRuntime]:
    """Start a whole chargeops process (all roles) on ephemeral ports; stopped after the test."""
    started: list[Runtime] = []

    async def start(database_url: str | None = None, **overrides: Any) -> Runtime:
        settings = Settings(
            database_url=database_url or sqlite_url, ocpp_port=0, http_port=0, admin_token="test-admin-token",
            **overrides,
        )
        runtime = Runtime(settings)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()
