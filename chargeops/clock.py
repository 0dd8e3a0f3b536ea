"""The one clock ops decides by: tickets, stock movements, demand windows, supply review, warnings.

Ops code never reads the wall clock itself; it calls `clock.now()`. A replay (the supply back-test,
`chargeops ops backtest`) or a test installs another clock with `use(...)` and the very same code runs on
simulated or recorded time. The clock lives in a context variable, so an asyncio task started inside
`use(...)` keeps it, and a replay never leaks its time into a server running in the same process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (replays and tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a ManualClock needs an aware datetime (UTC)")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at

    def advance(self, delta: timedelta) -> None:
        self._now += delta


SYSTEM = SystemClock()
_current: ContextVar[Clock | None] = ContextVar("chargeops_clock", default=None)


def now() -> datetime:
    """The current time of the clock in force (UTC, aware)."""
    return (_current.get() or SYSTEM).now()


@contextmanager
def use(clock: Clock) -> Iterator[Clock]:
    """Runs the block (and the tasks it starts) on `clock`."""
    token = _current.set(clock)
    try:
        yield clock
    finally:
        _current.reset(token)
