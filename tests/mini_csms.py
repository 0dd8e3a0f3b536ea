"""A tiny OCPP central system for testing simulated charger firmware (real websockets, no mocks): MiniCSMS
(accepts boots, issues 1.6 transaction ids, records everything, sends CSMS-initiated calls), the `csms`
fixture (a plugin: test modules name it in `pytest_plugins`), HttpSink (serves firmware images, records
uploads) and `make` (a schema-strict simulated charger pointed at it)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from firmware_stubs import SimEnvironment, SimulatedCharger

Payload = dict[str, Any]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class MiniCSMS:
    """Minimal OCPP central system: accepts boots, issues 1.6 transaction ids, records everything."""

    def __init__(self, *, pending_boots: int = 0, interval: int = 300, auth_status: str = "Accepted") -> None:
        self.pending_boots = pending_boots
        self.interval = interval
        self.auth_status = auth_status
        self.accepting = True
        self.received: list[tuple[str, str, Payload, float]] = []  # (cp id, action, payload, loop time)
        self.connections: dict[str, ServerConnection] = {}
        self.connects: dict[str, int] = {}
        self.boots: dict[str, int] = {}
        self.overrides: dict[str, Callable[[str, Payload], Payload]] = {}
        self._pending: dict[str, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self._tx_ids = itertools.count(1)
        self.server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> MiniCSMS:
        self.server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
            compression=None,
            process_request=self._gate,
        )
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ocpp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.accepting:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rsplit("/", 1)[-1]
        self.connections[cp_id] = ws
        self.connects[cp_id] = self.connects.get(cp_id, 0) + 1
        try:
            await self._serve_frames(cp_id, ws)
        except ConnectionClosed:
            pass

    async def _serve_frames(self, cp_id: str, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame[0] == 2:
                _, uid, action, payload = frame
                self.received.append((cp_id, action, payload, loop.time()))
                reply = self._respond(cp_id, action, payload)
                await ws.send(orjson.dumps([3, uid, reply]).decode())
            elif frame[1] in self._pending:
                self._pending.pop(frame[1]).set_result(frame)

    def _respond(self, cp_id: str, action: str, payload: Payload) -> Payload:
        if action in self.overrides:
            return self.overrides[action](cp_id, payload)
        if action == "BootNotification":
            self.boots[cp_id] = self.boots.get(cp_id, 0) + 1
            status = "Pending" if self.boots[cp_id] <= self.pending_boots else "Accepted"
            interval = 1 if status == "Pending" else self.interval
            return {"status": status, "currentTime": now_iso(), "interval": interval}
        if action == "Heartbeat":
            return {"currentTime": now_iso()}
        if action == "Authorize":
            key = "idTagInfo" if "idTag" in payload else "idTokenInfo"
            return {key: {"status": self.auth_status}}
        if action == "StartTransaction":
            return {"transactionId": next(self._tx_ids), "idTagInfo": {"status": self.auth_status}}
        if action == "TransactionEvent" and payload["eventType"] == "Started":
            return {"idTokenInfo": {"status": self.auth_status}}
        if action in ("DataTransfer", "SignCertificate"):
            return {"status": "Accepted"}
        return {}

    async def call(self, cp_id: str, action: str, payload: Payload, timeout: float = 5.0) -> list[Any]:
        """Send a CSMS-initiated CALL and return the full reply frame ([3,...] or [4,...])."""
        uid = f"csms-{next(self._ids)}"
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[uid] = fut
        await self.connections[cp_id].send(orjson.dumps([2, uid, action, payload]).decode())
        return await asyncio.wait_for(fut, timeout)

    def actions(self, cp_id: str) -> list[str]:
        return [a for c, a, _, _ in self.received if c == cp_id]

    def payloads(self, cp_id: str, action: str) -> list[Payload]:
        return [p for c, a, p, _ in self.received if c == cp_id and a == action]


@pytest.fixture
async def csms() -> AsyncIterator[MiniCSMS]:
    async with MiniCSMS() as server:
        yield server


class HttpSink:
    """Tiny HTTP server: serves firmware images on GET and records uploads (POST/PUT bodies)."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str, bytes]] = []
        self.files = {"/fw-2.0.0.bin": b"\x7fFIRMWARE" * 100}
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HttpSink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, path, _ = (await reader.readline()).decode().split(" ", 2)
        lines: list[str] = []
        while (raw := await reader.readline()) not in (b"\r\n", b""):
            lines.append(raw.decode())
        headers = Headers()
        for text in lines:
            key, _, value = text.partition(":")
            headers[key.strip()] = value.strip()
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        if method == "GET" and path in self.files:
            status, content = "200 OK", self.files[path]
        elif method in ("POST", "PUT"):
            self.uploads.append((path, body))
            status, content = "200 OK", b"ok"
        else:
            status, content = "404 Not Found", b"missing"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
        )
        writer.write(content)
        await writer.drain()
        writer.close()


def make(csms: MiniCSMS, cp_id: str, protocol: str = "ocpp1.6", **env: Any) -> SimulatedCharger:
    env.setdefault("strict", True)
    return SimulatedCharger(
        cp_id, csms.url, protocol=protocol, connectors=2, env=SimEnvironment(**env), max_power_w=22_000.0
    )
