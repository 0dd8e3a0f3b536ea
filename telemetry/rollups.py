"""1-minute and 1-hour rollups of meter samples, per charger and per site, for dashboards and reports.

Ingest marks each (charger, minute) that received samples in `meter_rollup_dirty`, in the transaction that
stores them. A rollup run claims those marks — moves them to `meter_rollup_claimed` in short transactions
of their own (a chunk at a time on Postgres), since an ingest commit marking a claimed bucket waits for the
claiming transaction — and then
recomputes the whole of each claimed bucket from the raw samples (`INSERT … SELECT … GROUP BY … ON CONFLICT
DO UPDATE`), so it is idempotent and a sample arriving late into a bucket already rolled up simply marks it
again; a run that fails leaves its claims for the next. No time watermark: a transaction that commits after a
later one can never be skipped. The same SQL runs on Postgres and SQLite.

Values are in base units (kW → W, kWh → Wh). `energy_wh` of the energy register is its increase since the
previous bucket with a reading (within the bucket when there is none), so summing buckets gives the energy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    DateTime,
    Executable,
    Result,
    String,
    Table,
    TextClause,
    bindparam,
    delete,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for, stored_utc
from chargeops.db.models import MeterRollupClaimed

log = logging.getLogger(__name__)

ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
CHUNK = 500  # chargers per statement: well under the bind-parameter limits of both databases
# A run recomputes thousands of buckets (10,000 chargers: about a second of one database core every pass). In
# one burst that core is gone from the gateway and the ingest commits for the whole second, and every call
# waited (`bench/gateway.py`: a 1.3 s stall every 15 s). So a run rests `REST` times as long as each of its
# statements took: the same work, at most a third of a core at a time.
REST = 2.0
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)

_KEY = "charger_id, evse_id, measurand, phase"
_SCALE = "CASE WHEN unit IN ('kW', 'kWh', 'kvar', 'kvarh', 'kVA', 'kVAh') THEN 1000.0 ELSE 1.0 END"
_UPSERT = f"""
    ON CONFLICT ({_KEY}, bucket) DO UPDATE SET samples = excluded.samples, min = excluded.min,
        max = excluded.max, avg = excluded.avg, last = excluded.last, last_at = excluded.last_at
"""
_TS = DateTime(timezone=True)


def _stmt(sql: str, *datetimes: str) -> TextClause:
    """A statement whose `chargers` (if any) is an expanding list and whose datetimes bind as timestamps."""
    binds: list[BindParameter[Any]] = [bindparam(name, type_=_TS) for name in datetimes]
    if ":chargers" in sql:
        binds.append(bindparam("chargers", expanding=True, type_=String()))
    return text(sql).bindparams(*binds)


# Every (charger, EVSE, measurand, phase) of the marked chargers in [lo, hi): one row per bucket `lo`.
ROLLUP_1M = _stmt(
    f"""
    INSERT INTO meter_rollup_1m ({_KEY}, bucket, samples, min, max, avg, last, last_at)
    SELECT {_KEY}, :lo, count(*), min(v), max(v), avg(v), max(CASE WHEN rn = 1 THEN v END), max(sampled_at)
    FROM (
        SELECT charger_id, evse_id, measurand, coalesce(phase, '') AS phase, sampled_at,
               value * {_SCALE} AS v,
               row_number() OVER (PARTITION BY charger_id, evse_id, measurand, coalesce(phase, '')
                                  ORDER BY sampled_at DESC, event_id DESC, idx DESC) AS rn
        FROM meter_samples
        WHERE charger_id IN :chargers AND sampled_at >= :lo AND sampled_at < :hi
    ) s
    WHERE true
    GROUP BY {_KEY}
    {_UPSERT}
    """,
    "lo",
    "hi",
)
# Energy delta of the marked buckets and of the next bucket of each key (its "previous" may have changed).
ENERGY_1M = _stmt(
    f"""
    UPDATE meter_rollup_1m SET energy_wh = coalesce((
        SELECT CASE WHEN meter_rollup_1m.last > p.last THEN meter_rollup_1m.last - p.last ELSE 0.0 END
        FROM meter_rollup_1m p
        WHERE p.charger_id = meter_rollup_1m.charger_id AND p.evse_id = meter_rollup_1m.evse_id
          AND p.measurand = '{ENERGY}' AND p.phase = '' AND p.bucket < meter_rollup_1m.bucket
        ORDER BY p.bucket DESC LIMIT 1
    ), max - min)
    WHERE measurand = '{ENERGY}' AND phase = '' AND charger_id IN :chargers AND (
        bucket = :lo OR bucket = (
            SELECT min(n.bucket) FROM meter_rollup_1m n
            WHERE n.charger_id = meter_rollup_1m.charger_id AND n.evse_id = meter_rollup_1m.evse_id
              AND n.measurand = '{ENERGY}' AND n.phase = '' AND n.bucket > :lo
        )
    )
    RETURNING charger_id, bucket
    """,
    "lo",
).columns(charger_id=String(), bucket=_TS)
ROLLUP_1H = _stmt(
    f"""
    INSERT INTO meter_rollup_1h ({_KEY}, bucket, samples, min, max, avg, last, last_at, energy_wh)
    SELECT {_KEY}, :lo, sum(samples), min(min), max(max), sum(avg * samples) / sum(samples),
           max(CASE WHEN rn = 1 THEN last END), max(last_at), sum(energy_wh)
    FROM (
        SELECT m.*, row_number() OVER (PARTITION BY {_KEY} ORDER BY bucket DESC) AS rn
        FROM meter_rollup_1m m
        WHERE charger_id IN :chargers AND bucket >= :lo AND bucket < :hi
    ) m
    WHERE true
    GROUP BY {_KEY}
    {_UPSERT}, energy_wh = excluded.energy_wh
    """,
    "lo",
    "hi",
)


def _site_stmt(target: str, source: str) -> TextClause:
    return _stmt(
        f"""
        INSERT INTO {target} (site, bucket, power_avg_w, power_max_w, energy_wh)
        SELECT coalesce(c.site, ''), r.bucket,
               sum(CASE WHEN r.measurand = '{POWER}' THEN r.avg ELSE 0.0 END),
               sum(CASE WHEN r.measurand = '{POWER}' THEN r.max ELSE 0.0 END),
               coalesce(sum(CASE WHEN r.measurand = '{ENERGY}' THEN r.energy_wh END), 0.0)
        FROM {source} r LEFT JOIN chargers c ON c.id = r.charger_id
        WHERE r.bucket = :lo AND r.phase = '' AND r.measurand IN ('{POWER}', '{ENERGY}')
        GROUP BY coalesce(c.site, ''), r.bucket
        ON CONFLICT (site, bucket) DO UPDATE SET power_avg_w = excluded.power_avg_w,
            power_max_w = excluded.power_max_w, energy_wh = excluded.energy_wh
        """,
        "lo",
    )


SITE_1M = _site_stmt("site_rollup_1m", "meter_rollup_1m")
SITE_1H = _site_stmt("site_rollup_1h", "meter_rollup_1h")
CLAIM = text("DELETE FROM meter_rollup_dirty RETURNING charger_id, bucket").columns(
    charger_id=String(), bucket=_TS
)
# Postgres moves the marks on the server, a chunk at a time, locking them in key order and skipping any an
# ingest transaction holds (it is marking that bucket again; the mark stays for the next claim). Claiming
# every mark in one `DELETE … RETURNING` and inserting them back from Python held 10,000 marks locked for
# a few hundred ms with 10,000 chargers: every ingest commit marking a bucket waited for it, and the
# DELETE's scan order against the ingest's key order deadlocked now and then (Postgres broke it after its
# 1 s deadlock timeout, failing that ingest batch; `bench/gateway.py`).
CLAIM_CHUNK = 1000
_MAX_CLAIMS = 100  # chunks a run claims at most: what ingest marks meanwhile waits for the next run
PG_CLAIM = text(
    """
    WITH picked AS (
        SELECT charger_id, bucket FROM meter_rollup_dirty
        ORDER BY charger_id, bucket LIMIT :n FOR UPDATE SKIP LOCKED
    ), moved AS (
        DELETE FROM meter_rollup_dirty d USING picked
        WHERE d.charger_id = picked.charger_id AND d.bucket = picked.bucket
        RETURNING d.charger_id, d.bucket
    ), kept AS (
        INSERT INTO meter_rollup_claimed (charger_id, bucket) SELECT charger_id, bucket FROM moved
        ON CONFLICT DO NOTHING
    )
    SELECT count(*) FROM moved
    """
)
CLAIMED: Table = MeterRollupClaimed.__table__  # type: ignore[assignment]


def _chunks(items: Iterable[str]) -> list[list[str]]:
    ordered = sorted(set(items))
    return [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]


def _by_bucket(rows: Iterable[Sequence[Any]], size: timedelta) -> dict[datetime, set[str]]:
    per: dict[datetime, set[str]] = defaultdict(set)
    for charger_id, bucket in rows:
        at = stored_utc(bucket)
        floor = at.replace(minute=0, second=0, microsecond=0) if size == HOUR else at
        per[floor].add(charger_id)
    return per


async def claim(conn: AsyncConnection) -> int:
    """Move marks to the claimed ones; the caller commits at once. Returns the marks moved: on Postgres at
    most `CLAIM_CHUNK` (see `PG_CLAIM`; the caller claims again while a chunk came back full), on SQLite all.

    A mark an ingest transaction is writing meanwhile is skipped or waited for and moved, never lost."""
    if conn.dialect.name == "postgresql":
        return int((await conn.execute(PG_CLAIM, {"n": CLAIM_CHUNK})).scalar_one())
    marks = [{"charger_id": c, "bucket": b} for c, b in await conn.execute(CLAIM)]
    if marks:
        await conn.execute(insert_for(conn.dialect.name, CLAIMED).on_conflict_do_nothing(), marks)
    return len(marks)


async def roll_up(conn: AsyncConnection) -> int:
    """Recompute every claimed bucket (1 m, then the 1 h and site buckets over it) and drop the claims;
    returns the claims done. In the caller's transaction: nothing is dropped if anything fails."""
    claimed = (await conn.execute(select(CLAIMED.c.charger_id, CLAIMED.c.bucket))).all()
    if not claimed:
        return 0
    changed: list[Sequence[Any]] = []
    for lo, chargers in sorted(_by_bucket(claimed, MINUTE).items()):
        for chunk in _chunks(chargers):
            await _paced(conn, ROLLUP_1M, {"chargers": chunk, "lo": lo, "hi": lo + MINUTE})
            changed.extend((await _paced(conn, ENERGY_1M, {"chargers": chunk, "lo": lo})).all())
    minutes = _by_bucket([*claimed, *changed], MINUTE)
    hours = _by_bucket([*claimed, *changed], HOUR)
    for lo, chargers in sorted(hours.items()):
        for chunk in _chunks(chargers):
            await _paced(conn, ROLLUP_1H, {"chargers": chunk, "lo": lo, "hi": lo + HOUR})
    for lo in sorted(minutes):
        await _paced(conn, SITE_1M, {"lo": lo})
    for lo in sorted(hours):
        await _paced(conn, SITE_1H, {"lo": lo})
    keys = [tuple(row) for row in claimed]
    for i in range(0, len(keys), CHUNK):
        await conn.execute(
            delete(CLAIMED).where(tuple_(CLAIMED.c.charger_id, CLAIMED.c.bucket).in_(keys[i : i + CHUNK]))
        )
    log.debug("rolled up %d (charger, minute) buckets", len(claimed))
    return len(claimed)


async def _paced(conn: AsyncConnection, statement: Executable, params: dict[str, Any]) -> Result[Any]:
    """Run a rollup statement, then rest `REST` times as long as it took (see `REST`)."""
    started = time.perf_counter()
    result = await conn.execute(statement, params)
    await asyncio.sleep(REST * (time.perf_counter() - started))
    return result


async def _always(_conn: AsyncConnection) -> bool:
    return True


async def run_rollups(
    sessions: async_sessionmaker[AsyncSession],
    may_run: Callable[[AsyncConnection], Awaitable[bool]] = _always,
) -> int:
    """One rollup run: `claim` in short transactions of its own (a chunk each, see `PG_CLAIM`), then
    `roll_up` in one; `may_run` is asked in each (e.g. for an advisory lock). Returns the buckets
    recomputed."""
    for _ in range(_MAX_CLAIMS):
        async with sessions() as session, session.begin():
            conn = await session.connection()
            if not await may_run(conn):
                return 0
            if await claim(conn) < CLAIM_CHUNK:
                break
    async with sessions() as session, session.begin():
        conn = await session.connection()
        if not await may_run(conn):
            return 0
        return await roll_up(conn)
