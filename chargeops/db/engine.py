"""Async engine and session factory, with SQLite tuned for concurrent use by one process."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`; SQLite gets WAL mode and a busy timeout so readers never block the writer.

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
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


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
