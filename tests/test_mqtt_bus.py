"""The MQTT bus against each broker of `BUS_BROKERS` (tests/mqtt_brokers.py; now the machine's Mosquitto on
127.0.0.1:1883): no broker is a failure, never a skip.

Every test uses its own topic root (the path of the MQTT URL), so runs never see each other's messages, and
ends the persistent sessions it created.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import httpx
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import SecretStr
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from chargeops.events import Event, Heartbeat, MeterValues, Sample, StatusChanged
from chargeops.settings import Settings
from ops.runtime import Runtime
from telemetry.bus import CommandReply
from telemetry.mqtt import BusTuning, MqttBus
from tests.mqtt_brokers import Broker
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent


class Buses:
    """Starts buses on one test's topic root; closes them and ends their persistent sessions afterwards."""

    def __init__(self, spool_dir: Path, broker: Broker) -> None:
        self.spool_dir = spool_dir
        self.broker = broker
        self.port = broker.port
        self.root = f"chargeops-test-{uuid.uuid4().hex[:10]}"
        self.url = broker.url(self.root)
        self.started: list[MqttBus] = []
        self.sessions: set[str] = set()

    async def start(self, name: str, *, durable_group: str = "ingest", **tuning: Any) -> MqttBus:
        settings = Settings(mqtt_url=self.url, gateway_id=name, node_id=name, spool_dir=self.spool_dir)
        bus = MqttBus(settings, BusTuning(**tuning), durable_group=durable_group)
        await bus.start()
        self.started.append(bus)
        self.sessions.add(bus.durable_client_id)
        return bus

    async def cleanup(self) -> None:
        for bus in self.started:
            await bus.close()
        for client_id in self.sessions:
            await end_session(client_id, self.port)


async def end_session(client_id: str, port: int) -> None:
    """Connecting with clean start and expiry 0 makes the broker forget a persistent session."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5, properties=props
    ):
        pass


@pytest.fixture
async def buses(tmp_path: Path, mqtt_broker: Broker) -> AsyncIterator[Buses]:
    b = Buses(tmp_path, mqtt_broker)
    yield b
    await b.cleanup()


class Collector:
    """A durable handler that remembers every event (and can be told to fail or hang)."""

    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.events: list[Event] = []
        self.calls = 0
        self.fail = fail
        self.hang = hang

    async def __call__(self, events: Sequence[Event]) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("database down")
        if self.hang:
            await asyncio.Event().wait()
        self.events.extend(events)


def sample_events(n: int, charger: str = "CP1") -> list[Event]:
    """Distinct events of several kinds, with nested samples and timestamps."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    out: list[Event] = []
    for i in range(n):
        at = t0 + timedelta(seconds=i)
        if i % 3 == 0:
            samples = [Sample("Energy.Active.Import.Register", 1000.0 + i, "Wh", sampled_at=at)]
            body: Any = MeterValues(1, 1, f"tx-{i}", samples)
        elif i % 3 == 1:
            body = StatusChanged(1, 1, "Charging", info=f"näive/+#{i}")
        else:
            body = Heartbeat()
        out.append(Event(f"{charger}/{i % 4}", body, reported_at=at, received_at=at))
    return out


# -- events --------------------------------------------------------------------------------------------


async def test_events_reach_a_durable_subscriber_in_another_bus_exactly_as_sent(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await buses.start("gw-a")
    sent = sample_events(30)
    await gateway.publish(sent)
    await until(lambda: len(got.events) == len(sent))
    assert sorted(orjson.dumps(e.to_doc()) for e in got.events) == sorted(
        orjson.dumps(e.to_doc()) for e in sent
    )
    assert {e.event_id: e for e in got.events} == {e.event_id: e for e in sent}


async def test_what_callers_publish_together_goes_out_as_one_message(buses: Buses) -> None:
    gateway = await buses.start("gw/a")
    assert "/" not in gateway.client_id  # percent-encoded: rumqttd refuses a `/` in a client id
    messages: list[tuple[str, list[dict[str, Any]]]] = []
    async with aiomqtt.Client("127.0.0.1", buses.port, protocol=aiomqtt.ProtocolVersion.V5) as raw:
        await raw.subscribe(f"{buses.root}/v2/events/#", qos=1)

        async def read() -> None:
            async for msg in raw.messages:
                doc = orjson.loads(msg.payload)
                assert doc["v"] == 2
                messages.append((str(msg.topic), doc["events"]))

        reader = asyncio.create_task(read())
        sent = sample_events(60)
        await asyncio.gather(*(gateway.publish([ev]) for ev in sent))  # 60 callers at once
        await gateway.publish(sent[:1])  # a caller on its own: its own message, at once
        await until(lambda: sum(len(events) for _, events in messages) == 61)
        reader.cancel()
    assert [topic for topic, _ in messages] == [f"{buses.root}/v2/events/gw%2Fa"] * 2
    # every kind in one message, in the order the callers published
    assert [doc["event_id"] for doc in messages[0][1]] == [ev.event_id for ev in sent]
    assert [doc["event_id"] for doc in messages[1][1]] == [sent[0].event_id]


async def test_an_undecodable_message_or_event_is_dropped_and_the_rest_stored(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    good = sample_events(2)
    topic = f"{buses.root}/v2/events/meter_values"
    async with aiomqtt.Client("127.0.0.1", buses.port, protocol=aiomqtt.ProtocolVersion.V5) as raw:
        await raw.publish(topic, b"not json", qos=1)
        await raw.publish(topic, orjson.dumps({"v": 2, "events": "nope"}), qos=1)
        broken = {**good[0].to_doc(), "kind": "no_such_kind"}
        await raw.publish(topic, orjson.dumps({"v": 2, "events": [broken, good[1].to_doc()]}), qos=1)
    await until(lambda: len(got.events) == 1)
    await asyncio.sleep(0.2)
    assert [e.event_id for e in got.events] == [good[1].event_id]


async def test_a_spool_left_by_a_v1_gateway_is_sent_in_the_v2_format(buses: Buses, tmp_path: Path) -> None:
    """Upgrading a gateway while its spool holds v1 messages (one event each, `v1/events/{cp}/{kind}`)."""
    sent = sample_events(5)
    gateway = await buses.start("gw-a")
    spool_path = gateway.spool_path
    await gateway.close()
    db = sqlite3.connect(spool_path)
    db.execute("CREATE TABLE spool (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)")
    db.executemany(
        "INSERT INTO spool (topic, payload) VALUES (?, ?)",
        [
            (f"{buses.root}/v1/events/{ev.charger_id}/{ev.kind.value}", orjson.dumps(ev.to_doc()))
            for ev in sent
        ],
    )
    db.commit()
    db.close()
    ingest = await buses.start("ingest-a")
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await buses.start("gw-a")
    await until(lambda: len(got.events) == len(sent))
    assert {e.event_id: e for e in got.events} == {e.event_id: e for e in sent}
    await until(lambda: gateway.spool is not None and len(gateway.spool) == 0)


async def test_a_non_durable_listener_sees_every_event(buses: Buses) -> None:
    listener = await buses.start("ops-a")
    got = Collector()
    listener.subscribe(got)
    gateway = await buses.start("gw-a")
    await until(lambda: f"{buses.root}/v2/events/#" in listener._subscriptions.current)
    sent = sample_events(10)
    await gateway.publish(sent)
    await until(lambda: len(got.events) == len(sent))
    assert [e.event_id for e in got.events] == [e.event_id for e in sent]


async def test_two_ingest_processes_split_the_events_without_loss_or_duplicates(buses: Buses) -> None:
    a, b = await buses.start("ingest-a"), await buses.start("ingest-b")
    got_a, got_b = Collector(), Collector()
    a.subscribe(got_a, durable=True)
    b.subscribe(got_b, durable=True)
    await asyncio.wait_for(asyncio.gather(a.durable_ready.wait(), b.durable_ready.wait()), 5)
    gateway = await buses.start("gw-a")
    sent = sample_events(400)
    for i in range(0, len(sent), 20):
        await gateway.publish(sent[i : i + 20])
    await until(lambda: len(got_a.events) + len(got_b.events) >= len(sent))
    await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
    ids = [e.event_id for e in got_a.events + got_b.events]
    assert len(ids) == len(set(ids)) == len(sent)
    assert set(ids) == {e.event_id for e in sent}
    assert got_a.events and got_b.events, "the shared subscription should split the load"


async def test_each_consumer_group_gets_every_event_once(buses: Buses) -> None:
    """Ingest and ops are separate durable groups: both see everything, each split within its group."""
    ingest, ops_a, ops_b = (
        await buses.start("ingest-a"),
        await buses.start("ops-a", durable_group="ops"),
        await buses.start("ops-b", durable_group="ops"),
    )
    stored, ruled_a, ruled_b = Collector(), Collector(), Collector()
    for bus, got in ((ingest, stored), (ops_a, ruled_a), (ops_b, ruled_b)):
        bus.subscribe(got, durable=True)
    await asyncio.wait_for(asyncio.gather(*(b.durable_ready.wait() for b in (ingest, ops_a, ops_b))), 5)
    assert ops_a.durable_client_id.endswith("-ops-ops-a") and ops_a.shared_filter.startswith(
        "$share/chargeops-ops/"
    )
    gateway = await buses.start("gw-a")
    sent = sample_events(200)
    for i in range(0, len(sent), 20):
        await gateway.publish(sent[i : i + 20])
    await until(
        lambda: len(stored.events) >= len(sent) and len(ruled_a.events) + len(ruled_b.events) >= len(sent)
    )
    await asyncio.sleep(0.2)  # anything extra (a duplicate) would arrive now
    ops_ids = [e.event_id for e in ruled_a.events + ruled_b.events]
    assert sorted(e.event_id for e in stored.events) == sorted(ops_ids) == sorted(e.event_id for e in sent)


async def test_publish_raises_when_the_broker_is_unreachable() -> None:
    bus = MqttBus(Settings(mqtt_url="mqtt://127.0.0.1:1"), BusTuning(connect_timeout=0.5))
    with pytest.raises(ConnectionError):
        await bus.start()
    with pytest.raises(ConnectionError):
        await bus.publish(sample_events(1))


# -- durable session -----------------------------------------------------------------------------------


async def test_events_published_while_ingest_is_down_wait_in_the_broker(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    ingest.subscribe(Collector(), durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    await ingest.close()

    gateway = await buses.start("gw-a")
    sent = sample_events(50)
    await gateway.publish(sent)

    again = await buses.start("ingest-a")
    got = Collector()
    again.subscribe(got, durable=True)
    await until(lambda: len(got.events) == len(sent))
    assert {e.event_id for e in got.events} == {e.event_id for e in sent}


async def test_a_failing_handler_loses_nothing(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    got = Collector(fail=2)
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await buses.start("gw-a")
    sent = sample_events(20)
    await gateway.publish(sent)
    await until(lambda: len(got.events) == len(sent))
    assert got.calls >= 3
    assert {e.event_id for e in got.events} == {e.event_id for e in sent}


async def test_events_are_acknowledged_only_after_the_handler_returned(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    stuck = Collector(hang=True)
    ingest.subscribe(stuck, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await buses.start("gw-a")
    sent = sample_events(10)
    await gateway.publish(sent)
    await until(lambda: stuck.calls >= 1)
    await ingest.close()  # the process dies while storing: nothing was acked

    again = await buses.start("ingest-a")
    got = Collector()
    again.subscribe(got, durable=True)
    await until(lambda: len(got.events) == len(sent))
    assert {e.event_id for e in got.events} == {e.event_id for e in sent}
    await again.close()

    third = await buses.start("ingest-a")  # acked now: nothing comes a third time
    late = Collector()
    third.subscribe(late, durable=True)
    await asyncio.wait_for(third.durable_ready.wait(), 5)
    await asyncio.sleep(0.3)
    assert late.events == []


# -- commands ------------------------------------------------------------------------------------------


class Charger:
    """A command executor standing in for a gateway session."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def execute(self, action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        self.calls.append((action, payload))
        await asyncio.sleep(self.delay)
        return CommandReply("result", payload={"status": "Accepted", "by": self.name})


async def test_a_request_reaches_the_executor_of_the_holding_bus(buses: Buses) -> None:
    gw_a, api = await buses.start("gw-a"), await buses.start("api")
    charger = Charger("a")
    gw_a.hold("CP1", charger.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    reply = await api.request("CP1", "Reset", {"type": "Soft"}, 5)
    assert reply == CommandReply("result", payload={"status": "Accepted", "by": "a"})
    assert charger.calls == [("Reset", {"type": "Soft"})]
    gw_a.release("CP1", charger.execute)


async def test_nobody_holding_the_charger_is_not_connected_within_seconds(buses: Buses) -> None:
    api = await buses.start("api")
    started = time.monotonic()
    reply = await api.request("CP-nobody", "Reset", {"type": "Soft"}, 30)
    assert reply.outcome == "not_connected"
    assert 1.5 <= time.monotonic() - started <= 3.0


async def test_a_slow_charger_is_a_timeout_not_not_connected(buses: Buses) -> None:
    gw_a = await buses.start("gw-a")
    api = await buses.start("api", reply_margin=0.5)
    charger = Charger("a", delay=5)
    gw_a.hold("CP1", charger.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    started = time.monotonic()
    reply = await api.request("CP1", "Reset", {"type": "Soft"}, 1)
    assert reply.outcome == "timeout"
    assert 1.0 <= time.monotonic() - started <= 2.5
    gw_a.release("CP1", charger.execute)


async def test_after_a_move_between_gateways_only_the_new_holder_executes(buses: Buses) -> None:
    gw_a, gw_c, api = await buses.start("gw-a"), await buses.start("gw-c"), await buses.start("api")
    on_a, on_c = Charger("a"), Charger("c")
    gw_a.hold("CP1", on_a.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    assert (await api.request("CP1", "Reset", {}, 5)).payload["by"] == "a"

    gw_a.release("CP1", on_a.execute)
    gw_c.hold("CP1", on_c.execute)
    await until(lambda: gw_c._holds.held["CP1"].holding)
    for _ in range(5):
        assert (await api.request("CP1", "Reset", {}, 5)).payload["by"] == "c"
    assert len(on_a.calls) == 1 and len(on_c.calls) == 5
    gw_c.release("CP1", on_c.execute)


async def test_a_takeover_before_the_old_gateway_releases_never_executes_twice(buses: Buses) -> None:
    """The charger reconnects to gateway C while A still thinks its old socket is alive."""
    gw_a, gw_c, api = await buses.start("gw-a"), await buses.start("gw-c"), await buses.start("api")
    on_a, on_c = Charger("a"), Charger("c")
    gw_a.hold("CP1", on_a.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    gw_c.hold("CP1", on_c.execute)
    await until(lambda: gw_c._holds.held["CP1"].holding and gw_a._holds.held["CP1"].superseded)
    await until(lambda: gw_a.command_topic("CP1") not in gw_a._subscriptions.current)
    replies = await asyncio.gather(*(api.request("CP1", "Reset", {}, 5) for _ in range(10)))
    assert [r.payload["by"] for r in replies] == ["c"] * 10
    assert on_a.calls == [] and len(on_c.calls) == 10

    gw_a.release("CP1", on_a.execute)  # the old socket finally closes: C keeps the charger
    await asyncio.sleep(0.2)
    assert (await api.request("CP1", "Reset", {}, 5)).payload["by"] == "c"
    gw_c.release("CP1", on_c.execute)


async def test_commands_racing_a_takeover_run_exactly_once(buses: Buses) -> None:
    gw_a, gw_c, api = await buses.start("gw-a"), await buses.start("gw-c"), await buses.start("api")
    on_a, on_c = Charger("a"), Charger("c")
    gw_a.hold("CP1", on_a.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    requests = [asyncio.ensure_future(api.request("CP1", "Reset", {"n": i}, 5)) for i in range(40)]
    await asyncio.sleep(0.005)
    gw_c.hold("CP1", on_c.execute)
    replies = await asyncio.gather(*requests)
    executed = [p["n"] for _, p in on_a.calls + on_c.calls]
    assert sorted(executed) == sorted(set(executed)), "a command ran on both gateways"
    assert all(r.outcome in ("result", "not_connected") for r in replies)
    assert len(executed) == sum(r.outcome == "result" for r in replies)
    gw_c.release("CP1", on_c.execute)
    gw_a.release("CP1", on_a.execute)


# -- broker connection lost -----------------------------------------------------------------------------


async def kick(client_id: str, port: int, *, persistent: bool = False) -> None:
    """Connect with another bus's client id: the broker drops that bus's connection (session takeover).

    For a persistent session the intruder keeps the session and acks nothing, so what the broker hands it
    goes back to the session when it leaves.
    """
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if persistent else 0
    intruder = aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=props,
    )
    intruder._client.manual_ack_set(True)
    async with intruder:
        await asyncio.sleep(0.05)


async def test_a_gateway_that_lost_the_broker_reconnects_and_keeps_its_chargers(buses: Buses) -> None:
    gw_a, api = await buses.start("gw-a"), await buses.start("api")
    on_a = Charger("a")
    gw_a.hold("CP1", on_a.execute)
    await until(lambda: gw_a._holds.held["CP1"].holding)
    await kick(gw_a.client_id, buses.port)
    await until(lambda: gw_a._link.conn is None)
    await gw_a.publish(sample_events(1))  # spooled
    await until(lambda: gw_a._link.conn is not None and gw_a._holds.held["CP1"].announced)
    assert (await api.request("CP1", "Reset", {}, 5)).payload["by"] == "a"
    await gw_a.publish(sample_events(1))
    gw_a.release("CP1", on_a.execute)


async def test_ingest_losing_the_broker_mid_stream_loses_nothing(buses: Buses) -> None:
    ingest = await buses.start("ingest-a")
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await buses.start("gw-a")
    sent = sample_events(300)
    for i in range(0, 150, 10):
        await gateway.publish(sent[i : i + 10])
    await kick(ingest.durable_client_id, buses.port, persistent=True)
    for i in range(150, 300, 10):
        await gateway.publish(sent[i : i + 10])
    await until(lambda: {e.event_id for e in got.events} == {e.event_id for e in sent}, timeout=10)


# -- end to end, across processes ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """`chargeops serve` in a subprocess; its log is drained continuously and shown when a test fails."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._drain = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip())

    async def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.returncode is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(self.lines)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain


async def test_gateway_and_ingest_in_one_process_api_and_ops_in_another(
    pg_url: str, mqtt_broker: Broker
) -> None:
    root = f"chargeops-test-{uuid.uuid4().hex[:10]}"
    mqtt_url = mqtt_broker.url(root)
    ocpp_port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "CHARGEOPS_MQTT_URL": mqtt_url,
        "CHARGEOPS_DATABASE_URL": pg_url,
        "CHARGEOPS_GATEWAY_ID": "gw-a",
    }
    env.pop("CHARGEOPS_ROLES", None)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ops.cli", "serve", "--roles", "gateway,ingest"],
        *["--ocpp-port", str(ocpp_port), "--http-port", str(http_port), "--accept-unknown"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = Process(proc)
    api: Runtime | None = None
    try:
        await server.wait_for_line("durable shared subscription")
        await server.wait_for_line("HTTP API on")
        settings = Settings(
            database_url=pg_url,
            mqtt_url=mqtt_url,
            roles="api,ops",
            http_port=0,
            ocpp_port=0,
            admin_token=SecretStr("t"),
        )
        api = Runtime(settings)
        await api.start()
        async with (
            connect(f"ws://127.0.0.1:{ocpp_port}/ocpp/CP-X", subprotocols=[Subprotocol("ocpp1.6")]) as ws,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api.http_port}", headers={"Authorization": "Bearer t"}
            ) as http,
        ):
            await ws.send(
                orjson.dumps(
                    [2, "1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
                ).decode()
            )
            boot = orjson.loads(await ws.recv())
            assert boot[0] == 3 and boot[2]["status"] == "Accepted", boot

            async def answer_reset() -> None:
                call = orjson.loads(await ws.recv())
                assert call[0] == 2 and call[2] == "Reset" and call[3] == {"type": "Soft"}, call
                await ws.send(orjson.dumps([3, call[1], {"status": "Accepted"}]).decode())

            charger = asyncio.ensure_future(answer_reset())
            resp = await http.post("/api/chargers/CP-X/ocpp/Reset", json={"type": "Soft"}, timeout=30)
            await charger
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"response": {"status": "Accepted"}}

            meter = {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": "2025-01-01T00:00:00Z",
                        "sampledValue": [
                            {"value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}
                        ],
                    }
                ],
            }
            await ws.send(orjson.dumps([2, "2", "MeterValues", meter]).decode())
            answer = orjson.loads(await ws.recv())
            assert answer == [3, "2", {}], answer

            # The ops role (its own durable consumer group, in the API's process) turns a fault into a ticket.
            fault = {"connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted"}
            await ws.send(orjson.dumps([2, "3", "StatusNotification", fault]).decode())
            assert orjson.loads(await ws.recv()) == [3, "3", {}]
            deadline = time.monotonic() + 15
            while not (
                tickets := (await http.get("/api/tickets", params={"charger_id": "CP-X"})).json()["items"]
            ):
                assert time.monotonic() < deadline, "no ticket from the ops role"
                await asyncio.sleep(0.1)
            assert [t["rule"] for t in tickets] == ["earth-fault"]

        db = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            deadline = time.monotonic() + 10
            rows: list[Any] = []
            while not rows:
                assert time.monotonic() < deadline, "the meter value never reached meter_samples"
                rows = await db.fetch("SELECT charger_id, measurand, value FROM meter_samples")
                await asyncio.sleep(0.05)
        finally:
            await db.close()
        assert [tuple(r) for r in rows] == [("CP-X", "Energy.Active.Import.Register", 1234.5)]
    except BaseException:
        print("\n".join(server.lines))
        raise
    finally:
        if api is not None:
            await api.stop()
        await server.stop()
        await end_session(f"{root}-ingest-gw-a", mqtt_broker.port)
