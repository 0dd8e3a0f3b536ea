"""Ingest: stores version-neutral events in the database in batches, idempotently (`store_events`; the
group-committing writer in front of it is `telemetry.writer.BatchWriter`).

Concurrent publishers share one commit (group commit): a charger's answer waits a few milliseconds for the
batch it is in, and one transaction stores the events of hundreds of chargers. Every insert is
`ON CONFLICT DO NOTHING` on the event's deterministic id, so a re-delivered event never makes a second row.
On Postgres the rows travel by binary COPY (`telemetry.pg_copy`); SQLite takes batched inserts.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy import Table, bindparam, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for
from chargeops.db.models import Connector, MeterRollupDirty, MeterSample, StoredEvent, Transaction
from chargeops.events import (
    BatterySwapped,
    Connected,
    DerAlarm,
    Disconnected,
    Event,
    EventKind,
    FaultReported,
    MeterImplausible,
    MeterValues,
    StatusChanged,
    TransactionEnded,
    utcnow,
)
from telemetry.battery_store import store_battery_events
from telemetry.ev_schedule_store import store_ev_schedules
from telemetry.metrics import (
    DER_ALARMS,
    FAULTS,
    INGEST_LAG,
    INGEST_REDELIVERIES,
    INGEST_ROWS,
    METER_IMPLAUSIBLE,
    SITE_ENERGY,
    SWAP_EVENTS,
    label,
)
from telemetry.pg_copy import (
    SAMPLE_COLUMNS,
    SMALL_BATCH,
    copy_events,
    dirty_buckets,
    insert_small,
    store_at_once,
)
from telemetry.presence_store import CHARGERS, apply_presence

log = logging.getLogger(__name__)
# kinds with rows of their own beyond `events` (written only on the transactional path)
_OWN_TABLES = frozenset({EventKind.BATTERY_SWAP, EventKind.EV_CHARGING_SCHEDULE})


EVENTS: Table = StoredEvent.__table__  # type: ignore[assignment]
SAMPLES: Table = MeterSample.__table__  # type: ignore[assignment]
CONNECTORS: Table = Connector.__table__  # type: ignore[assignment]
TRANSACTIONS: Table = Transaction.__table__  # type: ignore[assignment]
DIRTY: Table = MeterRollupDirty.__table__  # type: ignore[assignment]

# A charger can send any error code; beyond this many distinct ones they are counted as "other", so a
# misbehaving charger cannot grow the metric without bound.
MAX_FAULT_CODES = 200

_touch = (
    update(CHARGERS)
    .where(CHARGERS.c.id == bindparam("cid"))
    .where(or_(CHARGERS.c.last_seen.is_(None), CHARGERS.c.last_seen < bindparam("seen")))
    .values(last_seen=bindparam("seen"))
)
# Lock order. Concurrent batches (several group commits in flight, the gateway's boot and connect writes)
# take the rows they share in one order: transactions, then connectors, then chargers, each by key. Presence
# is written in the order it happened (and last_seen after it), not by key: a batch with presence for more
# than one charger first locks all the chargers it writes in id order in one statement, or two batches holding
# one charger each and wanting the other's deadlock. (SQLite has one writer at a time: no row locks.)
_lock_chargers = (
    select(CHARGERS.c.id)
    .where(CHARGERS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(CHARGERS.c.id)
    .with_for_update(key_share=True)
)
_energy_rows = (
    select(
        TRANSACTIONS.c.id,
        TRANSACTIONS.c.charger_id,
        TRANSACTIONS.c.transaction_id,
        TRANSACTIONS.c.meter_start_wh,
        TRANSACTIONS.c.meter_last_wh,
        TRANSACTIONS.c.energy_counted_wh,
        TRANSACTIONS.c.meter_good_wh,
        CHARGERS.c.site,
    )
    .select_from(TRANSACTIONS.outerjoin(CHARGERS, CHARGERS.c.id == TRANSACTIONS.c.charger_id))
    .order_by(TRANSACTIONS.c.id)  # lock order: concurrent ingest processes never deadlock on these rows
    .with_for_update(of=TRANSACTIONS)
)
_energy = (
    update(TRANSACTIONS)
    .where(TRANSACTIONS.c.id == bindparam("row_id"))
    .values(meter_last_wh=bindparam("last"), energy_counted_wh=bindparam("counted"))
)


@dataclass(slots=True)
class _Batch:
    """One batch sorted out: rows to write and what the metrics need once they are committed."""

    events: dict[str, Event] = field(default_factory=dict)
    samples: list[tuple[Any, ...]] = field(default_factory=list)
    status: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    presence: list[Event] = field(default_factory=list)

    def samples_of(self, event_ids: set[str]) -> list[tuple[Any, ...]]:
        """The sample rows of these events (the ones the database did not have yet)."""
        return [s for s in self.samples if s[0] in event_ids]

    def status_rows(self) -> list[dict[str, Any]]:
        """The connector status rows in lock order (see `_lock_chargers`)."""
        return [self.status[key] for key in sorted(self.status)]


def _collect(events: Sequence[Event]) -> _Batch:
    batch = _Batch()
    for ev in events:
        if ev.event_id in batch.events or ev.kind is EventKind.HEARTBEAT:
            continue  # a heartbeat only refreshes last_seen: no row per heartbeat per charger
        batch.events[ev.event_id] = ev
        body = ev.body
        if isinstance(body, MeterValues):
            default_at = ev.reported_at or ev.received_at
            for idx, s in enumerate(body.samples):
                batch.samples.append(
                    (
                        ev.event_id,
                        idx,
                        ev.charger_id,
                        body.evse_id,
                        body.connector_id,
                        body.transaction_id,
                        s.sampled_at or default_at,
                        s.measurand,
                        s.phase,
                        s.location,
                        s.context,
                        s.unit,
                        s.value,
                    )
                )
        elif isinstance(body, StatusChanged):
            key = (ev.charger_id, body.evse_id, body.connector_id)
            at = ev.reported_at or ev.received_at
            prev = batch.status.get(key)
            if prev is None or prev["reported_at"] <= at:
                batch.status[key] = {
                    "charger_id": ev.charger_id,
                    "evse_id": body.evse_id,
                    "connector_id": body.connector_id,
                    "status": body.status,
                    "error_code": body.error_code,
                    "vendor_error_code": body.vendor_error_code,
                    "reported_at": at,
                }
        elif isinstance(body, Connected | Disconnected):
            batch.presence.append(ev)
    return batch


def _energy_readings(events: Iterable[Event]) -> dict[tuple[str, str], float]:
    """The highest energy register reading (Wh) per (charger, transaction) among `events`."""
    readings: dict[tuple[str, str], float] = {}
    for ev in events:
        body = ev.body
        if isinstance(body, MeterValues) and body.transaction_id:
            for s in body.samples:
                wh = s.register_wh
                if wh is not None:
                    key = (ev.charger_id, body.transaction_id)
                    readings[key] = max(readings.get(key, wh), wh)
        elif isinstance(body, TransactionEnded) and body.meter_stop_wh is not None:
            key = (ev.charger_id, body.transaction_id)
            readings[key] = max(readings.get(key, body.meter_stop_wh), body.meter_stop_wh)
    return readings


async def store_events(
    sessions: async_sessionmaker[AsyncSession],
    events: Sequence[Event],
    last_seen: dict[str, datetime] | None = None,
) -> None:
    """Write one batch in one transaction: event log, meter samples, connector status, presence, energy.

    Postgres takes the rows by COPY (`telemetry.pg_copy`), SQLite by executemany; either way a handful of
    round trips per batch, whatever its size. The common small batch on Postgres (`_at_once`) is one
    statement, its own transaction: one round trip. Only events not stored before produce samples, energy and
    metrics, so a re-delivered batch changes nothing and counts nothing twice. Metrics move after the commit.
    """
    started = time.perf_counter()
    batch = _collect(events)
    if _at_once(sessions, batch):
        async with sessions() as session:
            conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            fresh_ids = await store_at_once(
                conn,
                _event_records(batch.events.values()),
                batch.samples_of,
                batch.status_rows(),
                last_seen or {},
            )
        _count(batch, [batch.events[i] for i in fresh_ids], {})
        log.debug("stored %d events in %.1f ms", len(batch.events), (time.perf_counter() - started) * 1000)
        return
    async with sessions() as session, session.begin():
        conn = await session.connection()
        fresh_ids = set()
        if batch.events:
            if conn.dialect.name == "postgresql":
                store = insert_small if len(batch.events) <= SMALL_BATCH else copy_events
                fresh_ids = await store(conn, _event_records(batch.events.values()), batch.samples_of)
            else:
                fresh_ids = await _insert_events(conn, batch)
        fresh = [batch.events[i] for i in fresh_ids]
        site_energy = await _advance_energy(conn, _energy_readings(fresh))
        if batch.status:
            await conn.execute(_upsert_status(conn.dialect.name), batch.status_rows())
        if batch.presence and conn.dialect.name == "postgresql":
            ids = {e.charger_id for e in batch.presence} | set(last_seen or ())
            if len(ids) > 1:
                await conn.execute(_lock_chargers, {"ids": sorted(ids)})
        await apply_presence(conn, sorted(batch.presence, key=lambda e: e.received_at))
        await store_battery_events(conn, [ev for ev in fresh if ev.kind is EventKind.BATTERY_SWAP])
        await store_ev_schedules(conn, [ev for ev in fresh if ev.kind is EventKind.EV_CHARGING_SCHEDULE])
        if last_seen:
            await conn.execute(_touch, [{"cid": c, "seen": last_seen[c]} for c in sorted(last_seen)])
    _count(batch, fresh, site_energy)
    log.debug("stored %d events in %.1f ms", len(batch.events), (time.perf_counter() - started) * 1000)


@functools.cache
def _upsert_status(dialect: str) -> Any:
    """The connector status upsert, built once per dialect: built per batch, its `excluded` alias and that
    alias's copies of every column were a few hundred objects of reference cycles a batch, left for the
    collector to find, and the statement's cache key was computed again each time."""
    ins = insert_for(dialect, CONNECTORS)
    return ins.on_conflict_do_update(
        index_elements=["charger_id", "evse_id", "connector_id"],
        set_={
            "status": ins.excluded.status,
            "error_code": ins.excluded.error_code,
            "vendor_error_code": ins.excluded.vendor_error_code,
            "reported_at": ins.excluded.reported_at,
        },
        where=or_(CONNECTORS.c.reported_at.is_(None), CONNECTORS.c.reported_at <= ins.excluded.reported_at),
    )


def _at_once(sessions: async_sessionmaker[AsyncSession], batch: _Batch) -> bool:
    """Whether the batch fits `store_at_once`: Postgres, small, nothing but event rows, samples, connector
    status and last_seen (no transaction energy to advance, no presence, no swaps or EV schedules)."""
    engine = sessions.kw.get("bind")
    return (
        engine is not None
        and engine.dialect.name == "postgresql"
        and len(batch.events) <= SMALL_BATCH
        and not batch.presence
        and not any(ev.kind in _OWN_TABLES for ev in batch.events.values())
        and not _energy_readings(batch.events.values())
    )


def event_data(ev: Event) -> Any:
    """What the `events` row keeps of an event. Meter values keep their context but not their samples,
    which are stored once, in `meter_samples` (keeping them twice doubled the cost of every meter row)."""
    body = ev.body
    if isinstance(body, MeterValues):
        return {
            "evse_id": body.evse_id,
            "connector_id": body.connector_id,
            "transaction_id": body.transaction_id,
            "samples": len(body.samples),
        }
    return body


def _event_records(events: Iterable[Event]) -> list[tuple[Any, ...]]:
    """Event rows for COPY: binary COPY of a json column takes the JSON text."""
    return [
        (
            ev.event_id,
            ev.charger_id,
            ev.kind.value,
            ev.reported_at,
            ev.received_at,
            orjson.dumps(event_data(ev)).decode(),
        )
        for ev in events
    ]


async def _insert_events(conn: AsyncConnection, batch: _Batch) -> set[str]:
    """The SQLite path: executemany inserts, samples only for the events that were new."""
    rows = [
        {
            "event_id": ev.event_id,
            "charger_id": ev.charger_id,
            "kind": ev.kind.value,
            "reported_at": ev.reported_at,
            "received_at": ev.received_at,
            "data": event_data(ev),
        }
        for ev in batch.events.values()
    ]
    ins = insert_for(conn.dialect.name, EVENTS).on_conflict_do_nothing(index_elements=["event_id"])
    fresh = {row[0] for row in await conn.execute(ins.returning(EVENTS.c.event_id), rows)}
    new_samples = batch.samples_of(fresh)
    if new_samples:
        await conn.execute(SAMPLES.insert(), [dict(zip(SAMPLE_COLUMNS, s, strict=True)) for s in new_samples])
        ins = insert_for(conn.dialect.name, DIRTY)
        await conn.execute(
            ins.on_conflict_do_nothing(),
            [{"charger_id": c, "bucket": b} for c, b in sorted(dirty_buckets(new_samples))],
        )
    return fresh


async def _advance_energy(conn: AsyncConnection, readings: dict[tuple[str, str], float]) -> dict[str, float]:
    """Move each transaction's latest register reading forward and return the Wh newly delivered per site.

    The increase is measured against `energy_counted_wh` (or the start register), which only this function
    moves, under a row lock: a reading the gateway already wrote to `meter_last_wh` is still counted, and a
    reading counted once is never counted again. Energy is counted no further than the last plausible
    reading (`meter_good_wh`, which the gateway wrote before it published the reading): a jump it flagged
    is never counted.
    """
    if not readings:
        return {}
    keys = sorted(readings)
    result = await conn.execute(
        _energy_rows.where(tuple_(TRANSACTIONS.c.charger_id, TRANSACTIONS.c.transaction_id).in_(keys))
    )
    updates: list[dict[str, Any]] = []
    per_site: dict[str, float] = {}
    for row_id, cid, tid, start, last, counted, good, site in result:
        wh = readings[(cid, tid)]
        billable = wh if good is None else min(wh, good)
        base = counted if counted is not None else start
        if base is not None and billable > base:
            per_site[site or ""] = per_site.get(site or "", 0.0) + (billable - base)
        new_last = wh if last is None or wh > last else last
        new_counted = billable if counted is None or billable > counted else counted
        if (new_last, new_counted) != (last, counted):
            updates.append({"row_id": row_id, "last": new_last, "counted": new_counted})
    if updates:
        await conn.execute(_energy, updates)
    return per_site


def _count(batch: _Batch, fresh: list[Event], site_energy: dict[str, float]) -> None:
    """Metrics of a committed batch: lag from the gateway receiving each new event to now, rows,
    re-deliveries, faults by code, swap steps, DER alarms, implausible meter readings, energy per site."""
    if not batch.events:
        return
    now = utcnow()
    samples = sum(len(ev.body.samples) for ev in fresh if isinstance(ev.body, MeterValues))
    INGEST_ROWS.labels("events").inc(len(fresh))
    if samples:
        INGEST_ROWS.labels("meter_samples").inc(samples)
    redelivered = len(batch.events) - len(fresh)
    if redelivered:
        INGEST_REDELIVERIES.inc(redelivered)
    for ev in fresh:
        INGEST_LAG.observe(max(0.0, (now - ev.received_at).total_seconds()))
        body = ev.body
        if isinstance(body, FaultReported) and not body.cleared:
            _fault(body.code).inc()
        elif isinstance(body, BatterySwapped):
            SWAP_EVENTS.labels(body.event_type).inc()
        elif isinstance(body, DerAlarm) and not body.ended:
            DER_ALARMS.labels(body.control_type, body.grid_event_fault or "none").inc()
        elif isinstance(body, MeterImplausible):
            METER_IMPLAUSIBLE.labels(body.reason).inc()
    for site, wh in site_energy.items():
        SITE_ENERGY.labels(label(site)).inc(wh)


def _fault(code: str) -> Counter:
    code = label(code)[:64]
    if code not in _fault_codes and len(_fault_codes) >= MAX_FAULT_CODES:
        code = "other"
    _fault_codes.add(code)
    return FAULTS.labels(code)


_fault_codes: set[str] = set()
