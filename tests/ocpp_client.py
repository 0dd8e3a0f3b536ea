"""A deliberately dumb OCPP-J client for tests: sends exactly the bytes a test asks for, and checks every
answer of the central system against the official schemas with `jsonschema` (an implementation independent
of the gateway's compiled validators), so a message we send that a strict peer would reject fails the test.

`raw_charger` speaks wss:// to a gateway port registered with `serve_wss` (the conformance tests' wss
variant, tests/conftest.py `over_ws_and_wss`), ws:// to any other."""

from __future__ import annotations

import base64
import itertools
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

_WSS: dict[int, ssl.SSLContext] = {}  # gateway port → the client context that trusts its certificate
SCHEMAS = Path(ocpp.__file__).resolve().parent
_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}


@cache
def strict_validator(protocol: str, action: str, response: bool) -> jsonschema.protocols.Validator:
    suffix = "Response" if response else ("" if protocol == "ocpp1.6" else "Request")
    path = SCHEMAS / _DIRS[protocol] / "schemas" / f"{action}{suffix}.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_strictly_valid(protocol: str, action: str, payload: dict[str, Any], *, response: bool) -> None:
    errors = sorted(strict_validator(protocol, action, response).iter_errors(payload), key=str)
    assert not errors, (
        f"{action} {'response' if response else 'request'} breaks the schema: {errors[0].message}"
    )


class RawCharger:
    def __init__(self, ws: ClientConnection, protocol: str):
        self.ws = ws
        self.protocol = protocol
        self._ids: Iterator[int] = itertools.count(1)

    async def call(self, action: str, payload: dict[str, Any], *, check: bool = True) -> list[Any]:
        """Send a CALL, return the answer frame; a CALLRESULT is checked against the response schema."""
        unique_id = f"m{next(self._ids)}"
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        frame = await self.recv()
        assert frame[1] == unique_id, frame
        if check and frame[0] == 3:
            assert_strictly_valid(self.protocol, action, frame[2], response=True)
        return frame

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        frame = await self.call(action, payload)
        assert frame[0] == 3, f"{action} answered {frame}"
        return frame[2]

    async def send_raw(self, data: str | bytes) -> list[Any]:
        await self.ws.send(data)
        return await self.recv()

    async def recv(self) -> list[Any]:
        return json.loads(await self.ws.recv())

    async def boot(self) -> dict[str, Any]:
        if self.protocol == "ocpp1.6":
            return await self.result(
                "BootNotification", {"chargePointVendor": "Test", "chargePointModel": "Raw"}
            )
        return await self.result(
            "BootNotification",
            {"reason": "PowerUp", "chargingStation": {"vendorName": "Test", "model": "Raw"}},
        )


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def serve_wss(port: int, client: ssl.SSLContext) -> None:
    """From now on `raw_charger(port, ...)` connects over TLS with `client`."""
    _WSS[port] = client


def forget_wss() -> None:
    """After a test: its ports may serve plain ws:// in the next one."""
    _WSS.clear()


def charger_url(port: int, charger_id: str) -> str:
    return f"{'wss' if port in _WSS else 'ws'}://127.0.0.1:{port}/ocpp/{charger_id}"


@asynccontextmanager
async def raw_charger(
    port: int, charger_id: str, protocol: str = "ocpp1.6", **kw: Any
) -> AsyncIterator[RawCharger]:
    if port in _WSS:
        kw.setdefault("ssl", _WSS[port])
    async with connect(
        charger_url(port, charger_id),
        subprotocols=[Subprotocol(protocol)],
        compression=None,
        **kw,
    ) as ws:
        yield RawCharger(ws, protocol)
