"""How the long-running commands (`serve`, `simulate`, `demo`) run their coroutine: on uvloop where available,
until done or until SIGINT / SIGTERM, then shut down cleanly; and how a server process (`serve`, its API
process) tunes its interpreter. Apart from `ops.cli` for the reason `ops.cli_options` is."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
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


def tune_interpreter() -> None:
    """For a long-lived server process (measured with bench/gateway.py):
    - freeze what start-up allocated and collect the old generation rarely, so tens of thousands of live
      connection objects are not re-scanned in stop-the-world pauses;
    - a short GIL switch interval, so the database driver's thread is not starved by the busy event loop
      (SQLite's executemany takes the GIL per row: at 5 ms per switch a batch stalled for 100s of ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 1000)
    sys.setswitchinterval(0.0005)
