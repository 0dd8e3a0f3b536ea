"""What the OCA's certification test cases check of a CSMS and chargeops decides on its own (issue 11): every
id token type looked up, Central included (2.0.1 C01-C05), with its group (groupIdToken, 1.6 parentIdTag);
a token the CSMS itself sent in a remote start Accepted; an operator's admission change reaching the next
BootNotification (B02/B03); requested reboots told apart from boot loops. Every case runs over ws:// and
over wss:// (RSA and ECDSA certificates made in the test)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from chargeops.db.models import IdToken
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import raw_charger


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


async def _tokens(runtime: Any) -> None:
    async with runtime.sessions() as session, session.begin():
        session.add_all(
            [
                IdToken(id_token="APP-OK", status="Accepted", type="Central", group_id="FLEET-7"),
                IdToken(id_token="APP-BLOCKED", status="Blocked", type="Central"),
                IdToken(id_token="CARD-1", status="Accepted", type="ISO14443", group_id="FLEET-7"),
            ]
        )


def _event(token: dict[str, str], tx: str = "TX-C") -> dict[str, Any]:
    return {
        "eventType": "Started",
        "timestamp": "2026-11-25T10:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": tx},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": token,
    }


async def test_tc_c_central_tokens_are_looked_up(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    await _tokens(runtime)
    async with raw_charger(runtime.gateway.port, "TC-C201", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()

        async def info(token: str, kind: str = "Central") -> dict[str, Any]:
            answer = await cp.result("Authorize", {"idToken": {"idToken": token, "type": kind}})
            return answer["idTokenInfo"]

        assert await info("APP-OK") == {
            "status": "Accepted",
            "groupIdToken": {"idToken": "FLEET-7", "type": "Central"},
        }
        assert (await info("APP-BLOCKED"))["status"] == "Blocked"  # a blocked Central token
        assert (await info("NOBODY"))["status"] == "Invalid"  # unknown Central token
        assert (await info("", "NoAuthorization"))["status"] == "Accepted"  # no identity to check
        started = await cp.result("TransactionEvent", _event({"idToken": "APP-BLOCKED", "type": "Central"}))
        assert started["idTokenInfo"]["status"] == "Blocked"


async def test_tc_1_6_parent_id_tag_is_returned(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    await _tokens(runtime)
    async with raw_charger(runtime.gateway.port, "TC-C16") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.result("Authorize", {"idTag": "CARD-1"})
        assert answer["idTagInfo"] == {"status": "Accepted", "parentIdTag": "FLEET-7"}
        assert "parentIdTag" not in (await cp.result("Authorize", {"idTag": "NOBODY"}))["idTagInfo"]


async def test_tc_f_a_remotely_started_token_is_accepted(start_runtime: StartRuntime) -> None:
    """RequestStartTransaction with a token not on the list: the operator chose it, so the station's
    TransactionEvent for it is Accepted; another unknown Central token still is not."""
    runtime = await start_runtime(accept_unknown=True)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "TC-F201", "ocpp2.0.1") as cp:
        await cp.boot()
        session = gateway.sessions["TC-F201"]
        request = {"idToken": {"idToken": "REMOTE-9", "type": "Central"}, "remoteStartId": 3}
        sent = asyncio.create_task(session.execute("RequestStartTransaction", request, timeout=5))
        call = await cp.recv()
        assert call[0] == 2 and call[2] == "RequestStartTransaction"
        await cp.ws.send(f'[3, "{call[1]}", {{"status": "Accepted"}}]')
        assert (await sent).outcome == "result"
        started = await cp.result("TransactionEvent", _event({"idToken": "REMOTE-9", "type": "Central"}))
        assert started["idTokenInfo"]["status"] == "Accepted"
        other = await cp.result("Authorize", {"idToken": {"idToken": "REMOTE-10", "type": "Central"}})
        assert other["idTokenInfo"]["status"] == "Invalid"


async def _set_admission(runtime: Any, charger_id: str, admission: str) -> None:
    from chargeops.db.models import Charger

    async with runtime.sessions() as session, session.begin():
        charger = await session.get(Charger, charger_id)
        assert charger is not None
        charger.admission = admission


async def test_tc_b_02_03_operator_admission_reaches_the_next_boot_on_the_same_connection(
    start_runtime: StartRuntime,
) -> None:
    """Pending → the operator accepts → the next BootNotification on the same connection is Accepted, and
    the station is served; withdrawn → the next one is Rejected and other calls are refused again."""
    runtime = await start_runtime(registration_policy="pending", boot_retry_interval=7)
    for protocol in ("ocpp1.6", "ocpp2.0.1"):
        cid = f"TC-B-{protocol[-3:]}"
        async with raw_charger(runtime.gateway.port, cid, protocol) as cp:  # type: ignore[union-attr]
            assert (await cp.boot())["status"] == "Pending"
            assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"
            await _set_admission(runtime, cid, "accepted")
            assert (await cp.boot())["status"] == "Accepted"
            assert (await cp.call("Heartbeat", {}))[0] == 3
            await _set_admission(runtime, cid, "rejected")
            assert (await cp.boot())["status"] == "Rejected"
            assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"


async def test_a_reset_the_charger_accepts_is_recorded_as_a_requested_reboot(
    start_runtime: StartRuntime,
) -> None:
    """The boot-loop rule excuses requested reboots (tests/test_ops_engine.py); the gateway tells it which:
    a Reset or a TriggerMessage BootNotification the charger accepted, not one it rejected."""
    from sqlalchemy import select

    from chargeops.db.models import StoredEvent
    from tests.waiting import until

    runtime = await start_runtime(accept_unknown=True)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "TC-RESET") as cp:
        await cp.boot()
        session = gateway.sessions["TC-RESET"]
        for action, payload, status in (
            ("Reset", {"type": "Soft"}, "Accepted"),
            ("TriggerMessage", {"requestedMessage": "BootNotification"}, "Rejected"),
            ("TriggerMessage", {"requestedMessage": "BootNotification"}, "Accepted"),
        ):
            sent = asyncio.create_task(session.execute(action, payload, timeout=5))
            call = await cp.recv()
            await cp.ws.send(f'[3, "{call[1]}", {{"status": "{status}"}}]')
            assert (await sent).outcome == "result"

    async def requested() -> list[str]:
        async with runtime.sessions() as s:
            query = select(StoredEvent.data).where(StoredEvent.kind == "reboot_requested")
            return sorted(d["command"] for d in (await s.scalars(query)).all())

    async def two() -> bool:
        return len(await requested()) == 2

    await until(two, what="two requested reboots stored")
    assert await requested() == ["reset", "trigger_boot"]


async def test_a_transaction_belongs_to_one_charger_and_ends_once(start_runtime: StartRuntime) -> None:
    """A 1.6 StopTransaction carrying another charger's transaction id changes nothing (no second row with
    no start); a second, different stop of an ended transaction keeps the first. Both are counted."""
    from prometheus_client import REGISTRY
    from sqlalchemy import select

    from chargeops.db.models import Transaction

    def conflicts(kind: str) -> float:
        return REGISTRY.get_sample_value("chargeops_transaction_conflicts_total", {"kind": kind}) or 0.0

    before = conflicts("foreign_transaction"), conflicts("second_stop")
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    start = {"connectorId": 1, "idTag": "ANY", "meterStart": 1_000, "timestamp": "2026-11-25T10:00:00Z"}

    def stop(tx: int, wh: int, at: str) -> dict[str, Any]:
        return {"transactionId": tx, "meterStop": wh, "timestamp": at, "reason": "Local"}

    async with raw_charger(port, "TX-OWNER") as owner, raw_charger(port, "TX-OTHER") as other:
        await owner.boot()
        await other.boot()
        tx = (await owner.result("StartTransaction", start))["transactionId"]
        assert await other.result("StopTransaction", stop(tx, 9_999, "2026-11-25T10:05:00Z")) == {}
        async with runtime.sessions() as session:
            rows = (await session.scalars(select(Transaction))).all()
        assert [(r.charger_id, r.active) for r in rows] == [("TX-OWNER", True)]
        await owner.result("StopTransaction", stop(tx, 3_000, "2026-11-25T10:30:00Z"))
        await owner.result("StopTransaction", stop(tx, 3_000, "2026-11-25T10:30:00Z"))  # a replay
        await owner.result("StopTransaction", stop(tx, 4_500, "2026-11-25T10:45:00Z"))  # different
    async with runtime.sessions() as session:
        row = (await session.scalars(select(Transaction))).one()
    assert (row.active, row.meter_stop_wh, row.charger_id) == (False, 3_000, "TX-OWNER")
    assert (conflicts("foreign_transaction"), conflicts("second_stop")) == (before[0] + 1, before[1] + 1)


async def test_a_2_0_1_session_without_a_connector_id_is_stored_with_none(
    start_runtime: StartRuntime,
) -> None:
    from sqlalchemy import select

    from chargeops.db.models import Transaction

    runtime = await start_runtime(accept_unknown=True)
    async with raw_charger(runtime.gateway.port, "TX-NOCONN", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        on_evse = {**_event({"idToken": "X", "type": "NoAuthorization"}, "TX-E"), "evse": {"id": 2}}
        await cp.result("TransactionEvent", on_evse)
        no_evse = _event({"idToken": "X", "type": "NoAuthorization"}, "TX-N")
        del no_evse["evse"]
        await cp.result("TransactionEvent", no_evse)
    async with runtime.sessions() as session:
        txs = await session.scalars(select(Transaction))
        rows = {t.transaction_id: (t.evse_id, t.connector_id) for t in txs}
    assert rows == {"TX-E": (2, None), "TX-N": (None, None)}


async def test_signed_meter_values_are_kept_and_shown_on_the_transaction(start_runtime: StartRuntime) -> None:
    """2.0.1 `signedMeterValue` and 1.6 `SignedData` are kept as the meter signed them and come back on
    GET /api/transactions/{charger}/{transaction} (billing disputes need them)."""
    import httpx

    from tests.waiting import until

    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    ocmf = 'OCMF|{"FV":"1.0","RD":[{"RV":2.935,"RU":"kWh"}]}|{"SD":"3045022100ab"}'
    begin = {
        "timestamp": "2026-11-25T10:00:00Z",
        "sampledValue": [
            {
                "value": 2935,
                "context": "Transaction.Begin",
                "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": {"unit": "Wh"},
                "signedMeterValue": {
                    "signedMeterData": ocmf,
                    "signingMethod": "ECDSA-secp256r1-SHA256",
                    "encodingMethod": "OCMF",
                    "publicKey": "3059301306072a8648ce3d0201",
                },
            }
        ],
    }
    async with raw_charger(port, "SIGN201", "ocpp2.0.1") as cp:
        await cp.boot()
        await cp.result(
            "TransactionEvent",
            {**_event({"idToken": "X", "type": "NoAuthorization"}, "TX-S"), "meterValue": [begin]},
        )
    signed16 = {"value": "AP;0;3;ALCV3ABBBISB", "format": "SignedData", "context": "Transaction.End"}
    async with raw_charger(port, "SIGN16") as cp:
        await cp.boot()
        start = {"connectorId": 1, "idTag": "ANY", "meterStart": 0, "timestamp": "2026-11-25T10:00:00Z"}
        tx = (await cp.result("StartTransaction", start))["transactionId"]
        await cp.result(
            "StopTransaction",
            {
                "transactionId": tx, "meterStop": 500, "timestamp": "2026-11-25T10:30:00Z",
                "transactionData": [{"timestamp": "2026-11-25T10:30:00Z", "sampledValue": [signed16]}],
            },
        )  # fmt: skip
    headers = {"Authorization": "Bearer test-admin-token"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers) as api:

        async def signed(charger: str, tx_id: str) -> list[dict[str, Any]]:
            r = await api.get(f"/api/transactions/{charger}/{tx_id}")
            assert r.status_code == 200, r.text
            return r.json()["signed_meter_values"]

        async def both_stored() -> bool:
            return bool(await signed("SIGN201", "TX-S")) and bool(await signed("SIGN16", str(tx)))

        await until(both_stored, what="the signed readings stored")
        [v2] = await signed("SIGN201", "TX-S")
        assert (v2["signed_meter_data"], v2["encoding_method"], v2["value"]) == (ocmf, "OCMF", 2935)
        assert v2["context"] == "Transaction.Begin" and v2["public_key"].startswith("3059")
        [v1] = await signed("SIGN16", str(tx))
        assert (v1["signed_meter_data"], v1["value"], v1["signing_method"]) == (signed16["value"], None, None)
        missing = await api.get("/api/transactions/SIGN16/999999")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


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


async def test_tc_e_seq_no_gap_sends_get_transaction_status(start_runtime: StartRuntime) -> None:
    """OCPP 2.0.1 block E: a TransactionEvent skipping seqNos (0, then 3) flags the transaction (missing 1-2
    on the API) and, once its answer is sent, the CSMS asks GetTransactionStatus; not again for later events
    while the gap is open. The queued events replayed `offline` close it. The Ended event counts too: a
    skip before it opens a new gap, asked about again, and `messagesInQueue: false` leaves it flagged."""
    import json

    import httpx
    from prometheus_client import REGISTRY

    from tests.waiting import until

    def counted() -> tuple[float, float]:
        asks = {"action": "GetTransactionStatus", "direction": "out"}
        return (
            REGISTRY.get_sample_value("chargeops_transaction_seq_gaps_total") or 0.0,
            REGISTRY.get_sample_value("chargeops_ocpp_messages_total", asks) or 0.0,
        )

    def event(kind: str, seq_no: int, **extra: Any) -> dict[str, Any]:
        base = _event({"idToken": "", "type": "NoAuthorization"}, "TX-GAP")
        base.pop("idToken")
        return {**base, "eventType": kind, "seqNo": seq_no, "triggerReason": "MeterValuePeriodic", **extra}

    before = counted()
    runtime = await start_runtime(accept_unknown=True)
    headers = {"Authorization": "Bearer test-admin-token"}
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=headers, timeout=20)

    async def gap() -> tuple[list[dict[str, int]], bool | None]:
        r = await api.get("/api/transactions/TC-E-GAP/TX-GAP")
        assert r.status_code == 200, r.text
        return r.json()["missing_seq_nos"], r.json()["missing_seq_nos_queued"]

    async def asked(queued: bool) -> None:
        call = await cp.recv()
        assert call[0] == 2 and call[2:] == ["GetTransactionStatus", {"transactionId": "TX-GAP"}]
        await cp.ws.send(json.dumps([3, call[1], {"messagesInQueue": queued, "ongoingIndicator": True}]))

    async with api, raw_charger(runtime.gateway.port, "TC-E-GAP", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        await cp.result("TransactionEvent", event("Started", 0, triggerReason="Authorized"))
        assert await cp.result("TransactionEvent", event("Updated", 3)) == {}  # its answer comes first
        await asked(queued=True)
        await until(lambda: _is(gap(), ([{"first": 1, "last": 2}], True)), what="the gap and its answer")
        await cp.result("TransactionEvent", event("Updated", 4))  # next heard: the answer, not a 2nd ask
        await cp.result("TransactionEvent", event("Updated", 1, offline=True))
        assert await gap() == ([{"first": 2, "last": 2}], True)
        await cp.result("TransactionEvent", event("Updated", 2, offline=True))
        assert await gap() == ([], None)
        ended = event("Ended", 6, triggerReason="EVDeparted")
        ended["transactionInfo"]["stoppedReason"] = "EVDisconnected"
        await cp.result("TransactionEvent", ended)
        await asked(queued=False)
        await until(lambda: _is(gap(), ([{"first": 5, "last": 5}], False)), what="seqNo 5 reported lost")
        listed = (await api.get("/api/transactions", params={"charger_id": "TC-E-GAP"})).json()["items"]
        assert [(t["missing_seq_nos"], t["missing_seq_nos_queued"]) for t in listed] == [
            ([{"first": 5, "last": 5}], False)
        ]
        assert (await cp.call("Heartbeat", {}))[0] == 3  # nothing else was asked
    after = counted()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
