"""Block E cases of the independent OCTT port (issue 11, tzi-OCTT) that exist there only as a sequence
diagram (no runnable file): TC_E_04, 07, 15, 26, 30, 31, 39, written from the diagram and the use case it
names (OCPP 2.0.1 E03, E06, E10, E14). A real 2.0.1 station over wss:// and ws:// against a whole chargeops;
what the CSMS stored is read through the operator API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.runtime import Runtime
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger
from tests.octt_support import connector, now, operator, runtime_with_token, stored_transaction, tx_event

TOKEN = {"idToken": "OCTT-ED-TOKEN", "type": "ISO14443"}


@pytest.fixture(params=["ws", "wss"])
def start_runtime(request: pytest.FixtureRequest, start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    return over_ws_and_wss(start_runtime, request.param, pki)


async def _runtime(start_runtime: StartRuntime) -> Runtime:
    return await runtime_with_token(start_runtime, TOKEN)


async def _authorized(cp: RawCharger, tx: str) -> None:
    """Boot, Available, and the OCTT's reusable state Authorized: Authorize, then Started (Authorized)."""
    assert (await cp.boot())["status"] == "Accepted"
    await connector(cp, "Available")
    assert (await cp.result("Authorize", {"idToken": TOKEN}))["idTokenInfo"]["status"] == "Accepted"
    started = await cp.result("TransactionEvent", tx_event("Started", "Authorized", 0, tx, id_token=TOKEN))
    assert started["idTokenInfo"]["status"] == "Accepted"


async def _energy_transfer_started(cp: RawCharger, tx: str) -> None:
    """Authorized, then EnergyTransferStarted: Occupied, CablePluggedIn EVConnected, Charging (seqNo 1, 2)."""
    await _authorized(cp, tx)
    await connector(cp, "Occupied")
    plugged = tx_event("Updated", "CablePluggedIn", 1, tx, chargingState="EVConnected")
    assert await cp.result("TransactionEvent", plugged) == {}
    charging = tx_event("Updated", "ChargingStateChanged", 2, tx, chargingState="Charging")
    assert await cp.result("TransactionEvent", charging) == {}


async def test_tc_e_04_local_start_authorization_first(start_runtime: StartRuntime) -> None:
    """E03.FR.02: Authorize, Started on Authorized, then the cable and Charging: every message answered,
    the session stored as running with the token, on EVSE 1 / connector 1, without seqNo gaps."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED04", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _energy_transfer_started(cp, "ED04-TX")
    row = await stored_transaction(runtime, "OCTT-ED04", "ED04-TX", id_token=TOKEN["idToken"])
    assert row["active"] is True and (row["evse_id"], row["connector_id"]) == (1, 1)
    assert row["stopped_at"] is None and row["missing_seq_nos"] == []


async def test_tc_e_07_power_path_closed_local_stop(start_runtime: StartRuntime) -> None:
    """E06.FR.06 (TxStopPoint PowerPathClosed): from EnergyTransferStarted, Ended with StopAuthorized and
    stoppedReason Local, no idToken: answered with no idTokenInfo, the session stored as ended Local."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED07", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _energy_transfer_started(cp, "ED07-TX")
        ended = tx_event("Ended", "StopAuthorized", 3, "ED07-TX", stoppedReason="Local")
        assert await cp.result("TransactionEvent", ended) == {}
    row = await stored_transaction(runtime, "OCTT-ED07", "ED07-TX", active=False)
    assert row["stop_reason"] == "Local" and row["stopped_at"] is not None


async def test_tc_e_15_stop_authorized_local(start_runtime: StartRuntime) -> None:
    """E06.FR.03 (TxStopPoint Authorized): the driver presents the card again; Ended, StopAuthorized, Local,
    with the idToken: idTokenInfo Accepted, the session stored as ended Local with its starting token."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED15", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _energy_transfer_started(cp, "ED15-TX")
        ended = tx_event("Ended", "StopAuthorized", 3, "ED15-TX", stoppedReason="Local", id_token=TOKEN)
        assert (await cp.result("TransactionEvent", ended))["idTokenInfo"]["status"] == "Accepted"
    row = await stored_transaction(runtime, "OCTT-ED15", "ED15-TX", active=False)
    assert row["stop_reason"] == "Local" and row["id_token"] == TOKEN["idToken"]


async def test_tc_e_26_cable_unplugged_at_the_ev_suspends_and_the_transaction_resumes(
    start_runtime: StartRuntime,
) -> None:
    """E10.FR.01 (TxStopPoint not EVConnected): from EnergyTransferSuspended, EVCommunicationLost with
    chargingState Idle and the connector Available is no end; the cable back in, Charging again, the same
    transaction goes on: stored as running, nothing missing."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED26", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _energy_transfer_started(cp, "ED26-TX")
        suspended = tx_event("Updated", "ChargingStateChanged", 3, "ED26-TX", chargingState="SuspendedEV")
        assert await cp.result("TransactionEvent", suspended) == {}
        lost = tx_event("Updated", "EVCommunicationLost", 4, "ED26-TX", chargingState="Idle")
        assert await cp.result("TransactionEvent", lost) == {}
        await connector(cp, "Available")
        await stored_transaction(runtime, "OCTT-ED26", "ED26-TX", active=True)
        plugged = tx_event("Updated", "CablePluggedIn", 5, "ED26-TX", chargingState="EVConnected")
        assert await cp.result("TransactionEvent", plugged) == {}
        charging = tx_event("Updated", "ChargingStateChanged", 6, "ED26-TX", chargingState="Charging")
        assert await cp.result("TransactionEvent", charging) == {}
    row = await stored_transaction(runtime, "OCTT-ED26", "ED26-TX")
    assert row["active"] is True and row["stopped_at"] is None and row["stop_reason"] is None
    assert row["missing_seq_nos"] == []


async def test_tc_e_30_transaction_status_ongoing_without_queued_messages(
    start_runtime: StartRuntime,
) -> None:
    """E14.FR.02 / FR.05: the operator asks GetTransactionStatus for the running transaction; the request
    carries its id, and the station's ongoingIndicator true, messagesInQueue false reach the operator."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED30", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _energy_transfer_started(cp, "ED30-TX")
        reply = {"ongoingIndicator": True, "messagesInQueue": False}
        r, (sent,) = await operator(
            runtime, cp, "POST", "/api/chargers/OCTT-ED30/ocpp/GetTransactionStatus",
            [("GetTransactionStatus", reply)], json={"transactionId": "ED30-TX"},
        )  # fmt: skip
    assert sent == {"transactionId": "ED30-TX"}
    assert r.status_code == 200 and r.json()["response"] == reply, r.text


async def test_tc_e_31_transaction_status_ended_with_queued_messages(start_runtime: StartRuntime) -> None:
    """E14.FR.03 / FR.04: the station loses its connection while charging, the EV leaves; back online it
    sends Available and the queued Ended first (offline, seqNo skipping the two still queued). The gap
    makes the CSMS ask GetTransactionStatus for the transaction by itself; the station answers ended,
    messages queued, and delivers them: the session ends EVDisconnected, no seqNo missing."""
    runtime = await _runtime(start_runtime)
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "OCTT-ED31", "ocpp2.0.1") as cp:
        await _energy_transfer_started(cp, "ED31-TX")
    async with raw_charger(port, "OCTT-ED31", "ocpp2.0.1") as cp:
        await cp.result(
            "StatusNotification",
            {"timestamp": now(), "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
        )
        ended = tx_event(
            "Ended", "EVCommunicationLost", 5, "ED31-TX", chargingState="Idle", stoppedReason="EVDisconnected"
        )
        assert await cp.result("TransactionEvent", {**ended, "offline": True}) == {}
        ask = json.loads(await cp.ws.recv())
        assert ask[0] == 2 and ask[2:] == ["GetTransactionStatus", {"transactionId": "ED31-TX"}], ask
        assert_strictly_valid(cp.protocol, "GetTransactionStatus", ask[3], response=False)
        await cp.ws.send(json.dumps([3, ask[1], {"ongoingIndicator": False, "messagesInQueue": True}]))
        row = await stored_transaction(runtime, "OCTT-ED31", "ED31-TX", missing_seq_nos_queued=True)
        assert row["active"] is False and row["stop_reason"] == "EVDisconnected"
        assert row["missing_seq_nos"] != []
        queued = [
            tx_event("Updated", "StopAuthorized", 3, "ED31-TX", id_token=TOKEN),
            tx_event("Updated", "ChargingStateChanged", 4, "ED31-TX", chargingState="EVConnected"),
        ]
        answers = [await cp.result("TransactionEvent", {**e, "offline": True}) for e in queued]
        assert answers[0]["idTokenInfo"]["status"] == "Accepted" and answers[1] == {}
    row = await stored_transaction(runtime, "OCTT-ED31", "ED31-TX", missing_seq_nos=[])
    assert row["active"] is False and row["stop_reason"] == "EVDisconnected"
    assert row["missing_seq_nos_queued"] is None


async def test_tc_e_39_deauthorized_ev_connection_timeout(start_runtime: StartRuntime) -> None:
    """E03.FR.04 / FR.05, E06.FR.04: authorized, but no EV is plugged in within EVConnectionTimeOut; the
    station ends the transaction with EVConnectTimeout / Timeout: answered, stored as ended Timeout."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-ED39", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await _authorized(cp, "ED39-TX")
        ended = tx_event("Ended", "EVConnectTimeout", 1, "ED39-TX", stoppedReason="Timeout")
        assert await cp.result("TransactionEvent", ended) == {}
    row = await stored_transaction(runtime, "OCTT-ED39", "ED39-TX", active=False)
    assert row["stop_reason"] == "Timeout" and row["stopped_at"] is not None
    assert row["missing_seq_nos"] == []
