"""Shared fixtures: real databases (SQLite file, fresh Postgres database) and a running chargeops process."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.settings import Settings
from ops.runtime import Runtime

# Test modules import helpers from the browser and certificate plugins before naming them in `pytest_plugins`:
# their asserts are rewritten all the same (and pytest does not warn that it came too late).
pytest.register_assert_rewrite("tests.browser", "tests.certificate_support")

PG_ADMIN_DSN = os.environ.get("CHARGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tests fire API requests faster than any operator; the rate limit is tested where it is the subject
# (tests/test_api_limits.py), with the limit given explicitly, and stays out of the way elsewhere.
os.environ.setdefault("CHARGEOPS_API_RATE_LIMIT", "off")


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/chargeops.db"


def _pg_admin(sql: str) -> None:
    """Run one admin statement on a private event loop (fixtures set up outside the test's loop)."""

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh Postgres database for one test. No Postgres is a failure, never a skip."""
    name = f"chargeops_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Runs the test once on the embedded default and once on the real Postgres."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


@asynccontextmanager
async def migrated_sessions(url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on a database brought to the newest migration; the engine is disposed after."""
    engine = make_engine(url)
    try:
        await upgrade(engine)
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


StartRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def start_runtime(sqlite_url: str) -> AsyncIterator[StartRuntime]:
    """Start a whole chargeops process (all roles) on ephemeral ports; stopped after the test."""
    started: list[Runtime] = []

    async def start(database_url: str | None = None, **overrides: Any) -> Runtime:
        settings = Settings(
            database_url=database_url or sqlite_url,
            ocpp_port=0,
            http_port=0,
            admin_token=SecretStr("test-admin-token"),
            **overrides,
        )
        runtime = Runtime(settings)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()
