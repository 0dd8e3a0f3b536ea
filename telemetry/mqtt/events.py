"""Events on the bus: batches on the wire, publishing them (with the gateway's spool while the broker is
away, and its replay), and non-durable listeners. Formats and guarantees: docs/bus.md.

Why batches: the per-message cost of MQTT in paho (packet parsing, MQTT 5 properties, PUBACK) was over half
of the ingest's CPU with one event per message, and the broker's work is per message too. One message for
all kinds keeps a charger's events in the order they were reported.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from chargeops.events import Event
from chargeops.settings import Settings
from telemetry.bus import EventHandler
from telemetry.metrics import BUS_ERRORS, EVENTS_PUBLISHED
from telemetry.mqtt.client import Link, Spawn, retrieve
from telemetry.mqtt.topics import Topics
from telemetry.spool import Message, Spool, SpoolFull

log = logging.getLogger(__name__)

WIRE_VERSION = 2  # the batch envelope's "v"
BATCH_MAX_EVENTS = 500  # events per message: a few hundred KiB at most, far below any broker's limit
# Messages per ingest batch. With 20,000 (4 batches in the store, acks in bursts of 20,000) a durable session
# of one-event messages stalled now and then on this machine's Mosquitto 2.0.11: the ingest idle, no errors, a
# few hundred messages never delivered — most likely the broker's inflight-quota bugs fixed in 2.0.13. 5,000
# never did in any run; big messages still fill batches of `max_batch` events.
BATCH_MAX_MESSAGES = 5000


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


def _fail(waiting: Iterable[tuple[Any, asyncio.Future[None]]], exc: BaseException) -> None:
    for _, fut in waiting:
        if not fut.done():
            fut.set_exception(exc)


class Linger:
    """Gathers what every caller publishes within `linger` s (0: one event-loop iteration) into one send:
    at 2,500 events/s a gateway sends ~5–7 events per message, a saturated one hundreds. Each caller gets
    the outcome of the send its events were in."""

    def __init__(self, linger: float, send: Callable[[list[Event]], Awaitable[None]], spawn: Spawn) -> None:
        self._linger = linger
        self._send = send
        self._spawn = spawn
        self._outgoing: list[tuple[Sequence[Event], asyncio.Future[None]]] = []  # gathered so far

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(retrieve)  # a caller cancelled meanwhile must not leave a loud orphan
        self._outgoing.append((events, fut))
        if len(self._outgoing) == 1:
            asyncio.get_running_loop().call_later(self._linger, self.flush)
        await fut

    def flush(self) -> None:
        """Send what was gathered now; on close, its task is cancelled and its callers fail."""
        taken, self._outgoing = self._outgoing, []
        if taken:
            task = self._spawn(self._deliver(taken), "mqtt-bus-publish")
            task.add_done_callback(lambda _: _fail(taken, ConnectionError("MQTT bus closed")))

    async def _deliver(self, taken: list[tuple[Sequence[Event], asyncio.Future[None]]]) -> None:
        try:
            await self._send([ev for events, _ in taken for ev in events])
        except ConnectionError as exc:
            _fail(taken, exc)
        else:
            for _, fut in taken:
                if not fut.done():
                    fut.set_result(None)


class Outbox:
    """Gets events to the broker (PUBACK) or, in a gateway process while the broker is away, into the spool
    (`telemetry/spool.py`), which it replays oldest first once the broker is back. Until the spool is empty
    new events queue behind it; a full spool refuses (`SpoolFull`, a `ConnectionError`)."""

    def __init__(
        self, settings: Settings, topics: Topics, link: Link, spawn: Spawn, replay_batch: int
    ) -> None:
        self._topics = topics
        self._topic = topics.events(settings.gateway_id)
        self._link = link
        self._spawn = spawn
        self._replay_batch = replay_batch
        # The spool belongs to the gateway role, the only publisher of events.
        self._enabled = "gateway" in settings.role_set()
        directory = settings.spool_dir or Path.cwd() / "chargeops-spool"
        name = f"{quote(topics.root, safe='')}-{quote(settings.gateway_id, safe='')}.sqlite3"
        self.spool_path = Path(directory) / name
        self._max_events = settings.spool_max_events
        self.spool: Spool | None = None
        self._lock = asyncio.Lock()
        self.running = (
            False  # between the bus's start and close: a closed bus must not spool (nobody replays)
        )

    async def start(self) -> None:
        """Reopen a spool a previous gateway process left behind: it is replayed once connected."""
        self.running = True
        if self._enabled and self.spool_path.exists():
            await self._open_spool()

    async def close(self) -> None:
        if self.spool is not None:
            await self.spool.close()
            self.spool = None

    async def send(self, events: list[Event]) -> None:
        """One gathered batch. While the spool holds anything, new events go behind it, so the broker sees
        a charger's events in the order they were reported (a replayed `connected` must not land after a
        newer one)."""
        items = [(self._topic, body, n) for body, n in encode_batches(events)]
        conn = self._link.conn
        if conn is not None and (self.spool is None or len(self.spool) == 0):
            try:
                await conn.confirm(conn.send(t, body, subscribed=True) for t, body, _ in items)
            except ConnectionError:
                BUS_ERRORS.labels("publish").inc()
                if not (self._enabled and self.running):
                    raise
            else:
                for ev in events:
                    EVENTS_PUBLISHED.labels(ev.kind.value).inc()
                return
        elif not (self._enabled and self.running):
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
        async with self._lock:
            if self.spool is None:
                spool = Spool(self.spool_path, self._max_events)
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
            conn = self._link.conn
            if conn is None:
                await self._link.up.wait()
                continue
            spool.committed.clear()
            rows = await spool.head(self._replay_batch)
            if not rows:
                await spool.committed.wait()
                continue
            messages = self._current([(t, body, n) for _, t, body, n in rows])
            try:
                await conn.confirm(conn.send(t, body, subscribed=True) for t, body, _ in messages)
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
            if topic.startswith(self._topics.base):
                out.append((topic, body, n))
            else:
                ev = Event.from_doc(orjson.loads(body))
                out += [(self._topic, b, k) for b, k in encode_batches([ev])]
        return out


class Listeners:
    """Non-durable event subscribers (e.g. an ops role beside the API): a bounded queue and a pump task
    each, so a slow one never slows the bus; overflow is dropped with a warning, handler errors logged."""

    def __init__(self, queue_size: int, max_batch: int, spawn: Spawn) -> None:
        self._queue_size = queue_size
        self._max_batch = max_batch
        self._spawn = spawn
        self._queues: list[asyncio.Queue[Event]] = []

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, handler: EventHandler) -> None:
        q: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._queues.append(q)
        self._spawn(self._pump(q, handler), "mqtt-bus-listener")

    def deliver(self, payload: bytes, topic: str) -> None:
        for ev in decode_batch(payload, topic):
            for q in self._queues:
                if q.full():
                    log.warning(
                        "cp=%s event listener queue full; dropping a %s event",
                        ev.charger_id,
                        ev.kind.value,
                        extra={"charge_point_id": ev.charger_id},
                    )
                    continue
                q.put_nowait(ev)

    async def _pump(self, q: asyncio.Queue[Event], handler: EventHandler) -> None:
        while True:
            events = [await q.get()]
            while not q.empty() and len(events) < self._max_batch:
                events.append(q.get_nowait())
            try:
                await handler(events)
            except Exception:
                log.exception("event listener failed on %d events", len(events))
