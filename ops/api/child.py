"""The API process `serve` starts (`ops.api.process`): `python -m ops.api.child CHANNEL_FD SOCKET_FD
[METRICS_SOCKET_FD]`, all three inherited from `serve`, which keeps the listening sockets open (a restarted
API process takes up the connections that waited meanwhile).

It runs the operator API (and `/metrics`) on its own interpreter, loop and database pool; commands for
chargers and `serve`'s metrics come over the channel (`ops.api.channel`). It stops on SIGTERM (after the
requests in flight, up to `GRACEFUL_SECONDS`) or when `serve` went away; Ctrl-C is for `serve`, which stops
it in its shutdown order. It runs at a lower CPU priority than `serve` (`NICENESS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    ProcessCollector,
    generate_latest,
)

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.logs import setup as setup_logging
from chargeops.settings import Settings
from ops.api import create_app
from ops.api.channel import ChannelClient, read_frame
from ops.api.metrics import add_metrics, merge, metrics_app
from ops.cli_loop import loop_factory, tune_interpreter

GRACEFUL_SECONDS = 10  # `serve` kills the process if it takes longer than this and a margin
# The chargers come first: when the CPUs are short, the scheduler gives `serve` (the gateway, ingest) the
# larger share and the API answers later or sheds load with 503; when they are not, it changes nothing.
NICENESS = 10


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: this process's are set below."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _own_metrics() -> None:
    """This process's registry keeps the API's own series; its CPU and memory are exported as
    `chargeops_api_process_*`, apart from `serve`'s `process_*` (which they would otherwise add to)."""
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        REGISTRY.unregister(collector)
    ProcessCollector(namespace="chargeops_api")


async def _run(channel_fd: int, socket_fds: list[int]) -> None:
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=channel_fd))
    start = pickle.loads(await read_frame(reader))
    settings: Settings = start["settings"]
    setup_logging(start["log_level"], start["log_format"])
    _own_metrics()
    channel = ChannelClient(reader, writer)

    async def render() -> bytes:
        return merge(await channel.metrics(), generate_latest())

    s = settings
    engine = make_engine(s.database_url, pool_size=s.api_db_pool, max_overflow=0, pool_timeout=5)
    apps = [create_app(make_sessionmaker(engine), channel, settings)]
    if s.metrics_port is None:
        add_metrics(apps[0], settings, render)
    else:
        apps.append(metrics_app(settings, render))
    servers = [
        _Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=GRACEFUL_SECONDS,
            )
        )
        for app in apps
    ]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    tasks = [
        loop.create_task(server.serve(sockets=[socket.socket(fileno=fd)]))
        for server, fd in zip(servers, socket_fds, strict=True)
    ]
    watch = loop.create_task(channel.closed.wait())
    watch.add_done_callback(lambda _: stop())
    try:
        while not all(server.started for server in servers):
            for task in tasks:
                if task.done():
                    task.result()
                    raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.02)
        channel.ready()
        tune_interpreter()  # as serve's: the large pages' garbage is collected without rescanning start-up's
        await asyncio.gather(*tasks)
    finally:
        stop()
        watch.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()
        await channel.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICENESS)
    fds = [int(arg) for arg in sys.argv[1:]]
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_run(fds[0], fds[1:]))


if __name__ == "__main__":
    main()
