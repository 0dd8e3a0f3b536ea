"""The Postgres fast path of ingest: binary COPY, with `events` as the arbiter of what is new.

Committing row by row caps Postgres at a few thousand rows a second, and even `executemany` sends one Bind
per row; COPY streams a whole batch in one go. COPY cannot say `ON CONFLICT`, so the event rows go into a
per-session temporary staging table first (`ON COMMIT DELETE ROWS`: empty again after every commit) and one
`INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING` moves them on and names the events that were new. Only
their samples are then COPYed, straight into `meter_samples` (no staging, no conflict check, no unique index:
an event's samples are written in the transaction that inserted the event, which keeps them unique — two
ingest processes holding the same event serialise on its `events` key, and the loser sees a conflict).
Last, the (charger, minute) buckets the rollups must recompute. Everything happens in the caller's
transaction, so a failed batch leaves nothing behind and is retried whole.

A small batch (a quiet fleet: one charger's call waiting alone) takes `insert_small` instead: the same three
steps as one statement of data-modifying CTEs over `unnest`ed arrays. COPY and the staging table cost five
round trips and a truncate at commit whatever the batch's size, which is most of a lone call's answer time.

`store_at_once` goes one step further for the common small batch (meter values, status, heartbeats; no
transaction energy, presence or swaps): events, samples, rollup marks, connector status and `last_seen` in
one statement sent outside any transaction block, which Postgres runs as its own transaction. One round trip
instead of five (BEGIN, events, status, last_seen, COMMIT): with 10,000 chargers connected each round trip
waits for a turn of the gateway's busy loop, and the calls of a batch are answered only after its commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
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
        END IF;
    END $$
    """
)
# In key order: two ingest processes given overlapping batches (a re-delivery) wait for each other on the
# first shared key instead of each holding one the other needs (a deadlock).
_NEW_EVENTS = text(
    f"""
    INSERT INTO events ({", ".join(EVENT_COLUMNS)})
    SELECT {", ".join(EVENT_COLUMNS)} FROM pg_temp.ingest_events ORDER BY event_id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
)
# DO UPDATE, not DO NOTHING: the row lock makes a concurrent rollup run wait for this commit. Sorted input:
# two ingest processes marking the same buckets lock them in the same order and never deadlock.
_DIRTY = text(
    """
    INSERT INTO meter_rollup_dirty (charger_id, bucket)
    SELECT * FROM unnest(CAST(:chargers AS text[]), CAST(:buckets AS timestamptz[]))
    ON CONFLICT (charger_id, bucket) DO UPDATE SET bucket = excluded.bucket
    """
)


async def copy_events(
    conn: AsyncConnection,
    events: Sequence[tuple[Any, ...]],
    samples: Callable[[set[str]], Sequence[tuple[Any, ...]]],
) -> set[str]:
    """Store `events` (rows in EVENT_COLUMNS order, `data` as JSON text) and, for the ids among them that
    were not stored before, the rows `samples(new_ids)` gives (SAMPLE_COLUMNS order); returns the new ids."""
    await conn.execute(_STAGE)
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    await raw.copy_records_to_table("ingest_events", records=events, columns=EVENT_COLUMNS)
    fresh = {row[0] for row in await conn.execute(_NEW_EVENTS)}
    rows = samples(fresh) if fresh else ()
    if rows:
        await raw.copy_records_to_table("meter_samples", records=rows, columns=SAMPLE_COLUMNS)
        marks = sorted(dirty_buckets(rows))
        await conn.execute(_DIRTY, {"chargers": [c for c, _ in marks], "buckets": [b for _, b in marks]})
    return fresh


SMALL_BATCH = 64  # events; above it COPY's streaming wins

# The events, their samples (of the events that were new) and the rollup marks, as CTEs of one statement.
_EVENT_CTES = f"""
    new AS (
        INSERT INTO events ({", ".join(EVENT_COLUMNS)})
        SELECT * FROM unnest(
            CAST(:event_id AS text[]), CAST(:charger_id AS text[]), CAST(:kind AS text[]),
            CAST(:reported_at AS timestamptz[]), CAST(:received_at AS timestamptz[]), CAST(:data AS json[])
        ) ORDER BY 1
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id
    ), samples AS (
        INSERT INTO meter_samples ({", ".join(SAMPLE_COLUMNS)})
        SELECT * FROM unnest(
            CAST(:s_event_id AS text[]), CAST(:s_idx AS int[]), CAST(:s_charger_id AS text[]),
            CAST(:s_evse_id AS int[]), CAST(:s_connector_id AS int[]), CAST(:s_transaction_id AS text[]),
            CAST(:s_sampled_at AS timestamptz[]), CAST(:s_measurand AS text[]), CAST(:s_phase AS text[]),
            CAST(:s_location AS text[]), CAST(:s_context AS text[]), CAST(:s_unit AS text[]),
            CAST(:s_value AS float8[])
        ) AS s ({", ".join(SAMPLE_COLUMNS)})
        WHERE s.event_id IN (SELECT event_id FROM new)
        RETURNING charger_id, sampled_at
    ), dirty AS (
        INSERT INTO meter_rollup_dirty (charger_id, bucket)
        SELECT DISTINCT charger_id, date_trunc('minute', sampled_at) FROM samples ORDER BY 1, 2
        ON CONFLICT (charger_id, bucket) DO UPDATE SET bucket = excluded.bucket
        RETURNING 1
    )"""
_SMALL = text(f"WITH {_EVENT_CTES}\nSELECT event_id FROM new")
# Lock order as on the transactional path (`telemetry.ingest`): rollup marks, then connectors, then chargers,
# each by key. Postgres runs the CTEs of one statement in no promised order, so each waits for the one before
# by a one-time filter on it: `status` for `dirty`, `locked` (the chargers to touch, locked in id order) for
# `status`; `touched` updates only what `locked` holds.
_AT_ONCE = text(
    f"""WITH {_EVENT_CTES}, status AS (
        INSERT INTO connectors (charger_id, evse_id, connector_id, status, error_code, vendor_error_code,
                                reported_at)
        SELECT * FROM unnest(
            CAST(:c_charger_id AS text[]), CAST(:c_evse_id AS int[]), CAST(:c_connector_id AS int[]),
            CAST(:c_status AS text[]), CAST(:c_error_code AS text[]), CAST(:c_vendor_error_code AS text[]),
            CAST(:c_reported_at AS timestamptz[])
        ) WHERE (SELECT count(*) FROM dirty) >= 0
        ORDER BY 1, 2, 3
        ON CONFLICT (charger_id, evse_id, connector_id) DO UPDATE SET
            status = excluded.status, error_code = excluded.error_code,
            vendor_error_code = excluded.vendor_error_code, reported_at = excluded.reported_at
        WHERE connectors.reported_at IS NULL OR connectors.reported_at <= excluded.reported_at
        RETURNING 1
    ), locked AS (
        SELECT id FROM chargers
        WHERE id = ANY(CAST(:t_id AS text[]))
          AND (SELECT count(*) FROM status) >= 0
        ORDER BY id FOR NO KEY UPDATE
    ), touched AS (
        UPDATE chargers SET last_seen = t.seen
        FROM unnest(CAST(:t_id AS text[]), CAST(:t_seen AS timestamptz[])) AS t (id, seen)
        WHERE chargers.id = t.id AND chargers.id IN (SELECT id FROM locked)
          AND (chargers.last_seen IS NULL OR chargers.last_seen < t.seen)
        RETURNING 1
    )
    SELECT event_id FROM new"""
)
STATUS_COLUMNS = (
    "charger_id",
    "evse_id",
    "connector_id",
    "status",
    "error_code",
    "vendor_error_code",
    "reported_at",
)


async def store_at_once(
    conn: AsyncConnection,
    events: Sequence[tuple[Any, ...]],
    samples: Callable[[set[str]], Sequence[tuple[Any, ...]]],
    status: Sequence[dict[str, Any]],
    touch: dict[str, datetime],
) -> set[str]:
    """`insert_small` plus connector status rows (`STATUS_COLUMNS`) and `last_seen` per charger, in one
    statement; `conn` is outside a transaction block (AUTOCOMMIT), so the statement is one transaction."""
    params = _small_params(events, samples)
    if not status and not touch:  # the shorter statement: less for Postgres to plan
        return {row[0] for row in await conn.execute(_SMALL, params)}
    params.update({f"c_{c}": [row[c] for row in status] for c in STATUS_COLUMNS})
    ids = sorted(touch)
    params.update({"t_id": ids, "t_seen": [touch[c] for c in ids]})
    return {row[0] for row in await conn.execute(_AT_ONCE, params)}


def _small_params(
    events: Sequence[tuple[Any, ...]], samples: Callable[[set[str]], Sequence[tuple[Any, ...]]]
) -> dict[str, list[Any]]:
    rows = samples({e[0] for e in events})
    params: dict[str, list[Any]] = {c: [e[i] for e in events] for i, c in enumerate(EVENT_COLUMNS)}
    params.update({f"s_{c}": [r[i] for r in rows] for i, c in enumerate(SAMPLE_COLUMNS)})
    return params


async def insert_small(
    conn: AsyncConnection,
    events: Sequence[tuple[Any, ...]],
    samples: Callable[[set[str]], Sequence[tuple[Any, ...]]],
) -> set[str]:
    """`copy_events` for a small batch, in one round trip (see the module's docstring); same contract."""
    return {row[0] for row in await conn.execute(_SMALL, _small_params(events, samples))}


def dirty_buckets(rows: Iterable[tuple[Any, ...]]) -> set[tuple[str, datetime]]:
    """The (charger, minute) rollup buckets that sample rows (SAMPLE_COLUMNS order) fall into."""
    stamps = {(r[2], r[6]) for r in rows}  # an event's samples mostly share one time: truncate each once
    return {(charger, at.replace(second=0, microsecond=0)) for charger, at in stamps}
