"""What the OCTT-port cases share (tests/test_octt_*.py): the operator's API request that makes the CSMS call
a raw station, each call checked against the official request schema and answered as the case says."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from chargeops.db.models import IdToken
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}


def api(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=20)


async def operator(
    runtime: Runtime,
    cp: RawCharger,
    method: str,
    path: str,
    answers: list[tuple[str, dict[str, Any]]],
    **kw: Any,
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """Send the API request; the station takes each CSMS call (action as `answers` says, in order), checks it
    against the request schema and answers it. Returns the API's answer and the calls' payloads."""
    seen: list[dict[str, Any]] = []
    async with api(runtime) as client:
        sent = asyncio.create_task(client.request(method, path, **kw))
        for action, reply in answers:
            frame = await asyncio.wait_for(cp.recv(), 10)
            assert frame[0] == 2 and frame[2] == action, frame
            assert_strictly_valid(cp.protocol, action, frame[3], response=False)
            seen.append(frame[3])
            await cp.ws.send(json.dumps([3, frame[1], reply]))
        return await sent, seen


def now() -> str:
    return datetime.now(UTC).isoformat()


def tx_event(event: str, trigger: str, seq: int, tx: str, **info: Any) -> dict[str, Any]:
    """A 2.0.1 TransactionEvent on EVSE 1 / connector 1; `id_token` and `remote_start_id` go where they
    belong, every other keyword into transactionInfo (OCPP names)."""
    token = info.pop("id_token", None)
    payload: dict[str, Any] = {
        "eventType": event,
        "timestamp": now(),
        "triggerReason": trigger,
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx, **info},
        "evse": {"id": 1, "connectorId": 1},
    }
    if token is not None:
        payload["idToken"] = token
    return payload


async def connector(cp: RawCharger, status: str) -> None:
    """StatusNotification and the NotifyEvent (AvailabilityState) the OCTT's reusable states send."""
    await cp.result(
        "StatusNotification", {"timestamp": now(), "connectorStatus": status, "evseId": 1, "connectorId": 1}
    )
    event = {
        "eventId": 1,
        "timestamp": now(),
        "trigger": "Delta",
        "actualValue": status,
        "eventNotificationType": "CustomMonitor",
        "component": {"name": "Connector", "instance": "1"},
        "variable": {"name": "AvailabilityState"},
    }
    await cp.result("NotifyEvent", {"generatedAt": now(), "seqNo": 0, "eventData": [event]})


async def runtime_with_token(start_runtime: StartRuntime, token: dict[str, str]) -> Runtime:
    """A whole chargeops admitting any station, with `token` (idToken, type) stored as Accepted."""
    runtime = await start_runtime(accept_unknown=True)
    async with runtime.sessions() as s, s.begin():
        s.add(IdToken(id_token=token["idToken"], type=token["type"], status="Accepted"))
    return runtime


async def stored_transaction(runtime: Runtime, charger_id: str, tx: str, **expected: Any) -> dict[str, Any]:
    """The transaction as the API shows it, once ingest has stored what `expected` says."""
    found: dict[str, Any] = {}

    async def stored() -> bool:
        async with api(runtime) as client:
            r = await client.get(f"/api/transactions/{charger_id}/{tx}")
        if r.status_code != 200:
            return False
        found.clear()
        found.update(r.json())
        return all(found.get(k) == v for k, v in expected.items())

    await until(stored, what=f"{tx} stored with {expected}")
    return found
