"""`serve`'s operator API in a worker process of its own (the default when `serve` runs the API with other
roles): its query decoding and JSON serialisation then hold another interpreter's lock, not the gateway's
(`bench/api_load.py`: in a thread of `serve` 20 heavy reads a second still raised the chargers' p99 ×3.9).

`serve` binds the listening sockets and hands them to the child (`ops.api.child`), with one end of a socket
pair over which the child sends commands for chargers and asks for `serve`'s metrics (`ops.api.channel`).
The bus stays in `serve`, so this works the same with and without a broker. A child that exits is started
again (the sockets stay bound: connections wait in the backlog); `RESTARTS` exits within `RESTART_WINDOW`
seconds fail `serve` loudly instead. Stopping sends SIGTERM and waits for the requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, generate_latest

from chargeops.commands import Commands
from chargeops.logs import JsonFormatter
from chargeops.settings import Settings
from ops.api.channel import ChannelServer, write_frame
from ops.api.child import GRACEFUL_SECONDS
from ops.startup import StartupError

log = logging.getLogger("chargeops")

START_SECONDS = 60.0
RESTARTS = 5
RESTART_WINDOW = 60.0
API_RESTARTS = Counter(
    "chargeops_api_process_restarts_total", "Times the API process exited and was started again"
)


class ApiProcessFailed(StartupError):
    """The API process did not start, or keeps exiting."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket for `host:port` (port 0: any free one), inheritable by the child."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _log_setup() -> tuple[str, str]:
    """The level and format this process logs with, for the child to log the same way."""
    root = logging.getLogger()
    json_format = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return logging.getLevelName(root.level), "json" if json_format else "text"


class ApiProcess:
    """Starts, watches and stops the API process; `on_failure` is told when it keeps exiting."""

    def __init__(
        self, settings: Settings, bus: Commands, on_failure: Callable[[BaseException], None]
    ) -> None:
        self._settings = settings
        self._channel = ChannelServer(bus, generate_latest)
        self._on_failure = on_failure
        self._sockets: list[socket.socket] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._serving: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.pid: int | None = None  # of the API process while it serves

    async def start(self) -> tuple[int, int | None]:
        """Bind, start the child and wait until it listens; returns the HTTP port and the metrics port."""
        s = self._settings
        self._sockets.append(listen(s.http_host, s.http_port))
        if s.metrics_port is not None:
            self._sockets.append(listen(s.http_host, s.metrics_port))
        await self._spawn()
        self._watch = asyncio.create_task(self._restart_on_exit())
        ports = [int(sock.getsockname()[1]) for sock in self._sockets]
        return ports[0], ports[1] if len(ports) > 1 else None

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno(), *(sock.fileno() for sock in self._sockets)]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ops.api.child", *map(str, fds), pass_fds=fds, stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self._proc = proc
        reader, writer = await asyncio.open_connection(sock=ours)
        level, fmt = _log_setup()
        write_frame(writer, pickle.dumps({"settings": self._settings, "log_level": level, "log_format": fmt}))
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._serving = asyncio.create_task(self._channel.serve(reader, writer, ready))
        exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        waits: set[asyncio.Future[None] | asyncio.Future[int]] = {ready, exited}
        await asyncio.wait(waits, timeout=START_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            raise ApiProcessFailed(
                f"the API process did not start (exit code {code}; its log is above): "
                "fix the cause, or keep the API in serve's process with --no-api-process"
            )
        exited.cancel()
        self.pid = proc.pid

    async def _restart_on_exit(self) -> None:
        exits: deque[float] = deque()
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            self.pid = None
            if self._stopping:
                return
            now = time.monotonic()
            exits.append(now)
            while exits and exits[0] < now - RESTART_WINDOW:
                exits.popleft()
            if len(exits) >= RESTARTS:
                self._on_failure(
                    ApiProcessFailed(
                        f"the API process kept exiting ({len(exits)} times in {RESTART_WINDOW:.0f} s, "
                        f"last exit code {code}; its log is above)"
                    )
                )
                return
            log.error("the API process (pid %d) exited with code %s; starting it again", self._proc.pid, code)
            API_RESTARTS.inc()
            await asyncio.sleep(0.5 * len(exits))
            try:
                await self._spawn()
            except ApiProcessFailed:  # it exited: counted on the next turn
                continue
            except Exception as exc:  # e.g. no process can be started: serve cannot go on without its API
                self._on_failure(ApiProcessFailed(f"cannot start the API process again: {exc}"))
                return
            log.warning("the API process is running again (pid %d)", self._proc.pid)

    async def stop(self) -> None:
        """SIGTERM, then wait for the requests in flight (killed after `GRACEFUL_SECONDS` and a margin)."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), GRACEFUL_SECONDS + 3)
            except TimeoutError:
                log.warning("the API process did not stop within %d s; killing it", GRACEFUL_SECONDS + 3)
                proc.kill()
                await proc.wait()
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
        for sock in self._sockets:
            sock.close()
