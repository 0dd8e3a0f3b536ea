"""The local channel between `serve` and its API process (`ops.api.process`): length-prefixed frames on a
socket pair. The API process asks, `serve` answers: a command for a charger (`request`, through the bus the
gateway holds, as the in-thread API's `LoopBus` does) or `serve`'s own metrics (`metrics`). Requests are
matched to answers by id, so any number are in flight at once. The first frame, from `serve`, is the
pickled start-up document (settings, logging); every other frame is JSON."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson

from chargeops.commands import CommandReply, Commands

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
MAX_FRAME = 256 << 20  # a metrics exposition of a large fleet is a few MB
# Beyond the command's own timeout (which the gateway enforces), how long an answer may take to come back.
_GRACE_SECONDS = 10.0


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The next frame; IncompleteReadError once the other side closed."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ValueError(f"channel frame of {size} bytes")
    return await reader.readexactly(size)


def write_frame(writer: asyncio.StreamWriter, body: bytes) -> None:
    """One write per frame, so frames written by concurrent tasks never interleave."""
    writer.write(_HEADER.pack(len(body)) + body)


class ChannelServer:
    """`serve`'s side: answers the API process's requests with `bus` and `metrics`."""

    def __init__(self, bus: Commands, metrics: Callable[[], bytes]) -> None:
        self._bus = bus
        self._metrics = metrics

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ready: asyncio.Future[None]
    ) -> None:
        """Answer until the API process closes its end; `ready` is set when it says it listens."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    doc = orjson.loads(await read_frame(reader))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if doc.get("op") == "ready":
                    if not ready.done():
                        ready.set_result(None)
                    continue
                task = asyncio.create_task(self._answer(doc, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer(self, doc: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        answer: dict[str, Any] = {"id": doc.get("id")}
        if doc.get("op") == "request":
            try:
                call = (doc["charger_id"], doc["action"], doc["payload"], doc["timeout"])
                reply = await self._bus.request(*call)
            except Exception as exc:  # as the MQTT bus answers a holder's failure
                log.exception("command %s for %s failed", doc.get("action"), doc.get("charger_id"))
                reply = CommandReply("error", error_code="InternalError", description=str(exc))
            answer["reply"] = asdict(reply)
        elif doc.get("op") == "metrics":
            # in a thread, so the switch interval lets the chargers' loop in during a large exposition
            answer["text"] = (await asyncio.to_thread(self._metrics)).decode()
        else:
            answer["error"] = f"unknown op {doc.get('op')!r}"
        if not writer.is_closing():
            write_frame(writer, orjson.dumps(answer))


class ChannelClient:
    """The API process's side: `Commands` for the routes, and `serve`'s metrics for `/metrics`.
    `closed` is set when `serve` went away (the process then stops: it has no gateway to talk to)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                doc = orjson.loads(await read_frame(self._reader))
                waiter = self._pending.pop(doc.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(doc)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            log.warning("the channel to serve closed (%s)", type(exc).__name__)
        finally:
            self.closed.set()
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("serve closed the channel"))
            self._pending.clear()

    def ready(self) -> None:
        write_frame(self._writer, orjson.dumps({"op": "ready"}))

    async def _ask(self, doc: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.closed.is_set():
            raise ConnectionError("serve closed the channel")
        ident = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = waiter
        try:
            write_frame(self._writer, orjson.dumps({**doc, "id": ident}))
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._pending.pop(ident, None)

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        doc = {"op": "request", "charger_id": charger_id, "action": action, "payload": payload}
        try:
            answer = await self._ask({**doc, "timeout": timeout}, timeout + _GRACE_SECONDS)
        except ConnectionError:
            return CommandReply("not_connected", description="the gateway's process is not reachable")
        except TimeoutError:
            return CommandReply("timeout", description=f"no answer within {timeout:g} s")
        return CommandReply(**answer["reply"])

    async def metrics(self) -> bytes:
        """`serve`'s exposition (text format)."""
        answer = await self._ask({"op": "metrics"}, _GRACE_SECONDS)
        text: str = answer["text"]
        return text.encode()

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
