"""Conformance of the charger's Basic-auth password (issue 11): a rotation keeps the old password until the
new one is used, keys outside the rules are refused before anything is sent. Every case runs over ws:// and
over wss:// (RSA and ECDSA certificates made in the test)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import raw_charger


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


async def _answer(cp: Any, status_payload: dict[str, Any]) -> dict[str, Any]:
    """Receive the CSMS's next call on a raw charger and answer it; returns the call's payload."""
    import json

    call = await cp.recv()
    await cp.ws.send(json.dumps([3, call[1], status_payload]))
    return {"action": call[2], **call[3]}


async def test_password_rotation_keeps_the_old_one_until_the_new_one_is_used(
    start_runtime: StartRuntime,
) -> None:
    """POST /api/chargers/{id}/rotate-password (1.6: a generated key, hex-encoded in AuthorizationKey) and a
    relayed 2.0.1 SetVariables BasicAuthPassword: stored once the charger accepts; the old password works
    until the charger connects with the new one, then only the new one does."""
    import binascii

    import httpx
    from websockets.exceptions import InvalidStatus

    from ops.fleet import add_charger
    from tests.ocpp_client import basic

    old = "old-password-0123456789"
    runtime = await start_runtime()
    async with runtime.sessions() as session, session.begin():
        await add_charger(session, "ROT16", password=old)
        await add_charger(session, "ROT201", password=old)
    port = runtime.gateway.port  # type: ignore[union-attr]
    headers = {"Authorization": "Bearer test-admin-token"}
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=20)
    async with api, raw_charger(port, "ROT16", additional_headers=basic("ROT16", old)) as cp:
        await cp.boot()
        rotate = asyncio.create_task(api.post("/api/chargers/ROT16/rotate-password"))
        call = await _answer(cp, {"status": "Accepted"})
        r = await rotate
        assert r.status_code == 200, r.text
        new = r.json()["password"]
        assert 16 <= len(new) <= 20 and call["action"] == "ChangeConfiguration"
        assert call["key"] == "AuthorizationKey" and binascii.unhexlify(call["value"]).decode() == new
        short = await api.post("/api/chargers/ROT16/rotate-password", json={"password": "x" * 30})
        assert short.status_code == 422  # 1.6 keys are 16-20 bytes: refused before anything is sent
    async with raw_charger(port, "ROT16", additional_headers=basic("ROT16", old)) as cp:
        await cp.boot()  # not yet used: the old one still works
    async with raw_charger(port, "ROT16", additional_headers=basic("ROT16", new)) as cp:
        await cp.boot()
    with pytest.raises(InvalidStatus):  # the new one was used: the old one is retired
        async with raw_charger(port, "ROT16", additional_headers=basic("ROT16", old)):
            pass
    # 2.0.1, relayed raw: the same.
    chosen = "relayed-Password-42"
    payload = {
        "setVariableData": [
            {
                "attributeValue": chosen,
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }
        ]
    }
    result = {
        "setVariableResult": [
            {
                "attributeStatus": "Accepted",
                "component": {"name": "SecurityCtrlr"},
                "variable": {"name": "BasicAuthPassword"},
            }
        ]
    }
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=20)
    async with api, raw_charger(port, "ROT201", "ocpp2.0.1", additional_headers=basic("ROT201", old)) as cp:
        await cp.boot()
        relay = asyncio.create_task(api.post("/api/chargers/ROT201/ocpp/SetVariables", json=payload))
        await _answer(cp, result)
        assert (await relay).status_code == 200
    async with raw_charger(port, "ROT201", "ocpp2.0.1", additional_headers=basic("ROT201", chosen)) as cp:
        await cp.boot()


async def test_password_keys_outside_the_rules_are_refused_before_sending(
    start_runtime: StartRuntime,
) -> None:
    """Issue 12: a relayed key of 15 or 41 characters, or non-hex where 1.6 wants hex, is refused with 422
    and never reaches the charger."""
    import httpx

    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    headers = {"Authorization": "Bearer test-admin-token"}

    def pw_var(value: str) -> dict[str, Any]:
        entry = {
            "attributeValue": value,
            "component": {"name": "SecurityCtrlr"},
            "variable": {"name": "BasicAuthPassword"},
        }
        return {"setVariableData": [entry]}

    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=20)
    async with api, raw_charger(port, "KEY16") as c16, raw_charger(port, "KEY201", "ocpp2.0.1") as c201:
        await c16.boot()
        await c201.boot()
        for charger, action, payload in (
            ("KEY16", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "ab" * 15}),
            ("KEY16", "ChangeConfiguration", {"key": "AuthorizationKey", "value": "not-hex-at-all-but-long"}),
            ("KEY201", "SetVariables", pw_var("x" * 15)),
            ("KEY201", "SetVariables", pw_var("x" * 41)),
        ):
            r = await api.post(f"/api/chargers/{charger}/ocpp/{action}", json=payload)
            assert r.status_code == 422 and r.json()["error"] == "invalid_payload", (payload, r.text)
        # nothing was sent: the next thing each charger hears is its own answer
        assert (await c16.call("Heartbeat", {}))[0] == 3 and (await c201.call("Heartbeat", {}))[0] == 3
