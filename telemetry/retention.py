"""Keeps `meter_samples` and `events` bounded and the rollups current: the ingest role's maintenance task.

On Postgres the samples table is partitioned by day (`meter_samples_pYYYYMMDD`, plus a default partition
that catches anything outside them): partitions are created a week ahead and dropped whole once older than
the retention — dropping a partition costs nothing, unlike deleting millions of rows. A sample that landed
in the default partition (clock skew) moves into its day's partition when that one is created. With
TimescaleDB the hypertable makes its own chunks and old ones go with `drop_chunks`. SQLite deletes old rows.

`events` (the raw history, one row per message) is not partitioned: its key must stay unique across all of
it, since it is what stores each event once. Its high-volume kinds (meter values, statuses, presence,
session updates, reports) older than `event_retention_days` are deleted a bounded slice per pass, oldest
first, by the `received_at` index (migration 0021); what billing and audits need stays: signed meter values,
session starts and ends, faults, security events, implausible readings and battery swaps.

Several ingest processes may run this task: a Postgres advisory lock lets one of them work at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from chargeops.events import EventKind, utcnow
from chargeops.settings import Settings
from telemetry.periodic import Periodic
from telemetry.rollups import run_rollups

log = logging.getLogger(__name__)

PARTITIONS_AHEAD = 7
PREFIX = "meter_samples_p"
_LOCK = 0x636F_6D61_696E  # pg advisory lock key of this task ("comain")
_TS = DateTime(timezone=True)

_LAYOUT = text(
    """
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                     WHERE c.relname = 'meter_samples' AND c.relnamespace = current_schema()::regnamespace)
            THEN 'partitioned'
        WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN 'timescale'
        ELSE 'plain' END
    """
)
_PARTITIONS = text(
    """
    SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'meter_samples'::regclass
    """
)


# Kinds kept whatever their age (evidence for billing disputes and audits); every other kind is pruned.
EVENTS_KEPT = frozenset(
    {
        EventKind.SIGNED_METER_VALUES.value,
        EventKind.TRANSACTION_STARTED.value,
        EventKind.TRANSACTION_ENDED.value,
        EventKind.FAULT_REPORTED.value,
        EventKind.SECURITY_EVENT.value,
        EventKind.METER_IMPLAUSIBLE.value,
        EventKind.BATTERY_SWAP.value,
    }
)
EVENT_PRUNE_CHUNK = 10_000  # rows per DELETE: short statements, no long lock on a busy table
EVENT_PRUNE_MAX = 200_000  # rows per pass: the rest waits for the next pass
_PRUNE_EVENTS = text(
    """
    DELETE FROM events WHERE event_id IN (
        SELECT event_id FROM events
        WHERE received_at < :cutoff AND kind NOT IN :kept
        ORDER BY received_at LIMIT :chunk
    )
    """
).bindparams(bindparam("cutoff", type_=_TS), bindparam("kept", expanding=True))


async def prune_events(conn: AsyncConnection, now: datetime, retention_days: int) -> int:
    """Delete prunable events older than `retention_days` (0: keep all), at most EVENT_PRUNE_MAX per call;
    returns how many went."""
    if retention_days <= 0:
        return 0
    cutoff = now - timedelta(days=retention_days)
    params = {"cutoff": cutoff, "kept": sorted(EVENTS_KEPT), "chunk": EVENT_PRUNE_CHUNK}
    deleted = 0
    while deleted < EVENT_PRUNE_MAX:
        gone = (await conn.execute(_PRUNE_EVENTS, params)).rowcount or 0
        deleted += gone
        if gone < EVENT_PRUNE_CHUNK:
            break
    return deleted


def partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


async def layout(conn: AsyncConnection) -> str:
    """How meter_samples is stored: 'partitioned', 'timescale' or 'plain' (SQLite, or Postgres unmigrated)."""
    if conn.dialect.name != "postgresql":
        return "plain"
    return str((await conn.execute(_LAYOUT)).scalar_one())


async def create_partition(conn: AsyncConnection, day: date) -> None:
    """Create the day's partition, moving any of its rows out of the default partition first (attaching a
    range the default partition still holds rows of would fail)."""
    name = partition_name(day)
    lo, hi = _day_bounds(day)
    await conn.execute(text(f"CREATE TABLE {name} (LIKE meter_samples INCLUDING DEFAULTS)"))
    await conn.execute(
        text(
            f"""
            WITH moved AS (
                DELETE FROM meter_samples_default WHERE sampled_at >= :lo AND sampled_at < :hi RETURNING *
            )
            INSERT INTO {name} SELECT * FROM moved
            """
        ).bindparams(bindparam("lo", type_=_TS), bindparam("hi", type_=_TS)),
        {"lo": lo, "hi": hi},
    )
    await conn.execute(
        text(
            f"ALTER TABLE meter_samples ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
        )
    )


async def existing_partitions(conn: AsyncConnection) -> dict[date, str]:
    days: dict[date, str] = {}
    for (name,) in await conn.execute(_PARTITIONS):
        if name.startswith(PREFIX):
            with contextlib.suppress(ValueError):
                days[datetime.strptime(name[len(PREFIX) :], "%Y%m%d").date()] = name
    return days


async def maintain_partitions(conn: AsyncConnection, now: datetime, retention_days: int) -> dict[str, int]:
    """Partitions ahead and retention, in the caller's transaction; returns what it did (for logs, tests)."""
    cutoff = now - timedelta(days=retention_days)
    kind = await layout(conn)
    created = dropped = 0
    if kind == "partitioned":
        have = await existing_partitions(conn)
        for ahead in range(PARTITIONS_AHEAD + 1):
            day = (now + timedelta(days=ahead)).date()
            if day not in have:
                await create_partition(conn, day)
                created += 1
        for day, name in sorted(have.items()):
            if _day_bounds(day)[1] <= cutoff:
                await conn.execute(text(f"DROP TABLE {name}"))
                dropped += 1
        old_rows = "DELETE FROM meter_samples_default WHERE sampled_at < :cutoff"
    elif kind == "timescale":
        await conn.execute(
            text("SELECT drop_chunks('meter_samples', older_than => :cutoff)"), {"cutoff": cutoff}
        )
        old_rows = ""
    else:
        old_rows = "DELETE FROM meter_samples WHERE sampled_at < :cutoff"
    stmts = [old_rows] + [
        f"DELETE FROM {t} WHERE bucket < :cutoff" for t in ("meter_rollup_1m", "site_rollup_1m")
    ]
    for sql in stmts:
        await conn.execute(text(sql).bindparams(bindparam("cutoff", type_=_TS)), {"cutoff": cutoff})
    return {"created": created, "dropped": dropped}


async def _locked(conn: AsyncConnection) -> bool:
    """True when this process may work now (always on SQLite: one process owns the file)."""
    if conn.dialect.name != "postgresql":
        return True
    return bool((await conn.execute(text(f"SELECT pg_try_advisory_xact_lock({_LOCK})"))).scalar_one())


async def run_maintenance(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *, partitions: bool = True
) -> dict[str, int]:
    """One maintenance pass: event retention and rollups, and with `partitions` the partition window and
    sample retention.

    Retention is `settings.sample_retention_days` for samples (the 1-hour rollups are kept; 1-minute ones go
    with the samples they were made from) and `settings.event_retention_days` for prunable events.
    """
    retention = settings.sample_retention_days
    done: dict[str, int] = {}
    async with sessions() as session, session.begin():
        conn = await session.connection()
        if await _locked(conn):
            if partitions:
                done.update(await maintain_partitions(conn, utcnow(), retention))
            # every pass, not hourly: a large fleet adds events faster than one slice an hour removes
            done["events_pruned"] = await prune_events(conn, utcnow(), settings.event_retention_days)
    done["rolled_up"] = await run_rollups(sessions, _locked)
    return done


class Maintenance(Periodic):
    """Runs `run_maintenance` every `interval` s; partitions and retention every `partition_interval` s."""

    name = "maintenance"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        interval: float = 15.0,
        partition_interval: float = 3600.0,
    ) -> None:
        super().__init__(interval)
        self._sessions = sessions
        self._settings = settings
        self._partition_interval = partition_interval
        self._partitioned_at = -partition_interval

    async def step(self) -> None:
        due = time.monotonic() - self._partitioned_at >= self._partition_interval
        done = await run_maintenance(self._sessions, self._settings, partitions=due)
        if due:
            self._partitioned_at = time.monotonic()
        log.debug("maintenance: %s", done)
