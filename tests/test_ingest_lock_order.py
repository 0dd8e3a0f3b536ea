"""Concurrent group commits never deadlock (the one-hour soak of 2026-12-04 saw one on Postgres: a batch of
four calls was answered InternalError). Several `store_events` batches in flight at once, each touching the
same chargers and connectors in its own order (presence, connector status, last_seen, energy of the same
transactions), racing the gateway's batched boot writes on the same rows: every batch commits and the rows
end as the last writes say."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector, Transaction
from chargeops.events import Booted, Connected, Event, MeterValues, Sample, StatusChanged
from ocpp_gateway.store.charger_rows import ChargerRows
from telemetry.ingest import store_events
from tests.conftest import migrated_sessions

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
CHARGERS = [f"LK{i:02d}" for i in range(12)]
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(db_url) as made:
        async with made() as s, s.begin():
            for cid in CHARGERS:
                s.add(Charger(id=cid, admission="accepted"))
                s.add(Transaction(charger_id=cid, transaction_id=f"TX-{cid}", active=True, meter_start_wh=0))
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
