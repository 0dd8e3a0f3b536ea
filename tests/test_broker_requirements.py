"""What the bus needs from an MQTT 5 broker (docs/bus.md), checked on each broker of tests/mqtt_brokers.py.

Each test checks one requirement at the protocol level (paho, no chargeops code) and asserts that the broker
does exactly what `LACKS` says: a broker that lacks a requirement is shown failing it here, never skipped,
and a broker that gains it fails the test until the table (and docs/bus.md) say so. A private broker is
started afresh for each test (rumqttd's router dies on one of them).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.mqtt_brokers import LACKS, Broker, running

CANDIDATES = ("mosquitto", "rumqttd")


@pytest.fixture(params=CANDIDATES)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    with running(request.param) as b:
        yield b


def expect(broker: Broker, requirement: str, works: bool) -> None:
    lacking = broker.name in LACKS.get(requirement, set())
    assert works != lacking, (
        f"{broker.name} {'now meets' if works else 'fails'} {requirement!r}: update LACKS and docs/bus.md"
    )


class Peer:
    """A paho MQTT 5 client on its own network thread, remembering what it got."""

    def __init__(
        self,
        broker: Broker,
        client_id: str = "",
        *,
        clean: bool = True,
        expiry: int = 0,
        manual_ack: bool = False,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or uuid.uuid4().hex,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, str] = {}
        self.connack: list[tuple[bool, str]] = []
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, str(rc))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        props.ReceiveMaximum = 65535
        self.client.connect(broker.host, broker.port, clean_start=clean, properties=props)
        self.client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, _c: object, _u: object, flags: mqtt.ConnectFlags, rc: object, _p: object) -> None:
        self.connack.append((flags.session_present, str(rc)))
        self._connected.set()

    @property
    def accepted(self) -> bool:
        return bool(self.connack) and self.connack[-1][1] == "Success"

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def publish(self, topic: str, payload: bytes, **kw: object) -> int:
        info = self.client.publish(topic, payload, qos=1, **kw)  # type: ignore[arg-type]
        info.wait_for_publish(5)
        return info.mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """The connection ends without a DISCONNECT, as when the process is killed."""
        self.client.loop_stop()
        sock = self.client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def settle(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Whether `check` holds within `timeout` s (a broker that never delivers is a False, not a hang)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def root() -> str:
    return f"req-{uuid.uuid4().hex[:8]}"


def test_puback_no_matching_subscribers(broker: Broker) -> None:
    """Reason code 16 sends the gateway's events to its spool until ingest has subscribed."""
    pub = Peer(broker)
    mid = pub.publish(f"{root()}/nobody", b"x")
    settle(lambda: mid in pub.acks)
    expect(broker, "puback_no_matching_subscribers", pub.acks.get(mid) == "No matching subscribers")
    pub.close()


def test_shared_subscription_splits_the_stream(broker: Broker) -> None:
    r = root()
    members = [Peer(broker), Peer(broker)]
    for m in members:
        m.subscribe(f"$share/g/{r}/events/#")
    pub = Peer(broker)
    for i in range(20):
        pub.publish(f"{r}/events/{i}", str(i).encode())
    settle(lambda: sum(len(m.messages) for m in members) >= 20)
    got = sorted(int(msg.payload) for m in members for msg in m.messages)
    expect(broker, "shared_subscription", got == list(range(20)) and all(m.messages for m in members))
    for p in (*members, pub):
        p.close()


def test_a_persistent_session_keeps_its_queue(broker: Broker) -> None:
    r, cid = root(), uuid.uuid4().hex
    durable = Peer(broker, cid, clean=False, expiry=600)
    durable.subscribe(f"$share/g/{r}/#")
    durable.close()
    pub = Peer(broker)
    for i in range(5):
        pub.publish(f"{r}/e/{i}", b"q")
    again = Peer(broker, cid, clean=False, expiry=600)
    settle(lambda: len(again.messages) >= 5)
    expect(
        broker, "persistent_session", again.connack[:1] == [(True, "Success")] and len(again.messages) == 5
    )
    for p in (again, pub):
        p.close()
    Peer(broker, cid).close()  # clean start, expiry 0: the session ends


def test_unacknowledged_shared_messages_come_back_after_a_reconnect(broker: Broker) -> None:
    """Ingest acknowledges only after its commit: a process that dies in between gets them again."""
    r, cid = root(), uuid.uuid4().hex
    ingest = Peer(broker, cid, clean=False, expiry=600, manual_ack=True)
    ingest.subscribe(f"$share/g/{r}/#")
    pub = Peer(broker)
    for i in range(5):
        pub.publish(f"{r}/e/{i}", b"u")
    settle(lambda: len(ingest.messages) == 5)
    ingest.close()  # nothing acknowledged
    again = Peer(broker, cid, clean=False, expiry=600)
    settle(lambda: len(again.messages) >= 5)
    again.close()
    later = Peer(broker)  # the broker still takes connections
    works = len(again.messages) == 5 and later.accepted
    expect(broker, "unacked_shared_redelivered", works)
    for p in (later, pub):
        p.close()
    Peer(broker, cid).close()


def test_retained_message_and_its_deletion(broker: Broker) -> None:
    r = root()
    pub = Peer(broker)
    pub.publish(f"{r}/commands/CP1", b"hold", retain=True)
    first = Peer(broker)
    first.subscribe(f"{r}/commands/+")
    settle(lambda: bool(first.messages))
    pub.publish(f"{r}/commands/CP1", b"", retain=True)
    second = Peer(broker)
    second.subscribe(f"{r}/commands/+")
    works = [(m.payload, m.retain) for m in first.messages[:1]] == [(b"hold", True)] and not second.messages
    expect(broker, "retained", works)
    for p in (pub, first, second):
        p.close()


def test_a_will_is_published_retained_when_a_connection_drops(broker: Broker) -> None:
    """A gateway killed or cut off is announced by its Will: live to ingest's shared subscription, and
    retained for whoever subscribes later."""
    r = root()
    watcher = Peer(broker)
    watcher.subscribe(f"$share/g/{r}/gateways/+")
    gateway = Peer(broker, will=(f"{r}/gateways/gw-1", b"offline"))
    gateway.publish(f"{r}/gateways/gw-1", b"online", retain=True)
    settle(lambda: len(watcher.messages) >= 1)
    gateway.drop()
    settle(lambda: len(watcher.messages) >= 2)
    later = Peer(broker)
    later.subscribe(f"{r}/gateways/+")
    settle(lambda: bool(later.messages))
    live = [m.payload for m in watcher.messages]
    works = live == [b"online", b"offline"] and [(m.payload, m.retain) for m in later.messages] == [
        (b"offline", True)
    ]
    expect(broker, "will_retained", works)
    for p in (watcher, later):
        p.close()


def test_response_topic_correlation_data_and_message_expiry_are_forwarded(broker: Broker) -> None:
    r = root()
    gateway = Peer(broker)
    gateway.subscribe(f"{r}/commands/CP1")
    api = Peer(broker)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData, props.MessageExpiryInterval = f"{r}/replies/x", b"req-1", 30
    api.publish(f"{r}/commands/CP1", b"{}", properties=props)
    settle(lambda: bool(gateway.messages))
    got = gateway.messages[0].properties if gateway.messages else None
    works = got is not None and (
        getattr(got, "ResponseTopic", None),
        getattr(got, "CorrelationData", None),
        0 < getattr(got, "MessageExpiryInterval", 0) <= 30,
    ) == (f"{r}/replies/x", b"req-1", True)
    expect(broker, "response_topic", works)
    for p in (gateway, api):
        p.close()


def test_more_than_100_unacknowledged_messages_in_flight(broker: Broker) -> None:
    """Ingest asks for Receive Maximum 65,535 and acks a batch after its commit: the in-flight window bounds
    how many messages one commit can take."""
    r, cid = root(), uuid.uuid4().hex
    ingest = Peer(broker, cid, clean=False, expiry=600, manual_ack=True)
    ingest.subscribe(f"$share/g/{r}/#")
    pub = Peer(broker)
    for i in range(300):
        pub.client.publish(f"{r}/e/{i}", b"m", qos=1)
    settle(lambda: len(ingest.messages) >= 300)
    expect(broker, "inflight_over_100", len(ingest.messages) == 300)
    for p in (ingest, pub):
        p.close()
    Peer(broker, cid).close()


def test_a_client_id_may_hold_a_slash(broker: Broker) -> None:
    """Durable client ids are `{root}-{group}-{node_id}` as given (a root `a/b` puts a slash in them)."""
    peer = Peer(broker, f"{root()}/ingest-a")
    expect(broker, "client_id_slash", peer.accepted)
    peer.close()
