"""Background jobs of a role: `Background` runs one task from `start` to `stop`; `Periodic` runs a step every
few seconds, or sooner when woken, and a failing step (the database, mostly) is logged and counted, and the
next pass tries again."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telemetry.metrics import DATABASE_ERRORS

log = logging.getLogger(__name__)


class Background:
    """Subclasses implement `_run`, run from `start` until `stop` cancels it; `name` labels the task."""

    name = "background"
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError


class Periodic(Background):
    """Subclasses implement `step`; `name` labels the task, the log lines and the error metric."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next step now instead of at the end of the interval."""
        self._wake.set()

    async def step(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as exc:
                DATABASE_ERRORS.labels(self.name).inc()
                log.warning("%s failed: %s", self.name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
