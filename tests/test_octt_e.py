"""Block E cases of an independent port of the OCTT's CSMS tests (issue 11, tzi-OCTT) that had never run
against chargeops, written from what the port's station sends and expects (and OCPP 2.0.1 E01 / E06): a
real 2.0.1 station over WebSocket against a whole chargeops process; what the CSMS stored is read through
the operator API."""

from __future__ import annotations

from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.octt_support import connector, runtime_with_token, stored_transaction, tx_event

TOKEN = {"idToken": "OCTT-E-TOKEN", "type": "ISO14443"}


async def _runtime(start_runtime: StartRuntime) -> Runtime:
    return await runtime_with_token(start_runtime, TOKEN)


async def test_tc_e_10_transaction_started_on_local_authorization(start_runtime: StartRuntime) -> None:
    """TxStartPoint Authorized (E01.FR.03): AuthorizeRequest → Accepted, then TransactionEvent Started with
    triggerReason Authorized and the same idToken → idTokenInfo Accepted; the session is stored as started
    with the token."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-E10", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        assert (await cp.result("Authorize", {"idToken": TOKEN}))["idTokenInfo"]["status"] == "Accepted"
        started = await cp.result(
            "TransactionEvent", tx_event("Started", "Authorized", 0, "E10-TX", id_token=TOKEN)
        )
        assert started["idTokenInfo"]["status"] == "Accepted"
    row = await stored_transaction(runtime, "OCTT-E10", "E10-TX", id_token=TOKEN["idToken"])
    assert row["active"] is True and row["evse_id"] == 1 and row["stopped_at"] is None


async def test_tc_e_20_ev_disconnected_at_the_ev_side_ends_the_transaction(
    start_runtime: StartRuntime,
) -> None:
    """Before: Authorized, EnergyTransferStarted (Occupied, CablePluggedIn EVConnected, Charging), then
    EnergyTransferSuspended (SuspendedEV). Main (E06.FR.02, TxStopPoint EVConnected): the connector goes
    Available and TransactionEvent Ended, EVCommunicationLost, chargingState Idle, stoppedReason
    EVDisconnected: every message answered, the session stored as ended for EVDisconnected."""
    runtime = await _runtime(start_runtime)
    async with raw_charger(runtime.gateway.port, "OCTT-E20", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.boot())["status"] == "Accepted"
        await connector(cp, "Available")
        assert (await cp.result("Authorize", {"idToken": TOKEN}))["idTokenInfo"]["status"] == "Accepted"
        started = await cp.result(
            "TransactionEvent", tx_event("Started", "Authorized", 0, "E20-TX", id_token=TOKEN)
        )
        assert started["idTokenInfo"]["status"] == "Accepted"
        await connector(cp, "Occupied")
        steps = [
            ("CablePluggedIn", "EVConnected"),
            ("ChargingStateChanged", "Charging"),
            ("ChargingStateChanged", "SuspendedEV"),
        ]
        for seq, (trigger, state) in enumerate(steps, 1):
            await cp.result(
                "TransactionEvent", tx_event("Updated", trigger, seq, "E20-TX", chargingState=state)
            )
        await connector(cp, "Available")
        ended = tx_event(
            "Ended", "EVCommunicationLost", 4, "E20-TX", chargingState="Idle", stoppedReason="EVDisconnected"
        )
        await cp.result("TransactionEvent", ended)
    row = await stored_transaction(runtime, "OCTT-E20", "E20-TX", active=False)
    assert row["stop_reason"] == "EVDisconnected" and row["stopped_at"] is not None
    assert row["missing_seq_nos"] == []
