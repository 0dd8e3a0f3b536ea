"""Concurrent group commits never deadlock (the one-hour soak of 2026-12-04 saw one on Postgres: a batch of
four calls was answered InternalError). Several `store_events` batches in flight at once, each touching the
same chargers and connectors in its own order (presence, connector status, last_seen, energy of the same
transactions), racing the gateway's batched boot writes on the same rows: every batch commits and the rows
end as the last writes say."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector, Transaction
from chargeops.events import Booted, Connected, Event, MeterValues, Sample, StatusChanged
from ocpp_gateway.store.charger_rows import ChargerRows
from telemetry.ingest import store_events
from telemetry.writer import BatchWriter
from tests.conftest import migrated_sessions

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
CHARGERS = [f"LK{i:02d}" for i in range(12)]
Sessions = async_sessionmaker[AsyncSession]


@asynccontextmanager
async def _seeded(url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(url) as made:
        async with made() as s, s.begin():
            for cid in CHARGERS:
                s.add(Charger(id=cid, admission="accepted"))
                s.add(Transaction(charger_id=cid, transaction_id=f"TX-{cid}", active=True, meter_start_wh=0))
        yield made


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with _seeded(db_url) as made:
        yield made


@pytest.fixture
async def pg_sessions(pg_url: str) -> AsyncIterator[Sessions]:
    """Postgres alone: SQLite has one connection, so its commits are one at a time by design."""
    async with _seeded(pg_url) as made:
        yield made


def _batch(rng: random.Random, round_no: int) -> tuple[list[Event], dict[str, datetime]]:
    """One batch's events for every charger, shuffled: a connect, two connectors' status, a register."""
    at = T0 + timedelta(seconds=round_no)
    events: list[Event] = []
    for cid in CHARGERS:
        session = f"s{round_no}-{cid}"
        events.append(Event(cid, Connected("ocpp2.0.1", "gw-1", session), received_at=at))
        for connector in (1, 2):
            events.append(Event(cid, StatusChanged(connector, 1, "Charging"), reported_at=at, received_at=at))
        register = Sample("Energy.Active.Import.Register", 1000.0 * (round_no + 1), "Wh", sampled_at=at)
        events.append(Event(cid, MeterValues(1, 1, f"TX-{cid}", [register]), reported_at=at, received_at=at))
    rng.shuffle(events)
    seen = {cid: at for cid in rng.sample(CHARGERS, len(CHARGERS))}
    return events, seen


async def _boots(sessions: Sessions, rng: random.Random, rounds: int) -> None:
    """The gateway's batched boot writes on the same rows, the chargers booting in random order."""
    rows = ChargerRows(sessions)
    for n in range(rounds):
        boot = Booted("ACME", "X1", firmware_version=f"fw-{n}")
        order = rng.sample(CHARGERS, len(CHARGERS))
        await asyncio.gather(*(rows.record_boot(cid, boot, T0) for cid in order))


@pytest.mark.timeout(120)
async def test_concurrent_group_commits_and_boot_writes_do_not_deadlock(sessions: Sessions) -> None:
    rng = random.Random(7)
    rounds = 40
    batches = [_batch(rng, n) for n in range(rounds)]
    writers = [store_events(sessions, events, last_seen=seen) for events, seen in batches]
    results = await asyncio.gather(*writers, _boots(sessions, rng, rounds), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    async with sessions() as s:
        connectors = (await s.execute(select(Connector.status))).scalars().all()
        energy = (await s.execute(select(Transaction.meter_last_wh))).scalars().all()
        connected = (await s.execute(select(Charger.connected))).scalars().all()
        firmware = set((await s.execute(select(Charger.firmware_version))).scalars())
    assert len(connectors) == 2 * len(CHARGERS) and set(connectors) == {"Charging"}
    assert energy == [1000.0 * rounds] * len(CHARGERS)
    assert all(connected)
    assert firmware == {f"fw-{rounds - 1}"}


async def test_a_commit_held_up_by_a_locked_row_does_not_hold_up_the_next_batch(
    pg_sessions: Sessions,
) -> None:
    """Two commits in flight: a batch waiting for a row another transaction holds (LK00's transaction) does
    not delay a batch of other chargers; it commits once the row is free. A batch with a connect waits for
    the commits before it (presence in the order it happened)."""
    sessions = pg_sessions
    writer = BatchWriter(sessions)
    writer.start()
    register = Sample("Energy.Active.Import.Register", 5000.0, "Wh", sampled_at=T0)
    try:
        async with sessions() as holder, holder.begin():
            await holder.execute(
                select(Transaction.id).where(Transaction.charger_id == "LK00").with_for_update()
            )
            blocked = asyncio.create_task(
                writer.write([Event("LK00", MeterValues(1, 1, "TX-LK00", [register]), reported_at=T0)])
            )
            await asyncio.sleep(0.3)
            assert not blocked.done()
            await asyncio.wait_for(
                writer.write([Event("LK01", StatusChanged(1, 1, "Faulted"), reported_at=T0)]), 5
            )
            connect = asyncio.create_task(writer.write([Event("LK02", Connected("ocpp1.6", "gw-1", "s-9"))]))
            await asyncio.sleep(0.3)
            assert not blocked.done() and not connect.done()
        await asyncio.wait_for(asyncio.gather(blocked, connect), 5)
    finally:
        await writer.stop()
    async with sessions() as s:
        assert (
            await s.scalar(select(Transaction.meter_last_wh).where(Transaction.charger_id == "LK00")) == 5000
        )
        assert await s.scalar(select(Charger.session_id).where(Charger.id == "LK02")) == "s-9"


def _plain_batch(rng: random.Random, round_no: int) -> tuple[list[Event], dict[str, datetime]]:
    """A batch `store_at_once` takes in one statement: connector status and meter values outside a
    transaction for every charger, and last_seen for all of them."""
    at = T0 + timedelta(seconds=round_no, milliseconds=500)
    events: list[Event] = []
    for cid in CHARGERS:
        for connector in (1, 2):
            events.append(Event(cid, StatusChanged(connector, 1, "Charging"), reported_at=at, received_at=at))
        power = Sample("Power.Active.Import", 7000.0 + round_no, "W", sampled_at=at)
        events.append(Event(cid, MeterValues(1, 1, None, [power]), reported_at=at, received_at=at))
    rng.shuffle(events)
    return events, {cid: at for cid in rng.sample(CHARGERS, len(CHARGERS))}


@pytest.mark.timeout(120)
async def test_one_statement_batches_racing_transactional_ones_do_not_deadlock(pg_sessions: Sessions) -> None:
    """Batches of the one-statement path (status, samples, last_seen) interleaved with transactional
    batches (connects, energy) and boot writes on the same rows: every batch commits, rows end as the last
    writes say (status by report time, last_seen forward only)."""
    sessions = pg_sessions
    rng = random.Random(11)
    rounds = 30
    writers = []
    for n in range(rounds):
        events, seen = _plain_batch(rng, n) if n % 2 else _batch(rng, n)
        writers.append(store_events(sessions, events, last_seen=seen))
    results = await asyncio.gather(*writers, _boots(sessions, rng, rounds), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    async with sessions() as s:
        status = (await s.execute(select(Connector.reported_at))).scalars().all()
        seen_at = set((await s.execute(select(Charger.last_seen))).scalars())
    last = T0 + timedelta(seconds=rounds - 1, milliseconds=500)
    assert len(status) == 2 * len(CHARGERS) and set(status) == {last}
    assert seen_at == {last}
