"""Daily partitions of meter_samples on Postgres (default partition for strays), their window moving ahead,
and retention dropping old partitions (old rows on SQLite) while recent data stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.db.models import MeterRollup1m, MeterSample
from chargeops.events import Event, MeterValues, Sample
from chargeops.settings import Settings
from telemetry.ingest import store_events
from telemetry.retention import maintain_partitions, partition_name, run_maintenance
from tests.conftest import migrated_sessions

Sessions = async_sessionmaker[AsyncSession]
TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
async def pg_sessions(pg_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(pg_url) as made:
        yield made


@pytest.fixture
def today(pg_sessions: Sessions) -> datetime:
    """Noon today, read once the database is migrated: the migration makes the daily partitions around the
    clock's today, and `TODAY`, read at import, is yesterday in a run that crossed midnight meanwhile."""
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def sample_at(at: datetime) -> Event:
    return Event(
        "CP1", MeterValues(1, 1, None, [Sample("Power.Active.Import", 1.0, sampled_at=at)]), reported_at=at
    )


async def where(sessions: Sessions) -> dict[datetime, str]:
    """Which partition holds each sample."""
    async with sessions() as s:
        rows = await s.execute(text("SELECT sampled_at, tableoid::regclass::text FROM meter_samples"))
        return {at: part for at, part in rows}


async def test_partitions_catch_every_day_and_strays(pg_sessions: Sessions, today: datetime) -> None:
    times = [today - timedelta(days=1), today, today + timedelta(days=3), today + timedelta(days=10)]
    strays = [datetime(2001, 1, 1, tzinfo=UTC), datetime(2099, 1, 1, tzinfo=UTC)]
    await store_events(pg_sessions, [sample_at(t) for t in times + strays])
    parts = await where(pg_sessions)
    for at in times[:3]:
        assert parts[at] == partition_name(at.date())
    assert {parts[at] for at in [times[3], *strays]} == {"meter_samples_default"}
    # the window moves on: the day that had a stray sample gets its partition, and the sample moves in
    async with pg_sessions() as s, s.begin():
        done = await maintain_partitions(await s.connection(), today + timedelta(days=5), 90)
    assert done == {"created": 5, "dropped": 0}
    assert (await where(pg_sessions))[times[3]] == partition_name(times[3].date())
    await store_events(pg_sessions, [sample_at(times[3])])  # a re-delivery lands on the same key
    assert set(await where(pg_sessions)) == {*times, strays[1]}  # the 2001 stray is past retention


async def test_retention_drops_old_partitions_and_keeps_recent_data(
    pg_sessions: Sessions, today: datetime
) -> None:
    old, recent = today - timedelta(days=1), today
    await store_events(
        pg_sessions, [sample_at(old), sample_at(recent), sample_at(datetime(2001, 1, 1, tzinfo=UTC))]
    )
    later = today.replace(hour=0) + timedelta(days=90, hours=1)  # yesterday is past 90 days, today is not
    async with pg_sessions() as s, s.begin():
        done = await maintain_partitions(await s.connection(), later, 90)
    assert done["dropped"] == 1
    assert set(await where(pg_sessions)) == {recent}
    async with pg_sessions() as s:
        names = {r[0] for r in await s.execute(text("SELECT relname FROM pg_class WHERE relkind = 'r'"))}
    assert partition_name(old.date()) not in names and partition_name(recent.date()) in names


async def test_maintenance_on_sqlite(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    try:
        await store_events(sessions, [sample_at(TODAY - timedelta(days=40)), sample_at(TODAY)])
        done = await run_maintenance(sessions, Settings(sample_retention_days=30))
        assert done["rolled_up"] == 2
        async with sessions() as s:
            assert (await s.execute(select(func.count()).select_from(MeterSample))).scalar_one() == 1
            # retention ran first: the old sample is gone before it was rolled up
            assert (await s.execute(select(func.count()).select_from(MeterRollup1m))).scalar_one() == 1
        await run_maintenance(sessions, Settings())  # default retention: 90 days
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_event_retention_prunes_high_volume_kinds_and_keeps_evidence(
    backend: str, sqlite_url: str, pg_url: str
) -> None:
    """`event_retention_days`: old meter values, statuses and presence go (a bounded slice per pass, by the
    received_at index); signed meter values, session starts and ends and security events stay whatever their
    age; recent events of every kind stay; 0 keeps everything."""
    from chargeops.db.models import StoredEvent
    from chargeops.events import Connected, SecurityEvent, SignedMeterValues, StatusChanged
    from telemetry.retention import prune_events

    old, recent = TODAY - timedelta(days=40), TODAY - timedelta(days=5)

    def at(body: object, when: datetime, n: int) -> Event:
        return Event(f"CP{n}", body, reported_at=when, received_at=when)  # type: ignore[arg-type]

    events = []
    for n, when in enumerate((old, recent)):
        events += [
            at(MeterValues(1, 1, None, [Sample("Power.Active.Import", 1.0, sampled_at=when)]), when, n),
            at(StatusChanged(1, 1, "Available"), when, n),
            at(Connected("ocpp2.0.1", "gw", f"s{n}"), when, n),
            at(SignedMeterValues(1, 1, "TX1", [{"signed_meter_data": "x", "value": 1.0}]), when, n),
            at(SecurityEvent("TamperDetectionActivated", "door"), when, n),
        ]
    async with migrated_sessions(sqlite_url if backend == "sqlite" else pg_url) as sessions:
        await store_events(sessions, events)

        async def kinds() -> list[tuple[str, bool]]:
            async with sessions() as s:
                rows = await s.execute(select(StoredEvent.kind, StoredEvent.received_at))
                return sorted((k, stored(t) > TODAY - timedelta(days=10)) for k, t in rows)

        before = await kinds()
        async with sessions() as s, s.begin():
            assert await prune_events(await s.connection(), TODAY, 0) == 0
        assert await kinds() == before
        async with sessions() as s, s.begin():
            assert await prune_events(await s.connection(), TODAY, 30) == 3
        after = await kinds()
        assert [k for k, is_recent in after if not is_recent] == ["security_event", "signed_meter_values"]
        assert sorted(k for k, is_recent in after if is_recent) == sorted(k for k, r in before if r)


def stored(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
