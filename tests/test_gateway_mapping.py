"""The gateway's payload → neutral mappings (fault, meter, swap, transaction) as pure functions, and the
handlers that use them run against an in-memory store: fast, no database, no socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chargeops.commands import REQUEST_BATTERY_SWAP
from chargeops.events import (
    Authorization,
    BatterySwapped,
    DerAlarm,
    Event,
    FaultReported,
    LogStatus,
    MeterValues,
    Reported,
    Sample,
    SecurityEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)
from ocpp_gateway import v16, v201
from ocpp_gateway.commands import Unsupported, to_ocpp
from ocpp_gateway.meter import energy_wh, meter_events, samples_of
from ocpp_gateway.rpc import validate
from ocpp_gateway.store import TokenStatus
from ocpp_gateway.swaps import SWAP_VENDOR_ID, swap_event, swap_from_data_transfer
from ocpp_gateway.versions import V21, V201
from tests.gateway_memory import MemoryCharger

T = "2026-11-25T10:00:00.000Z"
AT = datetime(2026, 11, 25, 10, tzinfo=UTC)
T2 = "2026-11-25T11:00:00.000Z"


def mv(at: str, *values: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": at, "sampledValue": list(values)}


# -- meter ------------------------------------------------------------------------------------------------


def test_samples_of_both_shapes() -> None:
    v16_shape = mv(T, {"value": "1.5", "unit": "kWh"}, {"value": "7200", "measurand": "Power.Active.Import"})
    v2_shape = mv(T, {"value": 12.5, "unitOfMeasure": {"unit": "kWh", "multiplier": 3}, "phase": "L1"})
    signed = mv(T, {"value": "not-a-number"})
    assert samples_of([v16_shape, v2_shape, signed]) == [
        Sample("Energy.Active.Import.Register", 1.5, "kWh", sampled_at=AT),
        Sample("Power.Active.Import", 7200.0, None, sampled_at=AT),
        Sample("Energy.Active.Import.Register", 12500.0, "kWh", phase="L1", sampled_at=AT),
    ]


def test_energy_register_and_one_event_per_timestamp() -> None:
    values = [
        mv(T, {"value": "1000", "context": "Transaction.Begin"}),
        mv(T2, {"value": "2.5", "unit": "kWh"}, {"value": "9", "phase": "L1"}),
    ]
    samples = samples_of(values)
    assert energy_wh(samples) == 2500.0 and energy_wh(samples, "Transaction.Begin") == 1000.0
    assert energy_wh(samples, "Transaction.End") is None
    events = meter_events(values, 2, 1, "7")
    assert [(e.evse_id, e.connector_id, e.transaction_id, len(e.samples)) for e in events] == [
        (2, 1, "7", 1),
        (2, 1, "7", 2),
    ]


# -- faults -----------------------------------------------------------------------------------------------


def test_16_status_with_an_error_is_also_a_fault() -> None:
    ok = {"connectorId": 2, "errorCode": "NoError", "status": "Available"}
    assert v16.status_events(ok) == [StatusChanged(2, 1, "Available")]
    bad = {**ok, "errorCode": "GroundFailure", "status": "Faulted", "info": "RCD", "vendorErrorCode": "E7"}
    assert v16.status_events(bad) == [
        StatusChanged(2, 1, "Faulted", "GroundFailure", "E7", "RCD"),
        FaultReported(2, 1, "Connector", "GroundFailure", "RCD", "E7"),
    ]
    assert v16.status_events({**ok, "connectorId": 0})[0] == StatusChanged(0, 0, "Available")


def event_data(variable: str, value: str, **extra: Any) -> dict[str, Any]:
    component = {"name": "Connector", "evse": {"id": 1, "connectorId": 2}}
    return {"variable": {"name": variable}, "component": component, "actualValue": value, **extra}


def test_201_notify_event_faults() -> None:
    assert v201.fault_of(event_data("Problem", "true", techCode="X1")) == FaultReported(
        1, 2, "Connector", "Connector.Problem", "true", "X1", cleared=False
    )
    assert v201.fault_of(event_data("Tripped", "false")).cleared  # type: ignore[union-attr]
    assert v201.fault_of(event_data("Temperature", "80", trigger="Alerting")) is not None
    assert v201.fault_of(event_data("Temperature", "80", trigger="Delta")) is None
    p = {"generatedAt": T, "seqNo": 0, "eventData": [event_data("Problem", "true"), event_data("Power", "1")]}
    reported, fault = v201.notify_event_events(p)
    assert reported == Reported("NotifyEvent", p) and isinstance(fault, FaultReported)


# -- swaps ------------------------------------------------------------------------------------------------


def battery(**extra: Any) -> dict[str, Any]:
    return {"evseId": 3, "serialNumber": "PACK-1", "soC": 40.0, "soH": 95.0, **extra}


def swap_payload(*packs: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventType": "BatteryIn",
        "requestId": 5,
        "idToken": {"idToken": "D1", "type": "ISO14443"},
        "batteryData": list(packs),
    }


def test_swap_event_reads_packs_and_vendor_info() -> None:
    documented = battery(vendorInfo=json.dumps({"cycles": 12, "cellTempMax": 31.5}), productionDate=T)
    undocumented = battery(serialNumber="PACK-2", vendorInfo="fw=3.1")
    event = swap_event(swap_payload(documented, undocumented))
    assert event == BatterySwapped(
        "BatteryIn",
        5,
        "D1",
        [
            {"slot": 3, "serial": "PACK-1", "soc": 40.0, "soh": 95.0, "production_date": T, "cycles": 12}
            | {"cell_temp_max": 31.5},
            {"slot": 3, "serial": "PACK-2", "soc": 40.0, "soh": 95.0, "vendor_info": "fw=3.1"},
        ],
    )


def test_swap_by_data_transfer_only_when_it_is_a_valid_21_request() -> None:
    good = swap_payload(battery())
    assert swap_from_data_transfer(json.dumps(good)) == swap_event(good)
    assert swap_from_data_transfer(good) == swap_event(good)
    for bad in ("{not json", "[1, 2]", json.dumps({**good, "batteryData": [{"SoC": 1}]})):
        assert swap_from_data_transfer(bad) is None


def test_swap_request_command() -> None:
    command = {"request_id": 9, "id_token": "FLEET-1"}
    action, payload = to_ocpp(V21, REQUEST_BATTERY_SWAP, command)
    assert (action, payload) == (
        "RequestBatterySwap",
        {"requestId": 9, "idToken": {"idToken": "FLEET-1", "type": "ISO14443"}},
    )
    validate(V21, action, payload, response=False, unique_id="t")
    with pytest.raises(Unsupported):
        to_ocpp(V201, REQUEST_BATTERY_SWAP, command)


# -- transactions -----------------------------------------------------------------------------------------


def test_16_start_and_stop() -> None:
    start = {"connectorId": 2, "idTag": "TAG", "meterStart": 1200, "timestamp": T}
    assert v16.transaction_start(start) == TransactionStarted("", 2, 1, "TAG", AT, 1200.0)
    stop = {"transactionId": 7, "meterStop": 4200, "timestamp": T}
    assert v16.transaction_end(stop) == TransactionEnded("7", AT, 4200.0, "Local")


def tx_event(kind: str, seq_no: int, *values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "eventType": kind,
        "timestamp": T,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-9", **extra.pop("info", {})},
        "evse": {"id": 1, "connectorId": 1},
        **({"meterValue": list(values)} if values else {}),
        **extra,
    }


def test_201_transaction_facts() -> None:
    begin = mv(T, {"value": 1000.0, "context": "Transaction.Begin"}, {"value": 1100.0})
    started = v201.transaction_facts(tx_event("Started", 0, begin, idToken={"idToken": "A", "type": "Local"}))
    assert started.start == TransactionStarted("tx-9", 1, 1, "A", AT, 1000.0)
    assert started.end is None and started.update is None and started.meter_wh == 1100.0
    updated = v201.transaction_facts(tx_event("Updated", 3, info={"chargingState": "Charging"}, offline=True))
    assert updated.update == TransactionUpdated("tx-9", 3, "MeterValuePeriodic", "Charging", True)
    assert updated.start.meter_start_wh is None and updated.meter == []
    end = mv(T, {"value": 5000.0, "context": "Transaction.End"})
    ended = v201.transaction_facts(tx_event("Ended", 4, end, info={"stoppedReason": "EVDisconnected"}))
    assert ended.end == TransactionEnded("tx-9", AT, 5000.0, "EVDisconnected")
    assert [type(m) for m in ended.meter] == [MeterValues]


def test_an_offline_copy_of_an_update_keeps_the_update_s_event_id() -> None:
    """Behind the gateway's note of stored (transaction, seqNo): a copy it has no note of (stored before the
    note existed) is still stored once, by event id. Another seqNo is another event."""

    def event_id(seq_no: int, offline: bool) -> str:
        update = TransactionUpdated("tx-9", seq_no, "MeterValuePeriodic", "Charging", offline)
        return Event("CP", update, reported_at=AT).event_id

    assert event_id(3, True) == event_id(3, False) != event_id(4, True)


# -- handlers against the in-memory store -------------------------------------------------------------------


async def test_16_transaction_handlers() -> None:
    cp = MemoryCharger("ocpp1.6")
    cp.store.tokens["TAG"] = TokenStatus("Accepted")
    start = {"connectorId": 2, "idTag": "TAG", "meterStart": 1200, "timestamp": T}
    answer = await cp.result("StartTransaction", start)
    assert answer == {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}
    assert (await cp.result("StartTransaction", start))["transactionId"] == 1  # a replay: the same id
    assert cp.bodies(TransactionStarted)[0] == TransactionStarted("1", 2, 1, "TAG", AT, 1200.0)
    stop = {
        "transactionId": 1,
        "meterStop": 4200,
        "timestamp": T,
        "transactionData": [mv(T, {"value": "4200"})],
    }
    assert await cp.result("StopTransaction", stop) == {}
    assert [(m.evse_id, m.transaction_id) for m in cp.bodies(MeterValues)] == [(2, "1")]
    assert cp.bodies(TransactionEnded) == [TransactionEnded("1", AT, 4200.0, "Local")]
    assert cp.bodies(Authorization) == [Authorization("TAG", "Accepted")] * 2


async def test_201_update_of_an_unknown_transaction_starts_it() -> None:
    cp = MemoryCharger("ocpp2.0.1")
    assert await cp.result("TransactionEvent", tx_event("Updated", 5, mv(T, {"value": 300.0}))) == {}
    started, updated = cp.bodies(TransactionStarted), cp.bodies(TransactionUpdated)
    assert started == [TransactionStarted("tx-9", 1, 1, None, AT, None)] and updated[0].seq_no == 5
    assert cp.store.transactions[("CP-MEM", "tx-9")].last_seq_no == 5
    assert await cp.result("TransactionEvent", tx_event("Ended", 6, info={"stoppedReason": "Local"})) == {}
    assert len(cp.bodies(TransactionStarted)) == 1 and cp.bodies(TransactionEnded)[0].reason == "Local"


async def test_201_token_authorizing_a_started_transaction_is_kept_once() -> None:
    """E02 / F02: the accepted token of an Updated Authorized or RemoteStart becomes the transaction's if it
    has none; a refused one, a StopAuthorized one, or a later one changes nothing (OCTT TC_C_39 step 3)."""
    cp = MemoryCharger("ocpp2.0.1")
    cp.store.tokens |= {
        "A": TokenStatus("Accepted"),
        "B": TokenStatus("Accepted"),
        "X": TokenStatus("Blocked"),
    }
    tx = lambda: cp.store.transactions[("CP-MEM", "tx-9")]  # noqa: E731
    token = lambda t: {"idToken": t, "type": "ISO14443"}  # noqa: E731
    await cp.result("TransactionEvent", tx_event("Started", 0, triggerReason="CablePluggedIn"))
    answer = await cp.result(
        "TransactionEvent", tx_event("Updated", 1, triggerReason="Authorized", idToken=token("X"))
    )
    assert answer["idTokenInfo"]["status"] == "Blocked" and tx().id_token is None
    stop = tx_event("Updated", 2, triggerReason="StopAuthorized", idToken=token("B"))
    assert (await cp.result("TransactionEvent", stop))["idTokenInfo"]["status"] == "Accepted"
    assert tx().id_token is None
    await cp.result(
        "TransactionEvent", tx_event("Updated", 3, triggerReason="RemoteStart", idToken=token("A"))
    )
    assert tx().id_token == "A"
    await cp.result(
        "TransactionEvent", tx_event("Updated", 4, triggerReason="Authorized", idToken=token("B"))
    )
    assert tx().id_token == "A"


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1", "ocpp2.1"])
async def test_shared_handlers(protocol: str) -> None:
    cp = MemoryCharger(protocol)
    await cp.result("LogStatusNotification", {"status": "Uploaded", "requestId": 4})
    await cp.result("SecurityEventNotification", {"type": "FirmwareUpdated", "timestamp": T, "techInfo": "x"})
    assert cp.bodies(LogStatus) == [LogStatus("Uploaded", 4)]
    assert cp.bodies(SecurityEvent) == [SecurityEvent("FirmwareUpdated", "x")]
    assert cp.bus.events[-1].reported_at == AT
    transfer = {
        "vendorId": SWAP_VENDOR_ID,
        "messageId": "BatterySwap",
        "data": json.dumps(swap_payload(battery())),
    }
    assert await cp.result("DataTransfer", transfer) == {"status": "Accepted"}
    assert cp.bodies(BatterySwapped)[0].request_id == 5
    assert await cp.result("DataTransfer", {"vendorId": "other"}) == {"status": "UnknownVendorId"}


async def test_21_der_alarm() -> None:
    cp = MemoryCharger("ocpp2.1")
    alarm = {"controlType": "HVMustTrip", "timestamp": T, "gridEventFault": "OverVoltage"}
    assert await cp.result("NotifyDERAlarm", alarm) == {}
    assert cp.bodies(DerAlarm) == [DerAlarm("HVMustTrip", "OverVoltage", False, None)]
