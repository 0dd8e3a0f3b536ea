"""Ingest: stores version-neutral events in the database in batches, idempotently.

Concurrent publishers share one commit (group commit): a charger's answer waits a few milliseconds for the
batch it is in, and one transaction stores the events of hundreds of chargers. Every insert is
`ON CONFLICT DO NOTHING` on the event's deterministic id, so a re-delivered event never makes a second row.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for
from chargeops.db.models import Charger, Connector, MeterSample, StoredEvent, Transaction
from chargeops.events import (
    Connected,
    Disconnected,
    Event,
    EventKind,
    MeterValues,
    StatusChanged,
)
from telemetry.metrics import (
    DATABASE_ERRORS,
    INGEST_BATCH_SIZE,
    INGEST_COMMIT_SECONDS,
    INGEST_ERRORS,
    INGEST_ROWS,
)

log = logging.getLogger(__name__)

ENERGY_REGISTER = "Energy.Active.Import.Register"


class BatchWriter:
    """Group-commits events; `write` returns when its events are durable, or raises if the commit failed.

    `last_seen` is not worth a write per message: it is gathered in memory and written with the first batch
    after `touch_interval` seconds.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_batch: int = 5000,
        max_wait: float = 0.002,
        touch_interval: float = 2.0,
        touch_chunk: int = 500,
    ):
        self._sessions = sessions
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._touch_interval = touch_interval
        self._touch_chunk = touch_chunk
        self._pending: deque[tuple[Sequence[Event], asyncio.Future[None]]] = deque()
        self._last_seen: dict[str, datetime] = {}
        self._touched_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError("ingest stopped"))

    async def write(self, events: Sequence[Event]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((events, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._max_wait)  # let concurrent publishers join this batch
            self._wake.clear()
            batch: list[tuple[Sequence[Event], asyncio.Future[None]]] = []
            count = 0
            while self._pending and count < self._max_batch:
                item = self._pending.popleft()
                batch.append(item)
                count += len(item[0])
            if self._pending:
                self._wake.set()
            events = [ev for evs, _ in batch for ev in evs]
            for ev in events:
                seen = self._last_seen.get(ev.charger_id)
                if seen is None or ev.received_at > seen:
                    self._last_seen[ev.charger_id] = ev.received_at
            touch: dict[str, datetime] = {}
            if self._last_seen and time.monotonic() - self._touched_at >= self._touch_interval:
                # a bounded slice per batch, so 10,000 chargers' last_seen never stall one commit
                for charger_id in list(itertools.islice(self._last_seen, self._touch_chunk)):
                    touch[charger_id] = self._last_seen.pop(charger_id)
            started = time.perf_counter()
            try:
                await store_events(self._sessions, events, touch)
            except Exception as exc:
                INGEST_ERRORS.inc()
                DATABASE_ERRORS.labels("ingest").inc()
                log.error("ingest batch of %d events failed: %s", len(events), exc)
                for k, v in touch.items():
                    self._last_seen.setdefault(k, v)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(ConnectionError(f"database write failed: {exc}"))
                continue
            if touch and not self._last_seen:
                self._touched_at = time.monotonic()
            INGEST_BATCH_SIZE.observe(len(events))
            INGEST_COMMIT_SECONDS.observe(time.perf_counter() - started)
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


EVENTS: Table = StoredEvent.__table__  # type: ignore[assignment]
SAMPLES: Table = MeterSample.__table__  # type: ignore[assignment]
CONNECTORS: Table = Connector.__table__  # type: ignore[assignment]
CHARGERS: Table = Charger.__table__  # type: ignore[assignment]
TRANSACTIONS: Table = Transaction.__table__  # type: ignore[assignment]

_touch = (
    update(CHARGERS)
    .where(CHARGERS.c.id == bindparam("cid"))
    .where(or_(CHARGERS.c.last_seen.is_(None), CHARGERS.c.last_seen < bindparam("seen")))
    .values(last_seen=bindparam("seen"))
)
_energy = (
    update(TRANSACTIONS)
    .where(TRANSACTIONS.c.charger_id == bindparam("cid"), TRANSACTIONS.c.transaction_id == bindparam("tid"))
    .where(or_(TRANSACTIONS.c.meter_last_wh.is_(None), TRANSACTIONS.c.meter_last_wh < bindparam("wh")))
    .values(meter_last_wh=bindparam("wh"))
)


async def store_events(
    sessions: async_sessionmaker[AsyncSession],
    events: Sequence[Event],
    last_seen: dict[str, datetime] | None = None,
) -> None:
    """Write one batch in one transaction: event log, meter samples, connector status, presence, energy.

    Core statements with executemany: a handful of round trips per batch, whatever its size.
    """
    started = time.perf_counter()
    event_rows: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []
    status: dict[tuple[str, int, int], dict[str, Any]] = {}
    energy: dict[tuple[str, str], float] = {}
    presence: list[Event] = []
    for ev in events:
        if ev.event_id in event_rows or ev.kind is EventKind.HEARTBEAT:
            continue  # a heartbeat only refreshes last_seen: no row per heartbeat per charger
        event_rows[ev.event_id] = {
            "event_id": ev.event_id,
            "charger_id": ev.charger_id,
            "kind": ev.kind.value,
            "reported_at": ev.reported_at,
            "received_at": ev.received_at,
            "data": ev.body,
        }
        body = ev.body
        if isinstance(body, MeterValues):
            for idx, s in enumerate(body.samples):
                samples.append(
                    {
                        "event_id": ev.event_id,
                        "idx": idx,
                        "charger_id": ev.charger_id,
                        "evse_id": body.evse_id,
                        "connector_id": body.connector_id,
                        "transaction_id": body.transaction_id,
                        "sampled_at": s.sampled_at or ev.reported_at or ev.received_at,
                        "measurand": s.measurand,
                        "phase": s.phase,
                        "location": s.location,
                        "context": s.context,
                        "unit": s.unit,
                        "value": s.value,
                    }
                )
                if body.transaction_id and s.measurand == ENERGY_REGISTER and s.phase is None:
                    wh = s.value * 1000 if (s.unit or "Wh") == "kWh" else s.value
                    tx_key = (ev.charger_id, body.transaction_id)
                    energy[tx_key] = max(energy.get(tx_key, wh), wh)
        elif isinstance(body, StatusChanged):
            key = (ev.charger_id, body.evse_id, body.connector_id)
            at = ev.reported_at or ev.received_at
            prev = status.get(key)
            if prev is None or prev["reported_at"] <= at:
                status[key] = {
                    "charger_id": ev.charger_id,
                    "evse_id": body.evse_id,
                    "connector_id": body.connector_id,
                    "status": body.status,
                    "error_code": body.error_code,
                    "vendor_error_code": body.vendor_error_code,
                    "reported_at": at,
                }
        elif isinstance(body, Connected | Disconnected):
            presence.append(ev)

    async with sessions() as session, session.begin():
        conn = await session.connection()
        fresh: set[str] = set()
        if event_rows:
            ins = insert_for(conn.dialect.name, EVENTS).on_conflict_do_nothing(index_elements=["event_id"])
            result = await conn.execute(ins.returning(EVENTS.c.event_id), list(event_rows.values()))
            fresh = {row[0] for row in result}
            INGEST_ROWS.labels("events").inc(len(fresh))
        new_samples = [s for s in samples if s["event_id"] in fresh]
        if new_samples:
            await conn.execute(insert_for(conn.dialect.name, SAMPLES).on_conflict_do_nothing(), new_samples)
            INGEST_ROWS.labels("meter_samples").inc(len(new_samples))
        if status:
            ins = insert_for(conn.dialect.name, CONNECTORS)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["charger_id", "evse_id", "connector_id"],
                    set_={
                        "status": ins.excluded.status,
                        "error_code": ins.excluded.error_code,
                        "vendor_error_code": ins.excluded.vendor_error_code,
                        "reported_at": ins.excluded.reported_at,
                    },
                    where=or_(
                        CONNECTORS.c.reported_at.is_(None),
                        CONNECTORS.c.reported_at <= ins.excluded.reported_at,
                    ),
                ),
                list(status.values()),
            )
        if energy:
            await conn.execute(_energy, [{"cid": c, "tid": t, "wh": wh} for (c, t), wh in energy.items()])
        for ev in sorted(presence, key=lambda e: e.received_at):
            await _apply_presence(conn, ev)
        if last_seen:
            await conn.execute(_touch, [{"cid": c, "seen": t} for c, t in last_seen.items()])
    log.debug("stored %d events in %.1f ms", len(event_rows), (time.perf_counter() - started) * 1000)


async def _apply_presence(conn: AsyncConnection, ev: Event) -> None:
    body = ev.body
    if isinstance(body, Connected):
        await conn.execute(
            update(CHARGERS)
            .where(CHARGERS.c.id == ev.charger_id)
            .values(
                connected=True, protocol=body.protocol, gateway_id=body.gateway_id, session_id=body.session_id
            )
        )
    elif isinstance(body, Disconnected):
        # Only the session that is still the current one may mark the charger offline (a takeover's new
        # session may have connected before the old one's close was stored).
        await conn.execute(
            update(CHARGERS)
            .where(and_(CHARGERS.c.id == ev.charger_id, CHARGERS.c.session_id == body.session_id))
            .values(connected=False)
        )
