"""The bus over an MQTT 5 broker, for roles running in separate processes (`CHARGEOPS_MQTT_URL`).

Topic tree (`{root}` is the path of the MQTT URL, `chargeops` when there is none; `{cp}` is the charger id,
percent-encoded so `/`, `+` and `#` cannot break the tree). All messages are JSON, QoS 1.

    {root}/v2/events/{gw}          `{"v": 2, "events": [Event.to_doc(), ...]}`: a batch of events from the
                                   gateway `{gw}`, in the order it published them
    {root}/v2/commands/{cp}        hold notices (retained) and commands for one charger; only the gateway
                                   holding the charger subscribes (MaEVe style)
    {root}/v2/replies/{bus}        "accepted" acks and final replies for the bus instance that asked

Why batches (v2; v1 sent one event per message on `events/{cp}/{kind}`): the per-message cost of MQTT in
paho (packet parsing, MQTT 5 properties, PUBACK) was over half of the ingest's CPU, and the broker's work is
per message too. `publish` gathers what every caller publishes within `bus_linger_ms` (default 2 ms; 0 = one
event-loop iteration) into one message: at 2,500 events/s a gateway sends ~5–7 events per message, a
saturated one hundreds. One message, not one per kind: a charger's events stay in the order they were
reported.

Ingest reads events through the shared subscription `$share/chargeops-ingest/{root}/v2/events/#` on a
persistent session (client id `{root}-ingest-{node_id}`), so several ingest processes split the load and
events wait in the broker while ingest is down; the ops engine does the same as group `ops`.
A message is acknowledged (PUBACK) only after the handler returned, i.e. after the database commit; a
failing handler is retried with back-off and nothing is acked.

Commands: `request` publishes `{type: command, request_id, action, payload, timeout, reply_to, expires_at}`
to the charger's command topic. The holding gateway acks at once (`accepted`), runs its executor and
publishes the `CommandReply`. No ack within `ack_timeout` means no gateway holds the charger
(`not_connected`); no reply within the call timeout plus `reply_margin` is a `timeout`.

Exactly one executor per command, even while a charger moves between gateway processes: on `hold`, a
gateway subscribes and then publishes a retained hold notice `{type: hold, holder, at}` on the command
topic. A gateway executes a charger's commands only while the newest notice it has seen, ordered by
`(at, holder)`, is its own; it unsubscribes when it sees a newer notice of another gateway. The broker
delivers the messages of one topic to every subscriber in the same order, so a command is executed by the
old holder (it came before the new notice) or the new one (after), never both.

`publish` returns once the broker acknowledged every event (PUBACK) or, in a gateway process while the broker
is away, once the events are fsync'ed to the gateway's spool (`telemetry/spool.py`), which a replay task
sends to the broker, oldest first, after reconnecting; until the spool is empty new events queue behind it.
A full spool makes `publish` raise `SpoolFull` (a `ConnectionError`): the charger is answered `InternalError`
and retries later.

Ingest keeps several batches in its handler at once (the handler group-commits them) and acks each batch,
in arrival order, once it and every batch before it are stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Iterable, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiomqtt
import orjson

from chargeops.events import Event
from chargeops.settings import Settings
from telemetry.bus import CommandExecutor, CommandReply, EventHandler
from telemetry.metrics import BUS_ERRORS, EVENTS_PUBLISHED
from telemetry.mqtt.client import (
    Broker,
    Connection,
    Inbox,
    Received,
    backoff,
    publish_properties,
    retrieve,
)
from telemetry.spool import Message, Spool, SpoolFull

log = logging.getLogger(__name__)

VERSION = "v2"
WIRE_VERSION = 2  # the batch envelope's "v"
BATCH_MAX_EVENTS = 500  # events per message: a few hundred KiB at most, far below any broker's limit
# Messages per ingest batch. With 20,000 (4 batches in the store, acks in bursts of 20,000) a durable session
# of one-event messages stalled now and then on this machine's Mosquitto 2.0.11: the ingest idle, no errors, a
# few hundred messages never delivered — most likely the broker's inflight-quota bugs fixed in 2.0.13. 5,000
# never did in any run; big messages still fill batches of `max_batch` events.
BATCH_MAX_MESSAGES = 5000
_SUBSCRIBE_CHUNK = 500  # topics per SUBSCRIBE / UNSUBSCRIBE packet
_SEEN_REQUESTS = 10_000  # request ids remembered against QoS 1 redelivery


class _ChargerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every line about a charger carries its id, as a field and as a `cp=` prefix."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        cp = (self.extra or {}).get("charge_point_id", "-")
        kwargs.setdefault("extra", {})["charge_point_id"] = cp
        return f"cp={cp} {msg}", kwargs


def _clog(charger_id: str) -> _ChargerLog:
    return _ChargerLog(log, {"charge_point_id": charger_id})


@dataclass(slots=True)
class _Hold:
    """A charger this process holds. `mine` is this hold's notice key, `best` the newest one seen."""

    executor: CommandExecutor
    mine: tuple[float, str]
    best: tuple[float, str] | None = None
    announced: bool = False
    superseded: bool = False

    @property
    def holding(self) -> bool:
        return self.best == self.mine


@dataclass(slots=True)
class _Pending:
    accepted: asyncio.Future[None]
    reply: asyncio.Future[CommandReply]


def _fail(waiting: Iterable[tuple[Any, asyncio.Future[None]]], exc: BaseException) -> None:
    for _, fut in waiting:
        if not fut.done():
            fut.set_exception(exc)


def encode_batches(events: Sequence[Event]) -> list[tuple[bytes, int]]:
    """Events as bus messages, in the order given, at most BATCH_MAX_EVENTS each: `(payload, events)`."""
    docs = [ev.to_doc() for ev in events]
    chunks = [docs[i : i + BATCH_MAX_EVENTS] for i in range(0, len(docs), BATCH_MAX_EVENTS)]
    return [(orjson.dumps({"v": WIRE_VERSION, "events": chunk}), len(chunk)) for chunk in chunks]


def decode_batch(payload: bytes, topic: str) -> list[Event]:
    """The events of one bus message; what cannot be decoded is logged and left out (a poison message
    must not block a durable session)."""
    try:
        docs = orjson.loads(payload)["events"]
        if not isinstance(docs, list):
            raise TypeError("'events' is not a list")
    except Exception as exc:
        log.error("undecodable message on %s dropped: %s", topic, exc)
        return []
    events: list[Event] = []
    for doc in docs:
        try:
            events.append(Event.from_doc(doc))
        except Exception as exc:
            log.error("undecodable event on %s dropped: %s", topic, exc)
    return events


class MqttBus:
    """`Bus` over MQTT 5: one clean-session connection for publishing, commands, replies and listeners,
    plus one persistent-session connection for the durable (ingest) subscription, each reconnecting with
    back-off."""

    def __init__(
        self,
        settings: Settings,
        *,
        ack_timeout: float = 2.0,
        reply_margin: float = 5.0,
        session_expiry: int = 7 * 86400,
        max_batch: int = 20000,
        batch_wait: float = 0.002,
        ingest_pipeline: int = 4,
        connect_timeout: float = 10.0,
        op_timeout: float = 10.0,
        listener_queue: int = 100_000,
        spool_dir: Path | None = None,
        spool_max_events: int | None = None,
        replay_batch: int = 2000,
        durable_group: str = "ingest",
    ) -> None:
        self._broker = Broker.from_url(settings.mqtt_url)
        root = self._broker.root
        self._base = f"{root}/{VERSION}"
        self.instance_id = uuid.uuid4().hex[:12]
        self._gateway_id = settings.gateway_id
        self._linger = settings.bus_linger_ms / 1000
        self._client_id = f"{root}-{settings.gateway_id}-{self.instance_id}"
        # Each consumer group (ingest, ops) gets every event once per group, split across its processes.
        self._durable_group = durable_group
        self.durable_client_id = f"{root}-{durable_group}-{settings.node_id}"
        self.reply_topic = f"{self._base}/replies/{self.instance_id}"
        self._ack_timeout = ack_timeout
        self._reply_margin = reply_margin
        self._session_expiry = session_expiry
        self._max_batch = max_batch
        self._batch_wait = batch_wait
        self._pipeline = ingest_pipeline
        self._connect_timeout = connect_timeout
        self._op_timeout = op_timeout
        self._listener_queue = listener_queue

        self._conn: Connection | None = None
        self._up = asyncio.Event()
        self._listeners: list[asyncio.Queue[Event]] = []
        self._durable: EventHandler | None = None
        self.durable_ready = asyncio.Event()  # set once the shared subscription is confirmed
        self._held: dict[str, _Hold] = {}
        self._clear: set[str] = set()  # released chargers whose retained notice is ours to delete
        self._subscribed: set[str] = set()
        self._dirty = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outgoing: list[tuple[Sequence[Event], asyncio.Future[None]]] = []  # this loop iteration's

        # The spool belongs to the gateway role (the only publisher of events); settings fields are
        # `spool_dir` / `spool_max_events` (CHARGEOPS_SPOOL_DIR / CHARGEOPS_SPOOL_MAX_EVENTS).
        self._spool_enabled = "gateway" in settings.role_set()
        directory = spool_dir or settings.spool_dir or Path.cwd() / "chargeops-spool"
        name = f"{quote(root, safe='')}-{quote(settings.gateway_id, safe='')}.sqlite3"
        self.spool_path = Path(directory) / name
        self._spool_max = spool_max_events or settings.spool_max_events
        self._replay_batch = replay_batch
        self.spool: Spool | None = None
        self._spool_lock = asyncio.Lock()
        self._running = False  # between start() and close(): a closed bus must not spool (nobody replays)

    # -- topics ---------------------------------------------------------------------------------------

    @property
    def event_topic(self) -> str:
        return f"{self._base}/events/{quote(self._gateway_id, safe='')}"

    def command_topic(self, charger_id: str) -> str:
        return f"{self._base}/commands/{quote(charger_id, safe='')}"

    @property
    def shared_filter(self) -> str:
        return f"$share/chargeops-{self._durable_group}/{self._base}/events/#"

    # -- lifecycle ------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_client(self, identifier: str, clean: bool) -> aiomqtt.Client:
        return self._broker.client(
            identifier, clean=clean, session_expiry=self._session_expiry, timeout=self._op_timeout
        )

    async def start(self) -> None:
        """Connect; raises ConnectionError if the broker cannot be reached within `connect_timeout`.

        A spool a previous gateway process left behind is reopened first, and replayed once connected."""
        self._running = True
        if self._spool_enabled and self.spool_path.exists():
            await self._open_spool()
        main = self._spawn(self._run_main(), "mqtt-bus")
        up = asyncio.ensure_future(self._up.wait())
        await asyncio.wait({main, up}, timeout=self._connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._up.is_set():
            up.cancel()
            await self.close()
            raise ConnectionError(f"MQTT broker {self._broker.host}:{self._broker.port} unreachable")

    async def close(self) -> None:
        self._running = False
        self._flush_outgoing()  # published just now: fails below (its task is cancelled), like the rest
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.spool is not None:
            await self.spool.close()
            self.spool = None

    async def _run_main(self) -> None:
        delay = 0.2
        while True:
            client = self._new_client(self._client_id, clean=True)
            conn = Connection(client, self._op_timeout)
            try:
                async with client:
                    self._subscribed.clear()
                    for hold in self._held.values():
                        hold.announced = False  # a clean session: notices are published again
                    self._conn = conn
                    await self._sync(conn)
                    self._up.set()
                    log.info(
                        "mqtt bus %s connected to %s:%s",
                        self.instance_id,
                        self._broker.host,
                        self._broker.port,
                    )
                    delay = 0.2
                    syncer = self._spawn(self._sync_forever(conn), "mqtt-bus-sync")
                    try:
                        async for msg in client.messages:
                            self._dispatch(conn, msg)
                    finally:
                        syncer.cancel()
            except (aiomqtt.MqttError, ConnectionError) as exc:
                BUS_ERRORS.labels("connect").inc()
                log.warning("mqtt bus connection lost: %s; reconnecting in %.1f s", exc, delay)
            finally:
                self._up.clear()
                self._conn = None
                conn.lost.set_result(None)
            delay = await backoff(delay)

    # -- events ---------------------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event]) -> None:
        """Returns once the broker acknowledged every event (QoS 1) or, in a gateway, once they are in
        the spool; raises ConnectionError (`SpoolFull` when the spool is full) otherwise.

        What all callers publish within `bus_linger_ms` (0: in one event-loop iteration) goes out
        together, in one message (`encode_batches`)."""
        if not events:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)  # a caller cancelled meanwhile must not leave a loud orphan
        self._outgoing.append((events, fut))
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_later(self._linger, self._flush_outgoing)
        await fut

    def _flush_outgoing(self) -> None:
        taken, self._outgoing = self._outgoing, []
        if taken:
            task = self._spawn(self._send_outgoing(taken), "mqtt-bus-publish")
            task.add_done_callback(lambda _: _fail(taken, ConnectionError("MQTT bus closed")))

    async def _send_outgoing(self, taken: list[tuple[Sequence[Event], asyncio.Future[None]]]) -> None:
        try:
            await self._publish_now([ev for events, _ in taken for ev in events])
        except ConnectionError as exc:
            _fail(taken, exc)
        else:
            for _, fut in taken:
                if not fut.done():
                    fut.set_result(None)

    async def _publish_now(self, events: list[Event]) -> None:
        """`publish` for one gathered batch. While the spool holds anything, new events go behind it, so
        the broker sees a charger's events in the order they were reported (a replayed `connected` must not
        land after a newer one)."""
        items = [(self.event_topic, body, n) for body, n in encode_batches(events)]
        conn = self._conn
        if conn is not None and (self.spool is None or len(self.spool) == 0):
            try:
                await conn.confirm((conn.send(t, body, subscribed=True) for t, body, _ in items))
            except ConnectionError:
                BUS_ERRORS.labels("publish").inc()
                if not (self._spool_enabled and self._running):
                    raise
            else:
                for ev in events:
                    EVENTS_PUBLISHED.labels(ev.kind.value).inc()
                return
        elif not (self._spool_enabled and self._running):
            BUS_ERRORS.labels("publish").inc()
            raise ConnectionError("MQTT broker unavailable")
        spool = self.spool or await self._open_spool()
        if len(spool) == 0:
            log.warning("MQTT broker unavailable: spooling events to %s", self.spool_path)
        try:
            await spool.append(items)
        except SpoolFull:
            BUS_ERRORS.labels("spool_full").inc()
            raise

    async def _open_spool(self) -> Spool:
        """Opened on the first event the broker could not take, or at start if one was left behind."""
        async with self._spool_lock:
            if self.spool is None:
                spool = Spool(self.spool_path, self._spool_max)
                await spool.open()
                if len(spool):
                    log.warning("%d events waiting in the spool %s", len(spool), self.spool_path)
                self.spool = spool
                self._spawn(self._replay(spool), "mqtt-bus-replay")
            return self.spool

    async def _replay(self, spool: Spool) -> None:
        """Sends the spool to the broker, oldest first, a batch at a time; a batch leaves the spool only
        after the broker acknowledged all of it (a crash in between sends it again: ingest is idempotent)."""
        while True:
            conn = self._conn
            if conn is None:
                await self._up.wait()
                continue
            spool.committed.clear()
            rows = await spool.head(self._replay_batch)
            if not rows:
                await spool.committed.wait()
                continue
            messages = self._current([(t, body, n) for _, t, body, n in rows])
            try:
                await conn.confirm((conn.send(t, body, subscribed=True) for t, body, _ in messages))
            except ConnectionError as exc:
                BUS_ERRORS.labels("replay").inc()
                log.warning("replaying the spool failed: %s; retrying after reconnect", exc)
                await asyncio.wait({conn.lost}, timeout=1.0)
                continue
            await spool.remove(rows[-1][0], sum(n for *_, n in rows))
            for _, body, _ in messages:
                for doc in orjson.loads(body)["events"]:
                    EVENTS_PUBLISHED.labels(doc["kind"]).inc()
            if len(spool) == 0:
                log.info("spool drained: every queued event reached the broker")

    def _current(self, messages: list[Message]) -> list[Message]:
        """Spooled messages in this version's format: a spool written by a v1 gateway (one event per
        message, `v1/events/{cp}/{kind}`) is sent as v2 batches, or nothing would ever subscribe to it."""
        out: list[Message] = []
        for topic, body, n in messages:
            if topic.startswith(self._base):
                out.append((topic, body, n))
            else:
                ev = Event.from_doc(orjson.loads(body))
                out += [(self.event_topic, b, k) for b, k in encode_batches([ev])]
        return out

    async def ready(self, timeout: float) -> None:
        """Once a durable subscription exists, wait until the broker confirmed it: before that, events
        published would have no subscriber and be dropped."""
        if self._durable is not None:
            await asyncio.wait_for(self.durable_ready.wait(), timeout)

    def subscribe(self, handler: EventHandler, *, durable: bool = False) -> None:
        if durable:
            if self._durable is not None:
                raise ValueError("MqttBus carries one durable subscriber per process (the ingest role)")
            self._durable = handler
            self._spawn(self._run_durable(handler), "mqtt-bus-ingest")
            return
        q: asyncio.Queue[Event] = asyncio.Queue(self._listener_queue)
        self._listeners.append(q)
        self._spawn(self._pump(q, handler), "mqtt-bus-listener")
        self._dirty.set()

    async def _pump(self, q: asyncio.Queue[Event], handler: EventHandler) -> None:
        while True:
            events = [await q.get()]
            while not q.empty() and len(events) < self._max_batch:
                events.append(q.get_nowait())
            try:
                await handler(events)
            except Exception:
                log.exception("event listener failed on %d events", len(events))

    def _on_event(self, msg: aiomqtt.Message) -> None:
        for ev in decode_batch(msg.payload, str(msg.topic)):  # type: ignore[arg-type]
            for q in self._listeners:
                if q.full():
                    _clog(ev.charger_id).warning(
                        "event listener queue full; dropping a %s event", ev.kind.value
                    )
                    continue
                q.put_nowait(ev)

    async def _run_durable(self, handler: EventHandler) -> None:
        """The ingest side: persistent session, shared subscription, manual acks after the handler."""
        delay = 0.2
        while True:
            client = self._new_client(self.durable_client_id, clean=False)
            inbox = Inbox(client)  # before connecting: a persistent session's backlog comes at once
            try:
                async with client:
                    await client.subscribe(self.shared_filter, qos=1)
                    self.durable_ready.set()
                    log.info(
                        "durable shared subscription %s as %s", self.shared_filter, self.durable_client_id
                    )
                    delay = 0.2
                    await self._consume(inbox, handler)
            except aiomqtt.MqttError as exc:
                BUS_ERRORS.labels("connect").inc()
                log.warning("durable subscription lost: %s; reconnecting in %.1f s", exc, delay)
            finally:
                self.durable_ready.clear()
            delay = await backoff(delay)

    async def _consume(self, inbox: Inbox, handler: EventHandler) -> None:
        """Batches what has arrived and hands up to `ingest_pipeline` batches to the handler at once (it
        group-commits them); acks each batch, in arrival order, once it and all before it are stored.

        One batch at a time capped a session at a few thousand events/s: the broker's window sat idle
        during every commit. Unacked messages of a broken connection are redelivered by the broker on
        reconnect; ingest stores by event id, so a batch that was stored but not acked is not stored twice.
        """
        messages, arrived = inbox.messages, inbox.arrived
        lost = inbox.lost()
        storing: deque[tuple[list[Received], asyncio.Task[None]]] = deque()
        try:
            while True:
                while storing and storing[0][1].done():
                    if unacked := inbox.ack(storing.popleft()[0]):
                        BUS_ERRORS.labels("ack").inc(unacked)  # the connection is going: redelivered
                if lost.done():
                    break  # the connection ended: the broker redelivers what is unacked, ack nothing
                if messages and len(storing) < self._pipeline:
                    if len(messages) < BATCH_MAX_MESSAGES:
                        await asyncio.sleep(self._batch_wait)  # let a burst gather into one commit
                    # at most `max_batch` events and BATCH_MAX_MESSAGES messages; an undecodable message or
                    # event is left out and acked, or it would block the session
                    batch: list[Received] = []
                    events: list[Event] = []
                    while messages and len(events) < self._max_batch and len(batch) < BATCH_MAX_MESSAGES:
                        batch.append(msg := messages.popleft())
                        events += decode_batch(bytes(msg.payload), msg.topic)
                    storing.append((batch, asyncio.ensure_future(self._store(events, handler))))
                    continue
                waits: set[asyncio.Future[Any]] = {lost}
                if storing:
                    waits.add(storing[0][1])
                if len(storing) < self._pipeline:
                    arrived.clear()
                    waits.add(asyncio.ensure_future(arrived.wait()))
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits - {lost, *(task for _, task in storing)}:
                        w.cancel()
        finally:
            for _, task in storing:
                task.cancel()
            await asyncio.gather(*(task for _, task in storing), return_exceptions=True)
        lost.result()  # raises the MqttError that ended the connection
        raise aiomqtt.MqttError("message stream ended")

    async def _store(self, events: list[Event], handler: EventHandler) -> None:
        delay = 0.1
        while events:
            try:
                await handler(events)
                return
            except Exception as exc:
                log.warning("storing %d events failed (%s); retrying in %.1f s", len(events), exc, delay)
                delay = await backoff(delay)

    # -- command topics: which ones this process is subscribed to -------------------------------------

    def hold(self, charger_id: str, executor: CommandExecutor) -> None:
        current = self._held.get(charger_id)
        if current is not None and not current.superseded:
            current.executor = executor  # a takeover inside this process: same hold, new session
            return
        self._held[charger_id] = _Hold(executor, (time.time(), self.instance_id))
        self._clear.discard(charger_id)
        self._dirty.set()

    def release(self, charger_id: str, executor: CommandExecutor) -> None:
        current = self._held.get(charger_id)
        if current is None or current.executor != executor:  # bound methods: equal, not identical
            return
        del self._held[charger_id]
        if current.holding:
            self._clear.add(charger_id)
        self._dirty.set()

    def _wanted(self) -> set[str]:
        topics = {self.reply_topic}
        if self._listeners:
            topics.add(f"{self._base}/events/#")
        topics.update(self.command_topic(cid) for cid, h in self._held.items() if not h.superseded)
        return topics

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
        """Brings the broker's subscriptions in line with what this process holds, in batches, then
        announces new holds and deletes the notices of released ones."""
        self._dirty.clear()
        wanted = self._wanted()
        add = sorted(wanted - self._subscribed)
        drop = sorted(self._subscribed - wanted)
        for i in range(0, len(add), _SUBSCRIBE_CHUNK):
            chunk = add[i : i + _SUBSCRIBE_CHUNK]
            codes = await conn.client.subscribe([(t, 1) for t in chunk])
            for topic, code in zip(chunk, codes, strict=True):
                if getattr(code, "is_failure", False):
                    log.error("subscription to %s refused: %s", topic, code)
                else:
                    self._subscribed.add(topic)
        for i in range(0, len(drop), _SUBSCRIBE_CHUNK):
            chunk = drop[i : i + _SUBSCRIBE_CHUNK]
            await conn.client.unsubscribe(chunk)
            self._subscribed.difference_update(chunk)
        announce = [
            (cid, hold)
            for cid, hold in self._held.items()
            if not hold.announced and not hold.superseded and self.command_topic(cid) in self._subscribed
        ]
        cleared, self._clear = self._clear, set()
        notices = [
            conn.send(
                self.command_topic(cid),
                orjson.dumps({"type": "hold", "holder": hold.mine[1], "at": hold.mine[0]}),
                retain=True,
            )
            for cid, hold in announce
        ]
        notices += [conn.send(self.command_topic(c), b"", retain=True) for c in cleared]
        try:
            await conn.confirm(notices)
        except ConnectionError:
            self._clear |= cleared - self._held.keys()
            raise
        for cid, hold in announce:
            hold.announced = True
            _clog(cid).info("holding command topic as bus %s", self.instance_id)

    # -- commands: the gateway side -------------------------------------------------------------------

    def _dispatch(self, conn: Connection, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        if topic == self.reply_topic:
            self._on_reply(msg.payload)  # type: ignore[arg-type]
        elif topic.startswith(f"{self._base}/commands/"):
            charger_id = unquote(topic.rsplit("/", 1)[1])
            self._on_command(conn, charger_id, msg.payload)  # type: ignore[arg-type]
        elif topic.startswith(f"{self._base}/events/"):
            self._on_event(msg)

    def _on_command(self, conn: Connection, charger_id: str, raw: bytes) -> None:
        hold = self._held.get(charger_id)
        if hold is None or not raw:
            return
        clog = _clog(charger_id)
        try:
            doc = orjson.loads(raw)
            kind = doc["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            clog.error("malformed message on the command topic ignored")
            return
        if kind == "hold":
            key = (float(doc["at"]), str(doc["holder"]))
            if hold.best is None or key > hold.best:
                hold.best = key
            if key > hold.mine and not hold.superseded:
                hold.superseded = True
                self._dirty.set()  # unsubscribe: the newer holder executes from now on
                clog.info("command topic taken over by bus %s", key[1])
            return
        if kind != "command" or not hold.holding:
            return
        request_id = str(doc["request_id"])
        if request_id in self._seen:
            return  # QoS 1 redelivery of a command already run
        self._seen[request_id] = None
        if len(self._seen) > _SEEN_REQUESTS:
            self._seen.popitem(last=False)
        if float(doc.get("expires_at", math.inf)) < time.time():
            clog.warning("command %s arrived after its requester stopped waiting; dropped", request_id)
            return
        self._spawn(self._execute(conn, charger_id, hold.executor, doc), f"mqtt-command-{request_id}")

    async def _execute(self, conn: Connection, charger_id: str, executor: CommandExecutor, doc: Any) -> None:
        clog = _clog(charger_id)
        request_id, action, reply_to = str(doc["request_id"]), str(doc["action"]), str(doc["reply_to"])
        props = publish_properties(CorrelationData=request_id.encode())
        try:
            ack = orjson.dumps({"type": "accepted", "request_id": request_id, "holder": self.instance_id})
            await conn.confirm([conn.send(reply_to, ack, properties=props)])
            clog.info("%s (request %s) accepted", action, request_id)
            try:
                reply = await executor(action, doc["payload"], float(doc["timeout"]))
            except Exception as exc:
                clog.exception("%s (request %s) failed in the gateway", action, request_id)
                reply = CommandReply("error", error_code="InternalError", description=str(exc))
            body = orjson.dumps({"type": "reply", "request_id": request_id, **asdict(reply)})
            conn = self._conn or conn  # the charger may have been slow across a reconnect
            await conn.confirm([conn.send(reply_to, body, properties=props)])
            clog.info("%s (request %s) answered: %s", action, request_id, reply.outcome)
        except ConnectionError as exc:
            clog.warning(
                "%s (request %s): reply lost with the broker connection: %s", action, request_id, exc
            )

    # -- commands: the requesting side ----------------------------------------------------------------

    def _on_reply(self, raw: bytes) -> None:
        try:
            doc = orjson.loads(raw)
            pending = self._pending.get(str(doc["request_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("malformed reply ignored")
            return
        if pending is None:
            return  # a late reply to a request that already gave up
        if not pending.accepted.done():
            pending.accepted.set_result(None)
        if doc.get("type") == "reply" and not pending.reply.done():
            fields = {k: doc[k] for k in ("outcome", "payload", "error_code", "description", "details")}
            pending.reply.set_result(CommandReply(**fields))

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        """Ask whichever gateway holds the charger; `not_connected` if none acks within `ack_timeout`."""
        clog = _clog(charger_id)
        conn = self._conn
        if conn is None:
            return CommandReply("not_connected", description="message bus unavailable")
        loop = asyncio.get_running_loop()
        request_id = uuid.uuid4().hex
        pending = _Pending(loop.create_future(), loop.create_future())
        self._pending[request_id] = pending
        doc = {
            "type": "command",
            "request_id": request_id,
            "action": action,
            "payload": payload,
            "timeout": timeout,
            "reply_to": self.reply_topic,
            "expires_at": time.time() + self._ack_timeout,
        }
        props = publish_properties(
            ResponseTopic=self.reply_topic,
            CorrelationData=request_id.encode(),
            MessageExpiryInterval=max(1, math.ceil(self._ack_timeout)),
        )
        try:
            topic = self.command_topic(charger_id)
            await conn.confirm([conn.send(topic, orjson.dumps(doc), properties=props)])
            try:
                await asyncio.wait_for(asyncio.shield(pending.accepted), self._ack_timeout)
            except TimeoutError:
                clog.info("%s (request %s): no gateway holds the charger", action, request_id)
                return CommandReply("not_connected", description=f"charger {charger_id} is not connected")
            try:
                return await asyncio.wait_for(asyncio.shield(pending.reply), timeout + self._reply_margin)
            except TimeoutError:
                clog.warning("%s (request %s): no reply within %.0f s", action, request_id, timeout)
                return CommandReply("timeout", description=f"no answer within {timeout:g} s")
        except ConnectionError as exc:
            clog.warning("%s (request %s): bus unavailable: %s", action, request_id, exc)
            return CommandReply("not_connected", description="message bus unavailable")
        finally:
            del self._pending[request_id]
