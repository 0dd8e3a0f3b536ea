"""The group-committing writer in front of `telemetry.ingest.store_events`.

Concurrent publishers share one commit: what arrives while the commits in flight run goes together into the
next one, so under load one transaction stores the events of hundreds of chargers, and on a quiet fleet a lone
charger's events are committed at once (no waiting for company that is not coming). Up to `max_inflight`
commits run at once, each on its own connection: a slow commit (a WAL flush stalled, a row another batch
holds) no longer holds up every event behind it. Concurrent batches lock the rows they share in one order
(`telemetry.ingest`), and what they write does not depend on which commits first (connector status by
report time, energy forward only); a batch with connects or disconnects waits for the commits before it.
`write` returns only once its events are durable; on shutdown the writer takes no more work and commits
what it was already handed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.events import Connected, Disconnected, Event
from telemetry.ingest import store_events
from telemetry.metrics import DATABASE_ERRORS, INGEST_BATCH_SIZE, INGEST_COMMIT_SECONDS, INGEST_ERRORS

log = logging.getLogger("telemetry.ingest")


class BatchWriter:
    """Group-commits events; `write` returns when its events are durable, or raises if the commit failed.

    `last_seen` is not worth a write per message: it is gathered in memory and each charger's is written
    about once per `touch_interval` seconds, spread over the batches (`_touch_slice`); the offline rule
    counts in tens of minutes.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        max_batch: int = 5000,
        max_wait: float = 0.0,
        touch_interval: float = 30.0,
        touch_chunk: int = 500,
        max_inflight: int = 2,
    ):
        self._sessions = sessions
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._touch_interval = touch_interval
        self._touch_chunk = touch_chunk
        self._slots = asyncio.Semaphore(max_inflight)
        self._pending: deque[tuple[Sequence[Event], asyncio.Future[None]]] = deque()
        self._last_seen: dict[str, datetime] = {}
        self._touched_at = time.monotonic()
        self._touch_budget = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[None]] = set()  # the batches being committed
        self._commits: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-writer")

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Takes no more work, commits what was already handed in (for up to `drain_seconds`), then stops;
        whatever is left fails, so no caller waits forever and nothing unwritten is acknowledged."""
        self._closed = True
        waiting = [fut for _, fut in self._pending] + list(self._inflight)
        if self._task and not self._task.done() and waiting:
            self._wake.set()
            await asyncio.wait(waiting, timeout=drain_seconds)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._commits):
            task.cancel()
        await asyncio.gather(*self._commits, return_exceptions=True)
        for fut in [fut for _, fut in self._pending] + list(self._inflight):
            if not fut.done():
                fut.set_exception(ConnectionError("ingest stopped"))
        self._pending.clear()

    async def write(self, events: Sequence[Event]) -> None:
        if self._closed:
            raise ConnectionError("ingest stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((events, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._max_wait)  # 0: only the publishers of this loop turn join the batch
            self._wake.clear()
            if not self._pending:
                continue
            await self._slots.acquire()  # a commit slot: while none is free, the queue grows into one batch
            batch: list[tuple[Sequence[Event], asyncio.Future[None]]] = []
            count = 0
            while self._pending and count < self._max_batch:
                item = self._pending.popleft()
                batch.append(item)
                count += len(item[0])
            if self._pending:
                self._wake.set()
            if self._commits and any(
                isinstance(ev.body, Connected | Disconnected) for evs, _ in batch for ev in evs
            ):
                # presence is applied in the order the gateway saw it: a takeover's connect must not commit
                # before the connect of the session it replaced
                await asyncio.gather(*self._commits, return_exceptions=True)
            task = asyncio.get_running_loop().create_task(self._commit(batch))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)

    def _touch_slice(self) -> dict[str, datetime]:
        """The last_seen to write with this batch: the chargers seen since their last write, longest waiting
        first, at a pace that writes each about once per `touch_interval` (at most `touch_chunk` a batch).
        All of them at once every interval was 10,000 row updates in a burst of commits every few seconds
        with 10,000 chargers connected: a stall of every call for up to a second (`bench/gateway.py`)."""
        now = time.monotonic()
        waiting = len(self._last_seen)
        self._touch_budget = min(
            waiting, self._touch_budget + waiting * (now - self._touched_at) / self._touch_interval
        )
        self._touched_at = now
        take = min(int(self._touch_budget), self._touch_chunk)
        self._touch_budget -= take
        return {cid: self._last_seen.pop(cid) for cid in list(itertools.islice(self._last_seen, take))}

    async def _commit(self, batch: list[tuple[Sequence[Event], asyncio.Future[None]]]) -> None:
        futures = [fut for _, fut in batch]
        self._inflight.update(futures)
        try:
            events = [ev for evs, _ in batch for ev in evs]
            for ev in events:
                seen = self._last_seen.get(ev.charger_id)
                if seen is None or ev.received_at > seen:
                    self._last_seen[ev.charger_id] = ev.received_at
            touch = self._touch_slice()
            started = time.perf_counter()
            try:
                await store_events(self._sessions, events, touch)
            except Exception as exc:
                INGEST_ERRORS.inc()
                DATABASE_ERRORS.labels("ingest").inc()
                log.error("ingest batch of %d events failed: %s", len(events), exc)
                for k, v in touch.items():
                    self._last_seen.setdefault(k, v)
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(ConnectionError(f"database write failed: {exc}"))
                return
            INGEST_BATCH_SIZE.observe(len(events))
            INGEST_COMMIT_SECONDS.observe(time.perf_counter() - started)
            for fut in futures:
                if not fut.done():
                    fut.set_result(None)
        finally:
            self._inflight.difference_update(futures)
            self._slots.release()
