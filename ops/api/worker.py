"""The HTTP listener (operator API and `/metrics`) on its own thread, event loop and database pool.

Measured with `bench/api_load.py`: on the gateway's loop, 20 heavy reads a second (1,000-row pages) raised
the chargers' round-trip p99 from 45 ms to 5.2 s, because the API's query decoding and serialisation ran
between the chargers' frames, and its queries queued on the pool ingest commits through. On a thread of its
own the API can still use CPU, but the interpreter switches threads every 0.5 ms (`tune_interpreter`), so a
long serialisation delays a charger's answer by a switch, not by the whole response; and its own bounded
pool means an API burst waits for API connections only (answered 503 when they stay busy, never 500).

The API reaches the chargers only through the bus's `request`; `LoopBus` hops each call onto the loop that
owns the bus, so the in-process bus stays single-threaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from chargeops.commands import CommandReply
from telemetry.bus import Bus

log = logging.getLogger(__name__)


class LoopBus:
    """The commands side of a bus owned by another event loop, for code running on this thread's loop."""

    def __init__(self, bus: Bus, loop: asyncio.AbstractEventLoop) -> None:
        self._bus = bus
        self._loop = loop

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        call = self._bus.request(charger_id, action, payload, timeout)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, self._loop))


class ApiThread:
    """Runs a uvicorn server for `build_app()` on a daemon thread with its own loop; `engine` (the API's
    pool) is disposed on that loop when the server stops, since its connections belong to it."""

    def __init__(
        self,
        build_app: Callable[[], FastAPI],
        engine: AsyncEngine | None,
        host: str,
        port: int,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        self._build_app = build_app
        self._engine = engine
        self._host = host
        self._port = port
        self._loop_factory = loop_factory
        self._server: uvicorn.Server | None = None
        self._started: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, name="chargeops-api", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> int:
        """Start the thread; returns the bound port once the listener is up (or raises what stopped it)."""
        self._thread.start()
        return await asyncio.wrap_future(self._started)

    async def stop(self) -> None:
        if self._server is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=self._loop_factory) as runner:
            self.loop = runner.get_loop()
            try:
                runner.run(self._serve())
            except BaseException as exc:  # start() reports it; after start-up the log does
                if not self._started.done():
                    self._started.set_exception(exc)
                else:
                    log.error("HTTP server stopped: %s", exc, exc_info=exc)

    async def _serve(self) -> None:
        config = uvicorn.Config(
            self._build_app(),
            host=self._host,
            port=self._port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = server = uvicorn.Server(config)
        task = asyncio.get_running_loop().create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("HTTP server stopped during start-up")
                await asyncio.sleep(0.02)
            self._started.set_result(int(server.servers[0].sockets[0].getsockname()[1]))
            await task
        finally:
            if not task.done():
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await task
            if self._engine is not None:
                await self._engine.dispose()
