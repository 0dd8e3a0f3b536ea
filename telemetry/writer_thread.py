"""The group-committing writer on a thread of its own, with its own event loop and connection pool (what
`serve` runs in front of Postgres when the gateway shares its process with ingest).

A commit is several round trips to the database (BEGIN, the rows, connector status, `last_seen`, COMMIT).
On the gateway's loop each answer from Postgres waits until the loop, busy with thousands of connections,
next gets to it, so a 1 ms commit took 50-100 ms at 2,500 calls/s with 10,000 chargers connected and every
call answered after its commit paid for it (`bench/gateway.py`). On its own loop the writer is woken by the
database's answer at once (the interpreter lock changes hands every 0.5 ms, `ops.cli_loop.tune_interpreter`),
and the SQL compilation and row building leave the gateway's loop too.

The caller's side stays cheap: `write` queues its events and wakes the writer's loop once per turn of the
caller's loop, not once per call; the writer settles every future of a commit in one hop back.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.events import Event
from telemetry.writer import BatchWriter, settle_all


class WriterThread:
    """`BatchWriter`'s `start` / `write` / `stop` with the writer on a daemon thread; `database_url` gets a
    pool of its own there (asyncpg connections belong to the loop that opened them)."""

    def __init__(
        self,
        database_url: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        **writer_options: Any,
    ) -> None:
        self._url = database_url
        self._loop_factory = loop_factory
        self._options = writer_options
        self._thread = threading.Thread(target=self._run, name="chargeops-writer", daemon=True)
        self._ready: Future[None] = Future()
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the writer's
        self._caller: asyncio.AbstractEventLoop | None = None
        self._writer: BatchWriter | None = None
        self._queued: deque[tuple[Sequence[Event], asyncio.Future[None]]] = deque()
        self._wake_scheduled = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        self._caller = asyncio.get_running_loop()
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    async def write(self, events: Sequence[Event]) -> None:
        """Returns once `events` are durable; raises if their commit failed or the writer stopped."""
        loop = self._loop
        if loop is None or self._writer is None:
            raise ConnectionError("ingest stopped")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queued.append((events, fut))
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake:
            try:
                loop.call_soon_threadsafe(self._hand_over)
            except RuntimeError:  # the writer's loop has closed
                raise ConnectionError("ingest stopped") from None
        await fut

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """As `BatchWriter.stop`: commits what it was handed (for up to `drain_seconds`), fails the rest."""
        loop, writer = self._loop, self._writer
        if loop is not None and writer is not None and self._done is not None:
            done = self._done
            stopped = asyncio.run_coroutine_threadsafe(writer.stop(drain_seconds), loop)
            await asyncio.wrap_future(stopped)
            loop.call_soon_threadsafe(_finish, done)
        await asyncio.to_thread(self._thread.join)
        with self._lock:
            left, self._queued = list(self._queued), deque()
        for _, fut in left:
            if not fut.done():
                fut.set_exception(ConnectionError("ingest stopped"))

    # -- on the writer's thread --------------------------------------------------------------------------

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            try:
                runner.run(self._serve())
            except BaseException as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
                raise

    async def _serve(self) -> None:
        engine = make_engine(self._url)
        try:
            self._writer = BatchWriter(make_sessionmaker(engine), settle=self._settle, **self._options)
            self._writer.start()
            self._done = asyncio.get_running_loop().create_future()
            self._loop = asyncio.get_running_loop()
            self._ready.set_result(None)
            await self._done
        finally:
            self._loop = None
            await engine.dispose()

    def _hand_over(self) -> None:
        """What the callers queued since the last hand-over, into the writer's own queue."""
        with self._lock:
            items, self._queued = self._queued, deque()
            self._wake_scheduled = False
        assert self._writer is not None
        self._writer.enqueue(items)

    def _settle(self, futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
        """One hop back to the callers' loop for a whole commit's futures."""
        assert self._caller is not None
        try:
            self._caller.call_soon_threadsafe(settle_all, futures, error)
        except RuntimeError:  # the callers' loop has closed: nobody is waiting any more
            pass



def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
