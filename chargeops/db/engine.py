"""Async engine and session factory, with SQLite tuned for concurrent use by one process."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


PING_IDLE_AFTER = 1.0  # s a pooled Postgres connection may sit unused and still be trusted without a ping
_IDLE_SINCE = "chargeops_idle_since"


def make_engine(url: str, ping_idle_after: float = PING_IDLE_AFTER, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL mode and a busy timeout so readers never block the writer.
    A Postgres pool pings a connection that sat idle `ping_idle_after` s before use (`ping_when_idle`).

    JSON columns go through orjson, which also serialises the event dataclasses and datetimes directly.
    """
    kwargs.setdefault("json_serializer", _json_dumps)
    kwargs.setdefault("json_deserializer", orjson.loads)
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer at a time, and several pooled connections would make
        # writers wait in SQLite's sleeping busy handler instead of a queue.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 0)
        kwargs.setdefault("pool_timeout", 60)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    engine = create_async_engine(url, **kwargs)
    ping_when_idle(engine, ping_idle_after)
    return engine


def ping_when_idle(engine: AsyncEngine, idle_after: float) -> None:
    """Check a pooled connection before use only if it sat unused for `idle_after` seconds.

    SQLAlchemy's `pool_pre_ping` pings at every checkout; on asyncpg that is three round trips (BEGIN, `;`,
    ROLLBACK), a quarter of the ingest commit's CPU and three waits on a busy Postgres per commit, for
    connections that were in use a few milliseconds before. A connection that has been idle — across a
    Postgres restart, a failover, a firewall's idle cut — is still pinged and replaced if dead; one that
    dies while in use fails its statement, and SQLAlchemy then invalidates the pool, as before.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)  # None: a new connection, just opened
        if since is None or time.monotonic() - since < idle_after:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as err:
            raise exc.DisconnectionError(f"idle connection failed its ping: {err}") from err


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def insert_for(dialect: str, table: Any) -> Any:
    """An INSERT with `on_conflict_do_nothing` / `on_conflict_do_update` for the dialect in use:
    idempotent writes look the same on SQLite and Postgres."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def stored_utc(value: datetime) -> datetime:
    """A time read back from the database: SQLite hands it back naive, and every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def stored_iso(value: datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC with `Z`, as the API and webhooks show times (None stays None)."""
    return None if value is None else stored_utc(value).isoformat().replace("+00:00", "Z")
