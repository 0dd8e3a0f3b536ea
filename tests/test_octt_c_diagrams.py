"""Block C cases of the independent OCTT port (issue 11, tzi-OCTT) that exist there only as a sequence
diagram: TC_C_07 (expired idToken) and TC_C_39 / 40 / 43 (authorization by GroupId, OCPP 2.0.1 C09:
C09.FR.02 a common groupIdToken in IdTokenInfo, C09.FR.03 another token of the group may stop the
transaction), written from the diagram and the use case. The tokens are the operator's (`PUT
/api/id-tokens`), the local list the one chargeops sends (`POST /api/chargers/{id}/local-list/sync`); a
real 2.0.1 station over wss:// and ws:// (the port's profile 1) against a whole chargeops process. (TC_C_50
is covered by tests/test_plug_and_charge.py.)"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ops.runtime import Runtime
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger
from tests.octt_support import api, connector, tx_event
from tests.waiting import until

GROUP = "OCTT-GROUP"
FIRST = {"idToken": "OCTT-C-TOKEN1", "type": "ISO14443"}
SECOND = {"idToken": "OCTT-C-TOKEN2", "type": "ISO14443"}
IN_GROUP = {"status": "Accepted", "groupIdToken": {"idToken": GROUP, "type": "Central"}}


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


async def _token(runtime: Runtime, token: dict[str, str], status: str = "Accepted", **extra: Any) -> None:
    async with api(runtime) as client:
        r = await client.put(
            f"/api/id-tokens/{token['idToken']}", json={"type": token["type"], "status": status, **extra}
        )
    assert r.status_code in (200, 201), r.text


async def _group_runtime(start_runtime: StartRuntime, second: str = "Accepted", **settings: Any) -> Runtime:
    """The OCTT's prerequisite: two valid idTokens with the same GroupId configured at the CSMS."""
    runtime = await start_runtime(accept_unknown=True, **settings)
    await _token(runtime, FIRST, group_id=GROUP)
    await _token(runtime, SECOND, second, group_id=GROUP)
    return runtime


def _info(answer: dict[str, Any]) -> dict[str, Any]:
    """idTokenInfo without what a tariff or cache time would add: status and group."""
    info = answer["idTokenInfo"]
    return {k: info[k] for k in ("status", "groupIdToken") if k in info}


def _station_answer(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The station's answer to the local-authorization calls of the CSMS: of its settings only its
    authorization cache told (enabled), list version 0, every SendLocalList and ClearCache accepted."""
    if action == "GetVariables":
        results = []
        for e in payload["getVariableData"]:
            if (e["component"]["name"], e["variable"]["name"]) == ("AuthCacheCtrlr", "Enabled"):
                results.append({**e, "attributeStatus": "Accepted", "attributeValue": "true"})
            else:
                results.append({**e, "attributeStatus": "UnknownVariable"})
        return {"getVariableResult": results}
    if action == "GetLocalListVersion":
        return {"versionNumber": 0}
    assert action in ("SendLocalList", "ClearCache"), action
    return {"status": "Accepted"}


async def _serve(cp: RawCharger, until_done: asyncio.Task[Any] | None = None, last: str = "") -> list[Any]:
    """Answer the CSMS's calls until `until_done` is done, or until one of action `last` has been answered;
    returns the calls as (action, payload)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    while until_done is None or not until_done.done():
        try:
            frame = json.loads(await asyncio.wait_for(cp.ws.recv(), 0.2 if until_done else 10))
        except TimeoutError:
            continue
        assert frame[0] == 2, frame
        action, payload = frame[2], frame[3]
        assert_strictly_valid(cp.protocol, action, payload, response=False)
        await cp.ws.send(json.dumps([3, frame[1], _station_answer(action, payload)]))
        calls.append((action, payload))
        if action == last:
            break
    return calls


async def _local_list(runtime: Runtime, cp: RawCharger, charger_id: str) -> dict[str, dict[str, Any]]:
    """The operator syncs the station's local list; returns its entries' idTokenInfo by token."""
    async with api(runtime) as client:
        sync = asyncio.create_task(client.post(f"/api/chargers/{charger_id}/local-list/sync"))
        calls = await _serve(cp, sync)
        r = await sync
    assert r.status_code == 200 and r.json()["state"] == "in_step", r.text
    (sent,) = [payload for action, payload in calls if action == "SendLocalList"]
    assert sent["updateType"] == "Full"
    return {e["idToken"]["idToken"]: e["idTokenInfo"] for e in sent["localAuthorizationList"]}


async def _energy_transfer(cp: RawCharger, tx: str) -> None:
    """The OCTT's reusable state EnergyTransferStarted after the start: Occupied, EVConnected, Charging."""
    await connector(cp, "Occupied")
    await cp.result(
        "TransactionEvent", tx_event("Updated", "CablePluggedIn", 1, tx, chargingState="EVConnected")
    )
    await cp.result(
        "TransactionEvent", tx_event("Updated", "ChargingStateChanged", 2, tx, chargingState="Charging")
    )


async def _stopped_by_the_second_token(runtime: Runtime, cp: RawCharger, charger_id: str, tx: str) -> None:
    """StopAuthorized by the group's other token (C09.FR.03): Accepted with the group; then the station's
    EVConnectedPostSession and EVDisconnected; the session ends, stored with the token that started it."""
    stop = tx_event("Updated", "StopAuthorized", 3, tx, id_token=SECOND, chargingState="EVConnected")
    assert _info(await cp.result("TransactionEvent", stop)) == IN_GROUP
    await connector(cp, "Available")
    ended = tx_event("Ended", "EVCommunicationLost", 4, tx, chargingState="Idle", stoppedReason="Local")
    assert await cp.result("TransactionEvent", ended) == {}

    async def ended_stored() -> bool:
        async with api(runtime) as client:
            r = await client.get(f"/api/transactions/{charger_id}/{tx}")
        return r.status_code == 200 and r.json()["active"] is False

    await until(ended_stored, what=f"{tx} ended")
    async with api(runtime) as client:
        row = (await client.get(f"/api/transactions/{charger_id}/{tx}")).json()
    assert row["id_token"] == FIRST["idToken"] and row["stop_reason"] == "Local"


async def test_tc_c_07_local_start_expired_id_token(start_runtime: StartRuntime) -> None:
    """C01 (Authorize): a token the operator stored as Expired, and one stored Accepted whose expiry has
    passed, are both answered Expired (the OCTT takes Expired or Invalid), never Accepted; a
    TransactionEvent presenting one is answered the same."""
    runtime = await start_runtime(accept_unknown=True)
    stored_expired = {"idToken": "OCTT-C07-EXPIRED", "type": "ISO14443"}
    past_expiry = {"idToken": "OCTT-C07-PAST", "type": "Central"}
    await _token(runtime, stored_expired, "Expired")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    await _token(runtime, past_expiry, "Accepted", expiry=yesterday, group_id=GROUP)
    async with raw_charger(runtime.gateway.port, "OCTT-C07", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
        for token in (stored_expired, past_expiry):
            answer = await cp.result("Authorize", {"idToken": token})
            assert answer["idTokenInfo"]["status"] == "Expired", answer
            assert "groupIdToken" not in answer["idTokenInfo"]  # an expired card stands for no group
        started = tx_event("Started", "Authorized", 0, "C07-TX", id_token=past_expiry)
        assert (await cp.result("TransactionEvent", started))["idTokenInfo"]["status"] == "Expired"


async def test_tc_c_39_authorization_by_group_id(start_runtime: StartRuntime) -> None:
    """Authorize of the second token: Accepted with the group; the transaction starts with the first token
    (Accepted, same group); in EnergyTransferStarted the second token is authorized again and stops it."""
    runtime = await _group_runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-C39", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
        assert _info(await cp.result("Authorize", {"idToken": SECOND})) == IN_GROUP
        started = tx_event("Started", "Authorized", 0, "C39-TX", id_token=FIRST)
        assert _info(await cp.result("TransactionEvent", started)) == IN_GROUP
        await _energy_transfer(cp, "C39-TX")
        assert _info(await cp.result("Authorize", {"idToken": SECOND})) == IN_GROUP
        await _stopped_by_the_second_token(runtime, cp, "OCTT-C39", "C39-TX")


async def test_tc_c_40_authorization_by_group_id_with_the_local_list(start_runtime: StartRuntime) -> None:
    """Both tokens reach the station's local list with their group; the station authorizes them locally
    (no AuthorizeRequest): the start with the first and the stop with the second are each answered
    Accepted with the group."""
    runtime = await _group_runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-C40", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
        entries = await _local_list(runtime, cp, "OCTT-C40")
        assert _info({"idTokenInfo": entries[FIRST["idToken"]]}) == IN_GROUP
        assert _info({"idTokenInfo": entries[SECOND["idToken"]]}) == IN_GROUP
        started = tx_event("Started", "Authorized", 0, "C40-TX", id_token=FIRST)
        assert _info(await cp.result("TransactionEvent", started)) == IN_GROUP
        await _energy_transfer(cp, "C40-TX")
        await _stopped_by_the_second_token(runtime, cp, "OCTT-C40", "C40-TX")


async def test_tc_c_43_authorization_by_group_id_invalid_in_the_local_list(
    start_runtime: StartRuntime,
) -> None:
    """The station's local list holds the second token as Invalid (sent while it was); the operator has
    since made it valid in the group. The transaction starts locally with the first token; the second,
    Invalid by the list, is asked online: Authorize Accepted with the group (the CSMS answers from its own
    records, not from the list it sent), and it stops the transaction."""
    runtime = await _group_runtime(start_runtime, second="Invalid")
    async with raw_charger(runtime.gateway.port, "OCTT-C43", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
        entries = await _local_list(runtime, cp, "OCTT-C43")
        assert entries[SECOND["idToken"]]["status"] == "Invalid"
        await _token(runtime, SECOND, "Accepted", group_id=GROUP)
        started = tx_event("Started", "Authorized", 0, "C43-TX", id_token=FIRST)
        assert _info(await cp.result("TransactionEvent", started)) == IN_GROUP
        await _energy_transfer(cp, "C43-TX")
        assert _info(await cp.result("Authorize", {"idToken": SECOND})) == IN_GROUP
        await _stopped_by_the_second_token(runtime, cp, "OCTT-C43", "C43-TX")


async def test_tc_c_39_a_transaction_started_by_the_cable_keeps_the_token_that_authorized_it(
    start_runtime: StartRuntime, pg_url: str
) -> None:
    """Step 3 with eventType Updated: the transaction started at EVConnected without a token (E02, cable
    first); TransactionEvent Updated, Authorized, the first token: Accepted with the group, and that token
    becomes the session's (it had none: chargeops kept none until this case). The second token stops it:
    the session's token stays the first. Withdrawn (Blocked), the first token has the cache of the
    station it was used at cleared (C11: ClearCache), as for a token given at the start."""
    runtime = await _group_runtime(start_runtime, database_url=pg_url)  # the store's update on Postgres
    async with raw_charger(runtime.gateway.port, "OCTT-C39U", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Occupied")
        started = tx_event("Started", "CablePluggedIn", 0, "C39U-TX", chargingState="EVConnected")
        assert await cp.result("TransactionEvent", started) == {}
        authorized = tx_event("Updated", "Authorized", 1, "C39U-TX", id_token=FIRST)
        assert _info(await cp.result("TransactionEvent", authorized)) == IN_GROUP
        charging = tx_event("Updated", "ChargingStateChanged", 2, "C39U-TX", chargingState="Charging")
        assert await cp.result("TransactionEvent", charging) == {}
        await _stopped_by_the_second_token(runtime, cp, "OCTT-C39U", "C39U-TX")
        await _token(runtime, FIRST, "Blocked", group_id=GROUP)
        calls = await _serve(cp, last="ClearCache")
    assert [action for action, _ in calls] == ["GetVariables", "ClearCache"]
