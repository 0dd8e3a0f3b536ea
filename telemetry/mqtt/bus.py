"""`MqttBus`: the `Bus` over an MQTT 5 broker, composed of the parts in this package (docs/bus.md).

One clean-session connection carries publishing, commands, replies and listeners; the durable (ingest,
ops) subscription has a persistent-session connection of its own (`consumer.py`). Both reconnect with
back-off.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomqtt

from chargeops.broker import BrokerUnavailable
from chargeops.events import Event, utcnow
from chargeops.settings import Settings
from telemetry.bus import CommandExecutor, CommandReply, EventHandler
from telemetry.metrics import BUS_ERRORS
from telemetry.mqtt.client import Broker, Connection, Link, backoff
from telemetry.mqtt.commands import Executions, Holds, Requests
from telemetry.mqtt.consumer import Batching, DurableConsumer
from telemetry.mqtt.events import BATCH_MAX_MESSAGES, Linger, Listeners, Outbox, decode_batch
from telemetry.mqtt.presence import GatewayPresence
from telemetry.mqtt.topics import Topics
from telemetry.spool import Spool

log = logging.getLogger(__name__)

_SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE / UNSUBSCRIBE packet


class Subscriptions:
    """What the clean session is subscribed to, brought in line with what the bus wants in chunks."""

    def __init__(self) -> None:
        self.current: set[str] = set()

    async def apply(self, client: aiomqtt.Client, wanted: set[str]) -> None:
        add = sorted(wanted - self.current)
        drop = sorted(self.current - wanted)
        for i in range(0, len(add), _SUBSCRIBE_CHUNK):
            chunk = add[i : i + _SUBSCRIBE_CHUNK]
            codes = await client.subscribe([(t, 1) for t in chunk])
            for topic, code in zip(chunk, codes, strict=True):
                if getattr(code, "is_failure", False):
                    log.error("subscription to %s refused: %s", topic, code)
                else:
                    self.current.add(topic)
        for i in range(0, len(drop), _SUBSCRIBE_CHUNK):
            chunk = drop[i : i + _SUBSCRIBE_CHUNK]
            await client.unsubscribe(chunk)
            self.current.difference_update(chunk)


@dataclass(frozen=True, slots=True)
class BusTuning:
    """Timeouts and sizes of an `MqttBus`. The defaults are what runs in production; tests shorten some."""

    ack_timeout: float | None = None  # s for a holder to take a command (None: settings.command_ack_timeout)
    reply_margin: float = 5.0  # s beyond the call's own timeout to wait for the reply; none: `timeout`
    session_expiry: int = 7 * 86400  # s a durable session, and what is queued for it, outlives its absence
    max_batch: int = 20000  # events per handler call, durable and listeners
    batch_wait: float = 0.002  # s a durable batch gathers before it is cut (one commit for a burst)
    ingest_pipeline: int = 4  # durable batches with the handler at once (the BatchWriter group-commits)
    connect_timeout: float = 10.0  # s `start` waits for the broker
    op_timeout: float = 10.0  # s for the broker to confirm a publish or a subscription
    listener_queue: int = 100_000  # events a listener may lag behind; beyond, they are dropped
    replay_batch: int = 2000  # spooled events sent per replay step


class MqttBus:
    """`Bus` over MQTT 5: events out through `Linger` and `Outbox`, in through a `DurableConsumer` or
    `Listeners`; commands through `Holds`, `Executions` and `Requests`. The gateway's spool is configured
    in `Settings` (`spool_dir`, `spool_max_events`); `durable_group` names the consumer group of the
    durable subscription."""

    def __init__(
        self, settings: Settings, tuning: BusTuning = BusTuning(), *, durable_group: str = "ingest"
    ) -> None:
        self._broker = Broker.from_settings(settings)
        root = self._broker.root
        self.topics = Topics(root)
        self.instance_id = uuid.uuid4().hex[:12]
        # Percent-encoded: brokers may refuse `/`, `+` or `#` in a client id (rumqttd does). A clean session
        # keeps nothing, so the encoding changes nothing on upgrade; durable ids stay as they were.
        self.client_id = quote(f"{root}-{settings.gateway_id}-{self.instance_id}", safe="")
        self.reply_topic = self.topics.replies(self.instance_id)
        self.event_topic = self.topics.events(settings.gateway_id)
        # A gateway process says it is online (retained) and leaves the broker a Will saying it is not.
        self.presence_topic = self.topics.gateway(settings.gateway_id)
        self.presence: GatewayPresence | None = None
        self._connection_no = 0  # broker connections tried; part of the run id (Will and `Connected` events)
        self._restored: Callable[[], Awaitable[None]] | None = None
        if "gateway" in settings.role_set():
            self.presence = GatewayPresence(settings.gateway_id, self.run_id, utcnow())
        # Each consumer group (ingest, ops) gets every event once per group, split across its processes.
        self._durable_group = durable_group
        self.durable_client_id = f"{root}-{durable_group}-{settings.node_id}"
        self.shared_filter = self.topics.shared_events(durable_group)
        self.durable_ready = asyncio.Event()  # set while the shared subscription is confirmed
        self._tuning = tuning
        self._failure = "no answer"  # why the last connection attempt failed, for `start`'s error
        self._refused = asyncio.Event()  # set when it failed in a way waiting cannot fix (login, certificate)

        self._tasks: set[asyncio.Task[Any]] = set()
        self._link = Link()
        self._dirty = asyncio.Event()  # the subscriptions or hold notices need an update
        self._subscriptions = Subscriptions()
        self._durable: DurableConsumer[Event] | None = None
        self._listeners = Listeners(tuning.listener_queue, tuning.max_batch, self._spawn)
        self._outbox = Outbox(settings, self.topics, self._link, self._spawn, tuning.replay_batch)
        self._linger = Linger(settings.bus_linger_ms / 1000, self._outbox.send, self._spawn)
        self._holds = Holds(self.instance_id, self.topics, self._dirty)
        self._executions = Executions(self.instance_id, self._holds, self._link, self._spawn)
        self._requests = Requests(
            self.topics,
            self.reply_topic,
            self._link,
            tuning.ack_timeout or settings.command_ack_timeout,
            tuning.reply_margin,
        )

    @property
    def run_id(self) -> str:
        return f"{self.instance_id}.{self._connection_no}"

    def on_presence_restored(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._restored = callback

    def command_topic(self, charger_id: str) -> str:
        return self.topics.commands(charger_id)

    @property
    def spool(self) -> Spool | None:
        """The gateway's spool, once opened (the first event the broker could not take, or at start)."""
        return self._outbox.spool

    @property
    def spool_path(self) -> Path:
        return self._outbox.spool_path

    # -- lifecycle ------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self) -> None:
        """Connect; raises BrokerUnavailable (a ConnectionError saying why) if the broker cannot be reached
        within `connect_timeout`, or at once if it refused the login or its certificate is not trusted.

        A spool a previous gateway process left behind is reopened first, and replayed once connected."""
        await self._outbox.start()
        main = self._spawn(self._run_main(), "mqtt-bus")
        waits = {asyncio.ensure_future(self._link.up.wait()), asyncio.ensure_future(self._refused.wait())}
        await asyncio.wait(
            {main, *waits}, timeout=self._tuning.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for wait in waits:
            wait.cancel()
        if not self._link.up.is_set():
            await self.close()
            raise BrokerUnavailable(
                f"cannot connect to the MQTT broker at {self._broker.url}: {self._failure}"
            )

    async def close(self) -> None:
        await self._say_offline()
        self._outbox.running = False
        self._linger.flush()  # published just now: fails below (its task is cancelled), like the rest
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._outbox.close()

    async def ready(self, timeout: float) -> None:
        """Once a durable subscription exists, wait until the broker confirmed it: before that, events
        published would have no subscriber and be dropped."""
        if self._durable is not None:
            await asyncio.wait_for(self.durable_ready.wait(), timeout)

    async def _say_offline(self) -> None:
        """A clean stop: the gateway's retained presence says `offline` (the Will says it otherwise)."""
        conn = self._link.conn
        if self.presence is None or conn is None:
            return
        try:
            await self._announce(conn, self.presence.offline())
        except ConnectionError as exc:
            log.warning("could not publish the gateway's offline presence: %s", exc)

    async def _announce(self, conn: Connection, presence: GatewayPresence) -> None:
        await conn.confirm([conn.send(self.presence_topic, presence.encode(), retain=True)])

    def _will(self) -> aiomqtt.Will | None:
        if self.presence is None:
            return None
        return aiomqtt.Will(self.presence_topic, self.presence.offline().encode(), qos=1, retain=True)

    async def _run_main(self) -> None:
        delay = 0.2
        while True:
            t = self._tuning
            self._connection_no += 1
            if self.presence is not None:  # each connection's Will names it: a later one's is not undone
                self.presence = replace(self.presence, instance=self.run_id)
            client = self._broker.client(
                self.client_id,
                clean=True,
                session_expiry=t.session_expiry,
                timeout=t.op_timeout,
                will=self._will(),
            )
            conn = Connection(client, t.op_timeout)
            try:
                async with client:
                    self._subscriptions.current.clear()
                    self._holds.reconnected()
                    self._link.conn = conn
                    await self._sync(conn)
                    if self.presence is not None:
                        await self._announce(conn, self.presence)
                    self._link.up.set()
                    if self.presence is not None and self._connection_no > 1 and self._restored is not None:
                        self._spawn(self._restored(), "mqtt-bus-presence-restored")
                    log.info("mqtt bus %s connected to %s", self.instance_id, self._broker.url)
                    delay = 0.2
                    syncer = self._spawn(self._sync_forever(conn), "mqtt-bus-sync")
                    try:
                        async for msg in client.messages:
                            self._dispatch(conn, msg)
                    finally:
                        syncer.cancel()
            except (aiomqtt.MqttError, ConnectionError) as exc:
                BUS_ERRORS.labels("connect").inc()
                self._failure, permanent = self._broker.diagnose(exc)
                if permanent:
                    self._refused.set()
                log.warning("mqtt bus connection lost: %s; reconnecting in %.1f s", self._failure, delay)
            finally:
                self._link.up.clear()
                self._link.conn = None
                conn.lost.set_result(None)
            delay = await backoff(delay)

    def _dispatch(self, conn: Connection, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        if topic == self.reply_topic:
            self._requests.on_reply(msg.payload)
        elif topic.startswith(self.topics.commands_prefix):
            self._executions.on_message(conn, Topics.charger_of(topic), msg.payload)
        elif topic.startswith(self.topics.events_prefix):
            self._listeners.deliver(msg.payload, topic)

    # -- the clean session's subscriptions and hold notices -------------------------------------------

    def _wanted(self) -> set[str]:
        topics = {self.reply_topic}
        if self._listeners:
            topics.add(self.topics.events_all)
        return topics | self._holds.topics()

    async def _sync_forever(self, conn: Connection) -> None:
        while True:
            await self._dirty.wait()
            try:
                await self._sync(conn)
            except (aiomqtt.MqttError, ConnectionError) as exc:
                log.warning("command topic update failed: %s; retrying", exc)
                await asyncio.sleep(1.0)  # cancelled with the connection if that is what failed
                self._dirty.set()

    async def _sync(self, conn: Connection) -> None:
        """Brings the broker's subscriptions in line with what this process wants, then announces new
        holds and deletes the notices of released ones."""
        self._dirty.clear()
        await self._subscriptions.apply(conn.client, self._wanted())
        await self._holds.announce(conn, self._subscriptions.current)

    # -- the Bus protocol -----------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        """Returns once the broker acknowledged every event (QoS 1) or, in a gateway, once they are in
        the spool; raises ConnectionError (`SpoolFull` when the spool is full) otherwise."""
        await self._linger.publish(events)

    def subscribe(self, handler: EventHandler, *, durable: bool = False) -> None:
        if durable:
            if self._durable is not None:
                raise ValueError("MqttBus carries one durable subscriber per process (the ingest role)")
            t = self._tuning
            batching = Batching(t.max_batch, BATCH_MAX_MESSAGES, t.batch_wait, t.ingest_pipeline)
            self._durable = DurableConsumer(
                self._broker,
                self.durable_client_id,
                [self.shared_filter],
                decode_batch,
                handler,
                batching,
                session_expiry=t.session_expiry,
                op_timeout=t.op_timeout,
                name=self._durable_group,
                ready=self.durable_ready,
            )
            self._spawn(self._durable.run(), "mqtt-bus-ingest")
            return
        self._listeners.add(handler)
        self._dirty.set()

    def hold(self, charger_id: str, executor: CommandExecutor) -> None:
        self._holds.hold(charger_id, executor)

    def release(self, charger_id: str, executor: CommandExecutor) -> None:
        self._holds.release(charger_id, executor)

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        """Ask whichever gateway holds the charger; `not_connected` if none acks within `ack_timeout`."""
        return await self._requests.request(charger_id, action, payload, timeout)
