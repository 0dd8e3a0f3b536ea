"""A gateway's durable, bounded outbox for events the MQTT broker could not take (SPEC §8).

A charger is answered only once what it reported is durable "or safely queued": when the broker is away,
`MqttBus.publish` appends the events here and returns once the append is fsync'ed, and a replay task sends
them to the broker, oldest first, when it is back. One SQLite file per gateway (WAL, `synchronous=FULL`:
every commit is on disk before `append` returns); SQLite rather than a hand-rolled log file because it
gives atomic appends, crash recovery and delete-from-the-head for free.

Appends that arrive while a commit is running are grouped into the next commit, so a thousand chargers
answered during an outage cost a handful of fsyncs, not a thousand. The file is touched from one worker
thread only: the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " events INTEGER NOT NULL DEFAULT 1)"
)
# A message carries a batch of events; what the spool bounds is events.
Message = tuple[str, bytes, int]  # topic, payload, events in it


class SpoolFull(ConnectionError):
    """The spool holds `max_events` already: the caller must refuse (the charger retries later).

    A `ConnectionError`, so the gateway answers `InternalError` as for any other bus failure."""


class Spool:
    """FIFO of `(topic, payload, events)` messages in one SQLite file, at most `max_events` events in all."""

    def __init__(self, path: Path, max_events: int) -> None:
        self.path = path
        self.max_events = max_events
        self._db: sqlite3.Connection | None = None
        self._count = 0  # rows on disk plus rows being appended: what `max_events` bounds
        self._pending: deque[tuple[list[Message], asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mqtt-spool")
        self._wake = asyncio.Event()
        self.committed = asyncio.Event()  # set after each committed append: wakes the replay task

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        """Create or reopen the file; what a previous process left in it counts and is replayed."""
        self._count = await self._run(self._open)
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever(), name="mqtt-spool")

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # WAL + FULL: the WAL is fsync'ed at every commit
        db.execute(_SCHEMA)
        if "events" not in {row[1] for row in db.execute("PRAGMA table_info(spool)")}:  # a v1 gateway's file
            db.execute("ALTER TABLE spool ADD COLUMN events INTEGER NOT NULL DEFAULT 1")
        self._db = db
        return int(db.execute("SELECT coalesce(sum(events), 0) FROM spool").fetchone()[0])

    async def close(self) -> None:
        """Stop accepting; appends not yet committed fail (their callers answer InternalError)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        while self._pending:
            items, fut = self._pending.popleft()
            self._count -= _events(items)
            if not fut.done():
                fut.set_exception(ConnectionError("spool closed"))
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=False)

    def __len__(self) -> int:
        return self._count

    async def append(self, items: list[Message]) -> None:
        """Returns once the messages are on disk; raises `SpoolFull` at once if they do not fit."""
        if self._flusher is None:
            raise ConnectionError("spool not open")
        events = _events(items)
        if self._count + events > self.max_events:
            raise SpoolFull(f"event spool full ({self._count} of {self.max_events} events)")
        self._count += events
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((items, fut))
        self._wake.set()
        await fut

    async def _flush_forever(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            batch = list(self._pending)
            self._pending.clear()
            rows = [row for items, _ in batch for row in items]
            try:
                await self._run(self._insert, rows)
            except sqlite3.Error as exc:
                for items, fut in batch:
                    self._count -= _events(items)
                    if not fut.done():
                        fut.set_exception(ConnectionError(f"event spool write failed: {exc}"))
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            self.committed.set()

    def _insert(self, rows: list[Message]) -> None:
        assert self._db is not None
        with self._db:  # one transaction, one fsync
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO spool (topic, payload, events) VALUES (?, ?, ?)", rows)

    async def head(self, limit: int) -> list[tuple[int, str, bytes, int]]:
        """The oldest `limit` committed messages as `(id, topic, payload, events)`."""
        return await self._run(self._head, limit)

    def _head(self, limit: int) -> list[tuple[int, str, bytes, int]]:
        assert self._db is not None
        query = "SELECT id, topic, payload, events FROM spool ORDER BY id LIMIT ?"
        return self._db.execute(query, (limit,)).fetchall()

    async def remove(self, upto: int, count: int) -> None:
        """Forget the messages up to id `upto` (`count` events in them): the broker has them now."""
        await self._run(self._remove, upto)
        self._count -= count

    def _remove(self, upto: int) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM spool WHERE id <= ?", (upto,))


def _events(items: list[Message]) -> int:
    return sum(n for _, _, n in items)
