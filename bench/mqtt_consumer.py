"""How fast the durable (ingest) subscription drains a backlog, on a private Mosquitto (no queue limit).

    python -m bench.mqtt_consumer [events] [pipeline]   # prints JSON: events/s, no-op and BatchWriter

The broker is loaded while the ingest session is offline (its persistent session queues everything), then
the ingest connects and the time to the last stored event is taken: the consumer alone, not the publisher.
The BatchWriter figure stores into a fresh database on the machine's Postgres.
Figures: docs/bus.md. (A benchmark, not a test: speed is measured here, not asserted in the test suite.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from bench.ingest import meter_event
from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.events import Event
from chargeops.settings import Settings
from telemetry.bus import EventHandler
from telemetry.mqtt import BusTuning, MqttBus
from telemetry.writer import BatchWriter
from tests.conftest import PG_ADMIN_DSN
from tests.private_services import PrivateMosquitto, end_session


def meter_events(n: int) -> list[Event]:
    """The ingest benchmark's events: 10 samples each (SPEC §7 counts sample rows)."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [meter_event(i, 1000, t0 + timedelta(seconds=i)) for i in range(n)]


async def drain_rate(broker: PrivateMosquitto, events: int, handler: EventHandler, pipeline: int) -> float:
    """Events/s from the ingest connecting to the handler having returned for the last event."""
    root = f"chargeops-bench-{uuid.uuid4().hex[:10]}"
    settings = Settings(mqtt_url=broker.url(root), gateway_id="bench", node_id="bench")
    ingest = MqttBus(settings, BusTuning(ingest_pipeline=pipeline))
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

    ingest = MqttBus(settings, BusTuning(ingest_pipeline=pipeline))
    started = time.perf_counter()
    await ingest.start()
    ingest.subscribe(counting, durable=True)
    try:
        await asyncio.wait_for(done.wait(), 120)
        return events / (time.perf_counter() - started)
    finally:
        await ingest.close()
        await end_session(broker, ingest.durable_client_id)


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


async def main(events: int, pipeline: int) -> None:
    with private_broker() as broker:
        result = {
            "events": events,
            "batches_in_flight": pipeline,
            "noop_events_per_s": round(await drain_rate(broker, events, noop, pipeline)),
            "batchwriter_postgres_events_per_s": round(await into_postgres(broker, events, pipeline)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    argv = [int(a) for a in sys.argv[1:]]
    asyncio.run(main(*argv[:1] or [50_000], *argv[1:2] or [4]))
