"""Shared fixtures: real databases (SQLite file, fresh Postgres database) and a running chargeops process."""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.settings import Settings
from ops.runtime import Runtime
from tests.mqtt_brokers import BUS_BROKERS, Broker, running
from tests.ocpp_client import forget_wss, serve_wss
from tests.pki import make_pki

# Test modules import helpers from these plugins before naming them in `pytest_plugins`, or import helper
# modules that are no plugin: their asserts are rewritten all the same (and pytest does not warn, too late).
pytest.register_assert_rewrite(
    "tests.browser",
    "tests.certificate_support",
    "tests.private_services",
    "tests.pipeline_lab",
    "tests.server_process",
    "tests.mini_csms",
    "tests.site_stack",
    "tests.monitoring_stack",
)

PG_ADMIN_DSN = os.environ.get("CHARGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Tests fire API requests faster than any operator; the rate limit is tested where it is the subject
# (tests/test_api_limits.py), with the limit given explicitly, and stays out of the way elsewhere.
os.environ.setdefault("CHARGEOPS_API_RATE_LIMIT", "off")


@pytest.fixture(scope="session", params=BUS_BROKERS)
def mqtt_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Each broker the bus tests run on (tests/mqtt_brokers.py) in turn: a test that takes it runs on every
    one."""
    with running(request.param) as broker:
        yield broker


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
            **{"api_process": False, **overrides},  # in-process tests read the API's metrics and loop
        )
        runtime = Runtime(settings)
        await runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in reversed(started):
        await runtime.stop()
    forget_wss()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates made for this test run (tests/pki.py): CA, RSA and ECDSA server certificates, clients."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def client_tls(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    """A charger's TLS context trusting the test CA, with `pki/cert.pem` as client certificate if given."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def over_ws_and_wss(start: StartRuntime, transport: str, pki: Path) -> StartRuntime:
    """`start_runtime` for a test run once over ws:// and once over wss:// (RSA and ECDSA certificates,
    client CA): in the wss run `raw_charger` connects over TLS. A conformance module opts in with

        @pytest.fixture(params=["ws", "wss"])
        def start_runtime(request, start_runtime, pki):
            return over_ws_and_wss(start_runtime, request.param, pki)
    """
    if transport == "ws":
        return start

    async def start_tls(**overrides: Any) -> Runtime:
        tls = {"tls_cert": pki / "server.pem", "tls_key": pki / "server.key", "tls_client_ca": pki / "ca.pem"}
        tls |= {"tls_second_cert": pki / "server-ec.pem", "tls_second_key": pki / "server-ec.key"}
        runtime = await start(**(tls | overrides))
        assert runtime.gateway is not None
        serve_wss(runtime.gateway.port, client_tls(pki))
        return runtime

    return start_tls
