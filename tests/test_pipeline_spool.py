"""The gateway's spool against a private broker that is really gone (tests/private_services.py): events
published meanwhile are kept on disk and replayed, a full spool refuses and counts, events nobody subscribed
to yet are kept, and a spool left by a stopped gateway is replayed when it starts again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from chargeops.settings import Settings
from telemetry.metrics import BUS_ERRORS
from telemetry.mqtt import MqttBus
from telemetry.spool import SpoolFull
from tests.private_services import PrivateBroker, end_session
from tests.test_mqtt_bus import Collector, sample_events
from tests.waiting import until

pytest_plugins = ("tests.private_services",)
pytestmark = pytest.mark.timeout(120)


async def _bus(broker: PrivateBroker, root: str, name: str, spool_dir: Path, **kw: Any) -> MqttBus:
    bus = MqttBus(
        Settings(mqtt_url=broker.url(root), gateway_id=name, node_id=name, spool_dir=spool_dir, **kw)
    )
    await bus.start()
    return bus


async def test_events_published_while_the_broker_is_down_are_spooled_and_replayed_in_order(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
    sent = sample_events(300)
    try:
        await gateway.publish(sent[:100])
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        for i in range(100, 300, 20):
            await gateway.publish(sent[i : i + 20])  # returns: the events are on disk
        assert gateway.spool is not None and len(gateway.spool) == 200
        await asyncio.to_thread(restart_broker.start)
        await until(lambda: len({e.event_id for e in got.events}) == len(sent), timeout=20)
        assert {e.event_id for e in got.events} == {e.event_id for e in sent}
        # A batch leaves the spool once the broker acknowledged all of it, which may come after ingest
        # already has it.
        await until(lambda: gateway.spool is not None and len(gateway.spool) == 0, timeout=10)
        # Order is not asserted here: the replay races the ingest's re-subscription after the broker
        # restart (Mosquitto answers "no matching subscribers" to some events of a batch, which are sent
        # again after later ones were taken). Known limitation, see docs/bus.md.
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)


async def test_a_full_spool_refuses_the_events_and_counts_it(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    ingest.subscribe(Collector(), durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path, spool_max_events=10)
    full_before = BUS_ERRORS.labels("spool_full")._value.get()
    try:
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        await gateway.publish(sample_events(10))
        with pytest.raises(SpoolFull):
            await gateway.publish(sample_events(1, charger="CP2"))
        assert BUS_ERRORS.labels("spool_full")._value.get() == full_before + 1
        await asyncio.to_thread(restart_broker.start)
        await until(lambda: gateway.spool is not None and len(gateway.spool) == 0, timeout=20)
        await gateway.publish(sample_events(1, charger="CP2"))  # room again
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)


async def test_events_nobody_subscribed_to_yet_are_kept_until_ingest_subscribes(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """The broker acks such events with "no matching subscribers" and drops them; the gateway keeps them."""
    root = f"spool-{uuid.uuid4().hex[:10]}"
    gateway = await _bus(broker, root, "gw-a", tmp_path)
    sent = sample_events(20)
    try:
        await gateway.publish(sent)
        assert gateway.spool is not None and len(gateway.spool) == 20
        ingest = await _bus(broker, root, "ingest-a", tmp_path)
        got = Collector()
        ingest.subscribe(got, durable=True)
        await until(lambda: {e.event_id for e in got.events} == {e.event_id for e in sent}, timeout=10)
        await ingest.close()
        await end_session(broker, ingest.durable_client_id)
    finally:
        await gateway.close()


async def test_a_spool_left_by_a_stopped_gateway_is_replayed_when_it_starts_again(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
    sent = sample_events(50)
    try:
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        await gateway.publish(sent)
        await gateway.close()  # the process stops before the broker is back
        await asyncio.to_thread(restart_broker.start)
        await asyncio.sleep(0.5)
        assert got.events == []
        gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
        await until(lambda: {e.event_id for e in got.events} == {e.event_id for e in sent}, timeout=20)
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)
