"""Concurrent single-row database calls of the handshake and boot path merged into one statement.

A reconnect storm makes hundreds of handshakes read their charger's row, and hundreds of boots write one,
at the same moment; one round trip (and, for writes, one commit) each made the database connection the
bottleneck (`python -m bench.handshakes`). A `Coalescer` runs the first call at once; calls made while a
batch is in flight wait for it and go together in the next one. Nothing is cached and nothing is answered
before its own statement has run: a quiet fleet sees one call per statement, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`await coalescer(item)` is `run([item])[0]`, but items of concurrent callers share one `run`.

    `run` gets at most `max_batch` items and returns one result per item, in order; if it raises, every
    caller of that batch gets the exception, unless `alone(exc)` says the error is of an item, not of the
    database (a value out of a column's range): then each item is run again by itself, so one caller's
    bad input fails that caller only."""

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_batch: int = 500,
        alone: Callable[[Exception], bool] = lambda exc: False,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._alone = alone
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._pending:
                batch = [(item, fut) for item, fut in self._pending[: self._max_batch] if not fut.done()]
                del self._pending[: self._max_batch]  # (done already: its caller gave up)
                if not batch:
                    continue
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as exc:
                    if len(batch) > 1 and self._alone(exc):
                        for single in batch:
                            await self._settle([single])
                    else:
                        self._fail(batch, exc)
                    continue
                self._deliver(batch, results)
        finally:
            self._task = None
            # Only if this task itself was cancelled (shutdown): nobody waits forever.
            self._fail(batch + self._pending, ConnectionError("storage call cancelled"))
            self._pending.clear()

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            self._deliver(batch, await self._run([item for item, _ in batch]))
        except Exception as exc:
            self._fail(batch, exc)

    @staticmethod
    def _deliver(batch: list[tuple[T, asyncio.Future[R]]], results: Sequence[R]) -> None:
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)
