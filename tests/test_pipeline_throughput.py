"""How fast the durable (ingest) subscription drains a backlog, on a private Mosquitto (no queue limit).

    python -m tests.test_pipeline_throughput [events] [pipeline]   # prints events/s, no-op and BatchWriter

The broker is loaded while the ingest session is offline (its persistent session queues everything), then
the ingest connects and the time to the last stored event is taken: the consumer alone, not the publisher.
The BatchWriter figure stores into a fresh database on the machine's Postgres.
The test keeps a floor well under the measured figures (docs/bus.md), so only a real regression fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.events import Event, MeterValues, Sample
from chargeops.settings import Settings
from telemetry.bus import EventHandler
from telemetry.ingest import BatchWriter
from telemetry.mqtt_bus import MqttBus
from tests.conftest import PG_ADMIN_DSN
from tests.test_pipeline_exactly_once import PrivateMosquitto, end_session

FLOOR = 3_000  # events/s, a regression guard; measured figures (~8,000 no-op) are in docs/bus.md


def meter_events(n: int) -> list[Event]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        Event(
            f"CP{i % 1000:04d}",
            MeterValues(1, 1, f"TX{i % 1000}", [Sample("Energy.Active.Import.Register", float(i), "Wh")]),
            reported_at=t0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


async def drain_rate(broker: PrivateMosquitto, events: int, handler: EventHandler, pipeline: int) -> float:
    """Events/s from the ingest connecting to the handler having returned for the last event."""
    root = f"chargeops-bench-{uuid.uuid4().hex[:10]}"
    settings = Settings(mqtt_url=broker.url(root), gateway_id="bench", node_id="bench")
    ingest = MqttBus(settings, ingest_pipeline=pipeline)
    await ingest.start()
    ingest.subscribe(handler, durable=True)
    await ingest.ready(5)
    await ingest.close()  # the session stays: the broker queues the backlog for it
    gateway = MqttBus(settings.model_copy(update={"roles": "api"}))
    await gateway.start()
    sent = meter_events(events)
    for i in range(0, events, 2000):
        await gateway.publish(sent[i : i + 2000])
    await gateway.close()

    done = asyncio.Event()
    stored = 0

    async def counting(batch: Sequence[Event]) -> None:
        nonlocal stored
        await handler(batch)
        stored += len(batch)
        if stored >= events:
            done.set()

    ingest = MqttBus(settings, ingest_pipeline=pipeline)
    started = time.perf_counter()
    await ingest.start()
    ingest.subscribe(counting, durable=True)
    try:
        await asyncio.wait_for(done.wait(), 120)
        return events / (time.perf_counter() - started)
    finally:
        await ingest.close()
        await end_session(broker, ingest.ingest_client_id)


async def noop(_events: Sequence[Event]) -> None:
    """Stores nothing: what the bus alone can do."""


async def into_postgres(broker: PrivateMosquitto, events: int, pipeline: int) -> float:
    """The real BatchWriter into a fresh database on the machine's Postgres."""
    name = f"chargeops_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    engine = make_engine(f"{base}/{name}")
    try:
        await upgrade(engine)
        writer = BatchWriter(make_sessionmaker(engine))
        writer.start()
        try:
            return await drain_rate(broker, events, writer.write, pipeline)
        finally:
            await writer.stop()
    finally:
        await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.contextmanager
def private_broker() -> Iterator[PrivateMosquitto]:
    base = Path(tempfile.mkdtemp(prefix="chargeops-throughput-"))
    base.chmod(0o755)
    broker = PrivateMosquitto(base)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def bench_broker() -> Iterator[PrivateMosquitto]:
    with private_broker() as broker:
        yield broker


async def test_the_durable_subscription_drains_a_backlog_fast(bench_broker: PrivateMosquitto) -> None:
    rate = await drain_rate(bench_broker, 20_000, noop, pipeline=4)
    assert rate > FLOOR, f"{rate:,.0f} events/s"


async def main(events: int, pipeline: int) -> None:
    with private_broker() as broker:
        for label, rate in (
            ("no-op handler", await drain_rate(broker, events, noop, pipeline)),
            ("BatchWriter into Postgres", await into_postgres(broker, events, pipeline)),
        ):
            print(f"{label}: {rate:,.0f} events/s ({events:,} events, {pipeline} batches in flight)")


if __name__ == "__main__":
    argv = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*argv[:1] or [50_000], *argv[1:2] or [4]))
