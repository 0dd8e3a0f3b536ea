"""Broker connections: the only module that touches paho or aiomqtt internals.

aiomqtt (2.5) has public API for connecting, subscribing and its message iterator, and everything here
uses it where it is enough. It has none for these, so they reach into its private paho client
(`Client._client`) and its disconnect future (`Client._disconnected`):

- PUBACK futures by message id (`Connection`): aiomqtt's `publish` scans every pending call on each
  publish, which caps a busy gateway at a few thousand events a second;
- manual acknowledgement (`Inbox`): paho acks QoS 1 messages on receipt unless told not to, and aiomqtt has
  no switch for it; a durable consumer must ack only after the store;
- messages straight from paho's callback (`Inbox`): aiomqtt's iterator costs a `Message`, a queue put and
  get and a task wake-up per message, about a tenth of the ingest's CPU;
- a connection's end as a future (`Inbox.lost`), so a consumer waiting on its store notices it at once;
- a connection closed before the CONNACK failing the connect at once (aiomqtt waits out its timeout).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from chargeops.broker import (
    CA_FLAG,
    CERT_FLAG,
    PASSWORD_ENV,
    URL_FLAG,
    USER_FLAG,
    BrokerAddress,
    broker_address,
)

if TYPE_CHECKING:
    from chargeops.settings import Settings

# A dead link is noticed within two keepalives even when no read ever reports it: under uvloop, a
# socket callback that aiomqtt schedules for a connection the broker just closed can leave the client
# waiting on a socket it no longer polls (seen across a broker restart: the ingest never resubscribed).
KEEPALIVE_SECONDS = 5
_NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 PUBACK reason: accepted, but nobody will ever get the message
_LOGIN_REFUSED = {4, 5, 134, 135}  # CONNACK: bad user name or password / not authorised (MQTT 3.1.1 and 5)

Received = mqtt.MQTTMessage  # what an `Inbox` holds: `.topic` (str), `.payload` (bytes)
Spawn = Callable[[Awaitable[Any], str], asyncio.Task[Any]]  # starts a named task its owner cancels on close


class NoSubscriber(ConnectionError):
    """The broker acked an event with "no matching subscribers": it is gone unless we keep it.

    Happens before any ingest session subscribed, and after a Mosquitto 2.0 restart until ingest
    re-subscribes (Mosquitto restores persistent sessions and their queued messages, but not their
    shared subscriptions)."""


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the settings point (`chargeops/broker.py`: URL, TLS files, credentials), and how every chargeops
    MQTT client connects to it: MQTT 5, the short keepalive, no in-flight cap."""

    address: BrokerAddress

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker:
        """Raises BrokerConfigError (one line naming the setting) for settings that cannot work."""
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        return cls(
            broker_address(
                settings.mqtt_url,
                ca_file=settings.mqtt_ca_file,
                cert_file=settings.mqtt_cert_file,
                key_file=settings.mqtt_key_file,
                username=settings.mqtt_username,
                password=password,
            )
        )

    @property
    def root(self) -> str:
        return self.address.root

    @property
    def url(self) -> str:
        """For logs and errors (no password)."""
        return self.address.url

    def client(
        self,
        identifier: str,
        *,
        clean: bool,
        session_expiry: int,
        timeout: float,
        will: aiomqtt.Will | None = None,
    ) -> aiomqtt.Client:
        """A client; with `clean` off its session (and what is queued for it) outlives `session_expiry` s
        of absence. The broker publishes `will` when the connection ends without a DISCONNECT."""
        client = aiomqtt.Client(
            **self.address.client_kwargs(),
            identifier=identifier,
            will=will,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=clean,
            properties=_props(
                PacketTypes.CONNECT,
                SessionExpiryInterval=0 if clean else session_expiry,
                ReceiveMaximum=65535,
            ),
            timeout=timeout,
            keepalive=KEEPALIVE_SECONDS,
            max_inflight_messages=0,  # unlimited: paho rescans its whole queue per PUBACK otherwise
        )
        client.pending_calls_threshold = 1 << 30  # many concurrent publishes are normal here, not a warning
        _fail_when_closed_before_connack(client)
        return client

    def diagnose(self, exc: BaseException) -> tuple[str, bool]:
        """What a failed connection means for the operator, and whether it is permanent: a refused login or
        an untrusted certificate stays so until the configuration changes, so start-up need not wait."""
        text = str(exc)
        rc = getattr(exc, "rc", None)
        if getattr(rc, "value", rc) in _LOGIN_REFUSED:
            fix = f"mqtt://USER:PASSWORD@host in {URL_FLAG}, or {USER_FLAG} and {PASSWORD_ENV}"
            return f"the broker refused the login ({text}): check the user name and password ({fix})", True
        if "CERTIFICATE_VERIFY_FAILED" in text:
            fix = f"give the CA that signed it with {CA_FLAG} and name the broker as its certificate does"
            return f"the broker's TLS certificate is not trusted ({text}): {fix}", True
        tls = self.address.tls is not None
        if not tls and (isinstance(exc, ClosedBeforeConnack) or "timed out" in text):
            return f"{text}: if the broker's port expects TLS, use mqtts://", False
        if tls and isinstance(exc, ClosedBeforeConnack):
            return f"{text}: does the broker require a client certificate ({CERT_FLAG})?", False
        if tls and any(s in text for s in ("SSL", "reset by peer", "EOF")):
            where = f"{self.address.host}:{self.address.port}"
            return f"{text}: is {where} a TLS listener? (a plain one takes mqtt://, usually port 1883)", False
        return text, False


class ClosedBeforeConnack(aiomqtt.MqttError):
    """The broker dropped the connection before accepting it (a TLS listener spoken to in plain MQTT, a
    client certificate it requires and did not get)."""


def _fail_when_closed_before_connack(client: aiomqtt.Client) -> None:
    """aiomqtt ignores a connection that ends before the CONNACK and waits out its whole timeout: fail the
    connect at once instead, so start-up says what went wrong."""

    def closed(paho: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        pending = client._connected
        if client._lock.locked() and not pending.done():  # connecting (the lock is held until disconnected)
            pending.set_exception(ClosedBeforeConnack("the broker closed the connection before accepting it"))
            retrieve(pending)  # whoever awaits it still gets the error; nobody may, after a timeout
        client._on_disconnect(paho, userdata, flags, rc, props)

    client._client.on_disconnect = closed


class Connection:
    """One publishing connection; `lost` completes when its owner saw it end, so waits on it fail fast.

    Publishes go to paho directly and PUBACKs resolve futures by message id (see the module docstring)."""

    def __init__(self, client: aiomqtt.Client, op_timeout: float) -> None:
        self.client = client
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._op_timeout = op_timeout
        self._acks: dict[int, tuple[asyncio.Future[None], bool]] = {}
        client._client.on_publish = self._on_publish

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
        subscribed: bool = False,
    ) -> asyncio.Future[None]:
        """QoS 1 publish; the future completes with the broker's PUBACK. With `subscribed`, a PUBACK
        saying nobody subscribed is a failure (`NoSubscriber`): the message was dropped."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        info = self.client._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            fut.set_exception(ConnectionError(f"MQTT publish refused: {mqtt.error_string(info.rc)}"))
        elif info.is_published():
            fut.set_result(None)
        else:
            self._acks[info.mid] = (fut, subscribed)
        return fut

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        fut, subscribed = self._acks.pop(mid, (None, False))
        if fut is None or fut.done():
            return
        if getattr(reason, "is_failure", False):
            fut.set_exception(ConnectionError(f"broker refused the message: {reason}"))
        elif subscribed and getattr(reason, "value", 0) == _NO_MATCHING_SUBSCRIBERS:
            fut.set_exception(NoSubscriber("the broker has no subscriber for the event (is ingest up?)"))
        else:
            fut.set_result(None)

    async def confirm(self, acks: Iterable[asyncio.Future[None]]) -> None:
        """Wait for the broker's acks, failing as soon as the connection drops or `op_timeout` passes."""
        done: asyncio.Future[Any] = asyncio.gather(*acks)
        try:
            await asyncio.wait(
                {done, self.lost}, timeout=self._op_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done.done():
                raise ConnectionError("the MQTT broker did not confirm (connection lost or too slow)")
            done.result()
        finally:
            if not done.done():
                done.cancel()
                done.add_done_callback(retrieve)


class Link:
    """The bus's current publishing connection as its parts see it: `conn` is None while reconnecting,
    `up` is set while connected."""

    __slots__ = ("conn", "up")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.up = asyncio.Event()


class Inbox:
    """A persistent session's messages, taken from paho's callback straight into a deque, acked by hand.

    Make it before connecting: a persistent session's backlog arrives at once."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.messages: deque[Received] = deque()
        self.arrived = asyncio.Event()
        self._client = client
        client._client.manual_ack_set(True)
        client._client.on_message = self._receive

    def _receive(self, _client: Any, _userdata: Any, msg: Received) -> None:
        self.messages.append(msg)
        self.arrived.set()

    def lost(self) -> asyncio.Future[None]:
        """Completes when the connection ends (with the `MqttError` that ended it). aiomqtt makes a new
        future on every connect: take it once connected."""
        return self._client._disconnected

    def ack(self, batch: Iterable[Received]) -> int:
        """PUBACK each message; returns how many could not be sent (the connection is going, and the
        broker redelivers them)."""
        ack = self._client._client.ack
        return sum(ack(msg.mid, msg.qos) != mqtt.MQTT_ERR_SUCCESS for msg in batch)


def publish_properties(**values: Any) -> Properties:
    """MQTT 5 PUBLISH properties, e.g. `CorrelationData=b"…"`."""
    return _props(PacketTypes.PUBLISH, **values)


def _props(packet: int, **values: Any) -> Properties:
    props = Properties(packet)
    for name, value in values.items():
        setattr(props, name, value)
    return props


async def backoff(delay: float) -> float:
    """Back-off for reconnects and retried writes: sleep `delay`, return the next (doubling up to 10 s)."""
    await asyncio.sleep(delay)
    return min(delay * 2, 10.0)


def retrieve(fut: asyncio.Future[Any]) -> None:
    """An abandoned wait's outcome is known already (the connection is gone): keep asyncio quiet."""
    if not fut.cancelled():
        fut.exception()
