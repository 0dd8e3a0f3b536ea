"""The Postgres fast path of ingest: binary COPY into staging tables, then one idempotent INSERT … SELECT.

Committing row by row caps Postgres at a few thousand rows a second, and even `executemany` sends one Bind
per row; COPY streams a whole batch in one go. COPY cannot say `ON CONFLICT`, so rows go into per-session
temporary staging tables first (`ON COMMIT DELETE ROWS`: they are empty again after every commit) and one
statement moves them on: events `ON CONFLICT DO NOTHING`, then only the samples of the events that were
new, then the (charger, minute) buckets the rollups must recompute. Everything happens in the caller's
transaction, so a failed batch leaves nothing behind and is retried whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

EVENT_COLUMNS = ("event_id", "charger_id", "kind", "reported_at", "received_at", "data")
SAMPLE_COLUMNS = (
    "event_id",
    "idx",
    "charger_id",
    "evse_id",
    "connector_id",
    "transaction_id",
    "sampled_at",
    "measurand",
    "phase",
    "location",
    "context",
    "unit",
    "value",
)

# One round trip that also opens the transaction: asyncpg's adapter begins lazily, on the first statement
# SQLAlchemy runs, and COPY on the raw connection must not run before it (it would autocommit).
_STAGE = text(
    """
    DO $$ BEGIN
        IF to_regclass('pg_temp.ingest_events') IS NULL THEN
            CREATE TEMP TABLE ingest_events (LIKE events) ON COMMIT DELETE ROWS;
            CREATE TEMP TABLE ingest_samples (LIKE meter_samples) ON COMMIT DELETE ROWS;
        END IF;
    END $$
    """
)
_cols = ", ".join(SAMPLE_COLUMNS)
_MOVE = text(
    f"""
    WITH fresh AS (
        INSERT INTO events ({", ".join(EVENT_COLUMNS)})
        SELECT {", ".join(EVENT_COLUMNS)} FROM pg_temp.ingest_events
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), samples AS (
        INSERT INTO meter_samples ({_cols})
        SELECT {", ".join("s." + c for c in SAMPLE_COLUMNS)}
        FROM pg_temp.ingest_samples s JOIN fresh USING (event_id)
        ON CONFLICT DO NOTHING
        RETURNING charger_id, sampled_at
    ), dirty AS (
        -- DO UPDATE, not DO NOTHING: the row lock makes a concurrent rollup run wait for this commit
        INSERT INTO meter_rollup_dirty (charger_id, bucket)
        SELECT DISTINCT charger_id, date_trunc('minute', sampled_at) FROM samples ORDER BY 1, 2
        ON CONFLICT (charger_id, bucket) DO UPDATE SET bucket = excluded.bucket
    )
    SELECT event_id FROM fresh
    """
)


async def copy_events(
    conn: AsyncConnection, events: Sequence[tuple[Any, ...]], samples: Sequence[tuple[Any, ...]]
) -> set[str]:
    """Store `events` (rows in EVENT_COLUMNS order, `data` as JSON text) and their `samples` (SAMPLE_COLUMNS
    order); returns the ids of the events that were not stored before."""
    await conn.execute(_STAGE)
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.copy_records_to_table("ingest_events", records=events, columns=EVENT_COLUMNS)
    if samples:
        await raw.copy_records_to_table("ingest_samples", records=samples, columns=SAMPLE_COLUMNS)
    return {row[0] for row in await conn.execute(_MOVE)}
