"""Waiting in tests for something another task or process does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "", interval: float = 0.02
) -> None:
    """Poll `check` (plain or async) every `interval` seconds until it holds; fail the test after
    `timeout` seconds, saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while not await _value(check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:g} s{': ' if what else ''}{what}")
        await asyncio.sleep(interval)


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result
