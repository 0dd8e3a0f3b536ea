"""A durable shared subscription whose messages are acked only once stored: ingest and ops (events) and
site telemetry (reports) read the broker through it.

A persistent session (clean start off) keeps what arrives while the consumer is away, and a shared
subscription (`$share/{group}/...`) splits the load among the group's processes. A message is acknowledged
(PUBACK) only after the store returned, i.e. after the database commit; a failing store is retried with
back-off and nothing is acked meanwhile. If the connection or the process dies, the broker redelivers what
is unacked: stores must be idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiomqtt

from telemetry.metrics import BUS_ERRORS
from telemetry.mqtt.client import Broker, Inbox, Received, backoff

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Batching:
    """How messages are cut into batches for the store."""

    max_items: int  # decoded items per batch (a message is not split: the last one may overshoot)
    max_messages: int  # messages per batch
    wait: float  # s to let a burst gather while fewer than `max_messages` wait
    pipeline: int  # batches with the store at once


ONE_BY_ONE = Batching(max_items=1, max_messages=1, wait=0.0, pipeline=1)


class DurableConsumer(Generic[T]):
    """Runs the subscription until cancelled, reconnecting with back-off (0.2 s doubling up to 10 s).

    `decode(payload, topic)` turns a message into items (none for a message that must be dropped: it is
    acked, or it would block the session); `store(items)` gets a batch and must be idempotent. `ready` is
    set while the broker has confirmed the subscription."""

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        filters: Sequence[str],
        decode: Callable[[bytes, str], list[T]],
        store: Callable[[list[T]], Awaitable[None]],
        batching: Batching,
        *,
        session_expiry: int,
        op_timeout: float,
        name: str,
        error_label: str = "connect",
        ready: asyncio.Event | None = None,
    ) -> None:
        self._broker = broker
        self.client_id = client_id
        self.filters = list(filters)
        self._decode = decode
        self._store = store
        self._batching = batching
        self._session_expiry = session_expiry
        self._op_timeout = op_timeout
        self._name = name  # in log lines
        self._error_label = error_label  # chargeops_bus_errors_total{operation} when the connection ends
        self.ready = ready if ready is not None else asyncio.Event()

    async def run(self) -> None:
        delay = 0.2
        while True:
            client = self._broker.client(
                self.client_id, clean=False, session_expiry=self._session_expiry, timeout=self._op_timeout
            )
            inbox = Inbox(client)  # before connecting: a persistent session's backlog comes at once
            try:
                async with client:
                    await client.subscribe([(f, 1) for f in self.filters])
                    self.ready.set()
                    log.info(
                        "%s: durable shared subscription %s as %s",
                        self._name,
                        ", ".join(self.filters),
                        self.client_id,
                    )
                    delay = 0.2
                    await self._consume(inbox)
            except aiomqtt.MqttError as exc:
                BUS_ERRORS.labels(self._error_label).inc()
                why, _ = self._broker.diagnose(exc)
                log.warning(
                    "%s: durable subscription lost: %s; reconnecting in %.1f s", self._name, why, delay
                )
            finally:
                self.ready.clear()
            delay = await backoff(delay)

    async def _consume(self, inbox: Inbox) -> None:
        """Cuts what has arrived into batches, hands up to `pipeline` of them to the store at once (ingest
        group-commits them) and acks each, in arrival order, once it and all before it are stored.

        One batch at a time capped a session at a few thousand events/s: the broker's window sat idle
        during every commit."""
        messages, arrived = inbox.messages, inbox.arrived
        lost = inbox.lost()
        batching, decode = self._batching, self._decode
        storing: deque[tuple[list[Received], asyncio.Task[None]]] = deque()
        try:
            while True:
                while storing and storing[0][1].done():
                    if unacked := inbox.ack(storing.popleft()[0]):
                        BUS_ERRORS.labels("ack").inc(unacked)  # the connection is going: redelivered
                if lost.done():
                    break  # the connection ended: the broker redelivers what is unacked, ack nothing
                if messages and len(storing) < batching.pipeline:
                    if len(messages) < batching.max_messages:
                        await asyncio.sleep(batching.wait)  # let a burst gather into one commit
                    batch: list[Received] = []
                    items: list[T] = []
                    while messages and len(items) < batching.max_items and len(batch) < batching.max_messages:
                        batch.append(msg := messages.popleft())
                        items += decode(bytes(msg.payload), msg.topic)
                    storing.append((batch, asyncio.ensure_future(self._stored(items))))
                    continue
                waits: set[asyncio.Future[Any]] = {lost}
                if storing:
                    waits.add(storing[0][1])
                if len(storing) < batching.pipeline:
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

    async def _stored(self, items: list[T]) -> None:
        delay = 0.1
        while items:
            try:
                await self._store(items)
                return
            except Exception as exc:
                log.warning(
                    "%s: storing %d items failed (%s); retrying in %.1f s", self._name, len(items), exc, delay
                )
                delay = await backoff(delay)
