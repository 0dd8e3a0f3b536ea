"""Conformance of transactions (issue 11): a transaction belongs to one charger and ends once, a 2.0.1 session
without a connector id, signed meter values kept and shown, a seqNo gap answered with GetTransactionStatus
(2.0.1 block E). Every case runs over ws:// and over wss:// (RSA and ECDSA certificates made in the test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.charger_payloads import started_event
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import raw_charger


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


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
        on_evse = {**started_event({"idToken": "X", "type": "NoAuthorization"}, "TX-E"), "evse": {"id": 2}}
        await cp.result("TransactionEvent", on_evse)
        no_evse = started_event({"idToken": "X", "type": "NoAuthorization"}, "TX-N")
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
            {**started_event({"idToken": "X", "type": "NoAuthorization"}, "TX-S"), "meterValue": [begin]},
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
        base = started_event({"idToken": "", "type": "NoAuthorization"}, "TX-GAP")
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
