"""Ingest storage on both databases: COPY on Postgres, batched inserts on SQLite, exactly once under
re-delivery, and the metrics a committed batch moves (lag, re-deliveries, faults, site energy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector, MeterSample, StoredEvent, Transaction
from chargeops.events import (
    Event,
    FaultReported,
    Heartbeat,
    MeterValues,
    Sample,
    StatusChanged,
    TransactionEnded,
)
from telemetry.ingest import store_events
from tests.conftest import migrated_sessions

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(db_url) as made:
        yield made


def meter(cp: str, at: datetime, wh: float, tx: str | None = "T1", n: int = 3) -> Event:
    samples = [Sample("Energy.Active.Import.Register", wh, "Wh", sampled_at=at)]
    samples += [
        Sample("Power.Active.Import", 7000.0 + i, "W", phase=f"L{i}", sampled_at=at) for i in range(n - 1)
    ]
    return Event(cp, MeterValues(1, 1, tx, samples), reported_at=at)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def count(sessions: Sessions, model: type) -> int:
    async with sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_same_batch_twice_and_overlapping_batches_store_once(sessions: Sessions) -> None:
    batch = [meter("CP1", T0 + timedelta(seconds=i), 1000.0 + i) for i in range(50)]
    await store_events(sessions, batch)
    redelivered = metric("chargeops_ingest_redeliveries_total")
    await store_events(sessions, batch)
    assert metric("chargeops_ingest_redeliveries_total") - redelivered == 50
    overlap = batch[25:] + [meter("CP1", T0 + timedelta(seconds=i), 1000.0 + i) for i in range(50, 80)]
    await store_events(sessions, overlap + overlap[:5])  # duplicates inside one batch too
    assert await count(sessions, StoredEvent) == 80
    assert await count(sessions, MeterSample) == 80 * 3


@pytest.mark.parametrize("size", [300, 20], ids=["copy", "small-batch"])
async def test_two_writers_racing_on_the_same_events_store_each_sample_once(
    sessions: Sessions, size: int
) -> None:
    """Samples have no unique key of their own: the event's key decides, also between concurrent
    transactions (two ingest processes given the same re-delivered messages), on both Postgres paths
    (COPY for a large batch, one statement for a small one)."""
    batch = [meter(f"CP{i % 7}", T0 + timedelta(seconds=i), 1000.0 + i) for i in range(size)]
    for _ in range(3):
        await asyncio.gather(*(store_events(sessions, batch[k::2] + batch) for k in range(2)))
    assert await count(sessions, StoredEvent) == size
    assert await count(sessions, MeterSample) == size * 3


async def test_mixed_kinds_in_one_batch(sessions: Sessions) -> None:
    events = [
        meter("CP1", T0, 10.0, tx=None),
        Event("CP1", StatusChanged(1, 1, "Charging"), reported_at=T0),
        Event(
            "CP1", StatusChanged(1, 1, "Faulted", error_code="GroundFailure"), reported_at=T0 + timedelta(1)
        ),
        Event("CP1", Heartbeat(), reported_at=T0),
        Event("CP2", FaultReported(1, 1, "Connector", "OverCurrentFailure"), reported_at=T0),
    ]
    async with sessions() as s, s.begin():
        s.add(Charger(id="CP1"))
    await store_events(sessions, events, {"CP1": T0})
    assert await count(sessions, StoredEvent) == 4  # no row for the heartbeat
    assert await count(sessions, MeterSample) == 3
    async with sessions() as s:
        conn = (await s.execute(select(Connector))).scalar_one()
        assert (conn.status, conn.error_code) == ("Faulted", "GroundFailure")
        assert (await s.get(Charger, "CP1")).last_seen is not None  # type: ignore[union-attr]


async def test_metrics_move_once_under_redelivery(sessions: Sessions) -> None:
    site = f"site-{id(sessions)}"
    async with sessions() as s, s.begin():
        s.add(Charger(id="CPE", site=site))
        s.add(Transaction(charger_id="CPE", transaction_id="T1", meter_start_wh=1000.0))
        s.add(Transaction(charger_id="CPX", transaction_id="T1", meter_start_wh=0.0))  # unknown charger
    lag_count = metric("chargeops_ingest_lag_seconds_count")
    faults = metric("chargeops_faults_total", code="HighTemperature")
    energy = metric("chargeops_site_energy_watt_hours_total", site=site)
    no_site = metric("chargeops_site_energy_watt_hours_total", site="")
    received = datetime.now(UTC) - timedelta(seconds=3)
    first = [
        meter("CPE", T0, 1500.0),
        meter("CPE", T0 + timedelta(seconds=60), 1800.0),
        meter("CPX", T0, 40.0),
        Event("CPE", FaultReported(0, 0, "Charger", "HighTemperature"), reported_at=T0, received_at=received),
        Event("CPE", FaultReported(0, 0, "Charger", "HighTemperature", cleared=True), reported_at=T0),
    ]
    await store_events(sessions, first)
    assert metric("chargeops_ingest_lag_seconds_count") - lag_count == 5
    assert metric("chargeops_ingest_lag_seconds_bucket", le="2.0") - lag_count < 5  # the 3 s old fault
    assert metric("chargeops_faults_total", code="HighTemperature") - faults == 1
    assert metric("chargeops_site_energy_watt_hours_total", site=site) - energy == 800.0
    assert metric("chargeops_site_energy_watt_hours_total", site="") - no_site == 40.0
    # the gateway moved meter_last_wh itself: ingest still counts the energy once
    async with sessions() as s, s.begin():
        await s.execute(text("UPDATE transactions SET meter_last_wh = 2500 WHERE charger_id = 'CPE'"))
    again = [*first, meter("CPE", T0 + timedelta(seconds=120), 2500.0)]
    again.append(Event("CPE", TransactionEnded("T1", T0 + timedelta(seconds=130), 2600.0), reported_at=T0))
    await store_events(sessions, again)
    await store_events(sessions, again)
    assert metric("chargeops_faults_total", code="HighTemperature") - faults == 1
    assert metric("chargeops_site_energy_watt_hours_total", site=site) - energy == 1600.0
    assert metric("chargeops_ingest_lag_seconds_count") - lag_count == 7
    async with sessions() as s:
        tx = (await s.execute(select(Transaction).where(Transaction.charger_id == "CPE"))).scalar_one()
        assert (tx.meter_last_wh, tx.energy_counted_wh) == (2600.0, 2600.0)


async def test_large_batch(sessions: Sessions) -> None:
    batch = [meter(f"CP{i % 100}", T0 + timedelta(seconds=i), float(i), n=10) for i in range(3000)]
    await store_events(sessions, batch)
    assert await count(sessions, MeterSample) == 30_000
    await store_events(sessions, batch[::7])
    assert await count(sessions, MeterSample) == 30_000


async def test_the_writer_commits_what_it_was_handed_then_refuses_more(sessions: Sessions) -> None:
    """Issue 12, graceful shutdown: `stop` commits every write already handed in (nothing acknowledged is
    lost) and a write after it fails at once instead of waiting forever (a stuck handler blocked exit)."""
    from telemetry.writer import BatchWriter

    writer = BatchWriter(sessions, max_wait=0.05)
    writer.start()
    t0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
    handed = [asyncio.create_task(writer.write([meter(f"CP{i}", t0, 1000.0 + i)])) for i in range(20)]
    await asyncio.sleep(0)  # handed in, not yet committed (the batch waits 50 ms for company)
    await writer.stop()
    assert all(t.done() and t.exception() is None for t in handed)
    async with sessions() as s:
        stored = await s.scalar(select(func.count()).select_from(StoredEvent))
    assert stored == 20
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(writer.write([meter("CP-LATE", t0, 1.0)]), 1.0)


async def test_a_plain_small_batch_is_one_statement_on_postgres(pg_url: str) -> None:
    """Meter values outside a transaction, connector status and last_seen: one statement sent outside a
    transaction block (no BEGIN / COMMIT round trips), with the same outcome as the transactional path —
    status by report time, last_seen forward only, a redelivery stores nothing twice. A batch with a
    transaction's register reading takes the transactional path."""
    from sqlalchemy import event

    async with migrated_sessions(pg_url) as sessions:
        async with sessions() as s, s.begin():
            s.add_all([Charger(id="CP1"), Charger(id="CP2", last_seen=T0 + timedelta(hours=1))])
        engine = sessions.kw["bind"]
        sent: list[str] = []

        def note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            sent.append(statement.split(None, 1)[0].upper())

        in_block: list[bool] = []  # after each statement: was the driver inside a transaction block?

        def after(conn: Any, *_: object) -> None:
            in_block.append(conn.connection.driver_connection.is_in_transaction())

        event.listen(engine.sync_engine, "before_cursor_execute", note)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        batch = [
            meter("CP1", T0, 10.0, tx=None),
            Event("CP1", StatusChanged(1, 1, "Faulted", error_code="GroundFailure"), reported_at=T0),
            Event("CP2", StatusChanged(1, 1, "Charging"), reported_at=T0),
        ]
        await store_events(sessions, batch, {"CP1": T0, "CP2": T0})
        assert (sent, in_block) == (["WITH"], [False])
        older = [Event("CP1", StatusChanged(1, 1, "Available"), reported_at=T0 - timedelta(minutes=1))]
        await store_events(sessions, [*batch, *older], {"CP1": T0 - timedelta(hours=1)})
        assert sent == ["WITH", "WITH"]
        assert await count(sessions, StoredEvent) == 4
        assert await count(sessions, MeterSample) == 3
        async with sessions() as s:
            rows = {
                c.charger_id: (c.status, c.error_code) for c in (await s.execute(select(Connector))).scalars()
            }
            seen = {c.id: c.last_seen for c in (await s.execute(select(Charger))).scalars()}
        assert rows == {"CP1": ("Faulted", "GroundFailure"), "CP2": ("Charging", None)}
        assert seen == {"CP1": T0, "CP2": T0 + timedelta(hours=1)}
        sent.clear()
        await store_events(sessions, [meter("CP1", T0 + timedelta(1), 20.0)])
        assert len(sent) > 1 and all(in_block[-len(sent) :])  # energy of TX T1: in a transaction block
        event.remove(engine.sync_engine, "before_cursor_execute", note)
        event.remove(engine.sync_engine, "after_cursor_execute", after)


async def test_last_seen_is_written_spread_over_the_interval(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each charger's last_seen reaches the database about once per `touch_interval`, paced over the
    batches: never the whole fleet in one commit (10,000 row updates at once stalled every call)."""
    import telemetry.writer as writer_module

    sizes: list[int] = []
    real = writer_module.store_events

    async def spy(s: Sessions, events: list[Event], touch: dict[str, datetime]) -> None:
        sizes.append(len(touch))
        await real(s, events, touch)

    monkeypatch.setattr(writer_module, "store_events", spy)
    chargers = [f"LS{i:03d}" for i in range(200)]
    async with sessions() as s, s.begin():
        s.add_all([Charger(id=cid) for cid in chargers])
    writer = writer_module.BatchWriter(sessions, touch_interval=1.0)
    writer.start()
    try:
        for n in range(40):  # 2 s: every charger seen every 0.5 s
            at = datetime.now(UTC)
            group = chargers[(n % 10) * 20 : (n % 10) * 20 + 20]
            await asyncio.gather(*(writer.write([Event(cid, Heartbeat(), received_at=at)]) for cid in group))
            await asyncio.sleep(0.05)
    finally:
        await writer.stop()
    assert max(sizes) <= len(chargers) // 4, sizes
    assert sum(sizes) >= len(chargers)
    async with sessions() as s:
        unseen = await s.scalar(select(func.count()).select_from(Charger).where(Charger.last_seen.is_(None)))
    assert unseen == 0
