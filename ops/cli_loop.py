"""How the long-running commands (`serve`, `simulate`, `demo`) run their coroutine: on uvloop where available,
until done or until SIGINT / SIGTERM, then shut down cleanly. Apart from `ops.cli` for the reason
`ops.cli_options` is."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any


def run(coro: Any) -> None:
    """Run until done or until SIGINT / SIGTERM, then shut down cleanly."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def loop_factory() -> Any:
    """uvloop where available: the gateway spends much of its time in socket I/O."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
