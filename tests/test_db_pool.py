"""The Postgres pool pings a connection only after it sat idle (chargeops/db/engine.py `ping_when_idle`):
a connection killed while idle is replaced unseen; a busy pool pays no ping per checkout."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from chargeops.db.engine import make_engine
from tests.conftest import PG_ADMIN_DSN

pytestmark = pytest.mark.postgres


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _kill(pid: int) -> None:
    """What a Postgres restart, a failover or a firewall's idle cut does to a pooled connection."""
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_killed_while_idle_is_replaced_before_use(pg_url: str) -> None:
    engine = make_engine(pg_url, ping_idle_after=0.0, pool_size=1, max_overflow=0)
    try:
        first = await _backend_pid(engine)
        await _kill(first)
        assert await _backend_pid(engine) != first  # pinged, found dead, replaced: no error for the caller
    finally:
        await engine.dispose()


async def test_a_connection_used_within_the_idle_window_is_not_pinged(pg_url: str) -> None:
    """No ping is spent within the window: a connection that died in it fails its statement (as one dying
    in use always did), SQLAlchemy invalidates it, and the next checkout gets a new one."""
    engine = make_engine(pg_url, ping_idle_after=3600.0, pool_size=1, max_overflow=0)
    try:
        first = await _backend_pid(engine)
        await _kill(first)
        with pytest.raises(DBAPIError) as failed:
            await _backend_pid(engine)
        assert failed.value.connection_invalidated
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()
