"""Simulated charger firmware against a tiny in-test central system (tests/mini_csms.py): 1.6 and 2.0.1
charging sessions (tapering power, rising energy), rejected tokens, remote start/stop, charging profiles
limiting power, transaction messages queued while offline."""

from __future__ import annotations

import asyncio

import pytest

from firmware_stubs import EV
from tests.mini_csms import MiniCSMS, Payload, make
from tests.waiting import until

pytest_plugins = ("tests.mini_csms",)


# --------------------------------------------------------------------------- sessions
def _values(meter: Payload, measurand: str) -> list[float]:
    return [float(v["value"]) for v in meter["sampledValue"] if v.get("measurand") == measurand]


async def test_session_16_tapering_power_and_rising_energy(csms: MiniCSMS) -> None:
    cp = make(csms, "CPTX", time_scale=600.0, sample_interval=1.0, tick=0.2)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        ev = EV(capacity_wh=20_000.0, soc=72.0, max_power_w=11_000.0)
        await cp.plug_in(1, "TAG1", ev=ev)
        await until(lambda: cp.status(1) == "Charging")
        await until(lambda: len(csms.payloads("CPTX", "MeterValues")) >= 4, 8)
        await cp.unplug(1)
        await until(lambda: bool(csms.payloads("CPTX", "StopTransaction")))
    finally:
        await cp.stop()
    actions = csms.actions("CPTX")
    assert actions.index("Authorize") < actions.index("StartTransaction") < actions.index("MeterValues")
    start = csms.payloads("CPTX", "StartTransaction")[0]
    assert start["idTag"] == "TAG1" and start["meterStart"] == 0
    meters = [mv["meterValue"][0] for mv in csms.payloads("CPTX", "MeterValues")]
    assert {mv["transactionId"] for mv in csms.payloads("CPTX", "MeterValues")} == {1}
    energy = [_values(m, "Energy.Active.Import.Register")[0] for m in meters]
    power = [_values(m, "Power.Active.Import")[0] for m in meters]
    soc = [_values(m, "SoC")[0] for m in meters]
    assert energy == sorted(energy) and energy[-1] > energy[0]
    assert soc == sorted(soc) and soc[-1] > 80
    assert power[0] <= 11_000 and power[-1] < power[0] * 0.8  # tapering above 80 %
    assert len(_values(meters[0], "Current.Import")) == 3 and len(_values(meters[0], "Voltage")) == 3
    assert all(v["context"] == "Sample.Periodic" for m in meters for v in m["sampledValue"])
    stop = csms.payloads("CPTX", "StopTransaction")[0]
    assert stop["transactionId"] == 1 and stop["reason"] == "EVDisconnected"
    assert stop["meterStop"] >= energy[-1] - 1
    assert stop["transactionData"][-1]["sampledValue"][0]["context"] == "Transaction.End"
    statuses = [s["status"] for s in csms.payloads("CPTX", "StatusNotification") if s["connectorId"] == 1]
    assert statuses[-3:] == ["Charging", "SuspendedEV", "Available"] or "Charging" in statuses
    assert cp.schema_violations == []


async def test_rejected_id_tag_means_no_charge() -> None:
    async with MiniCSMS(auth_status="Invalid") as csms:
        cp = make(csms, "CPBAD")
        await cp.start()
        try:
            await cp.wait_until_accepted(5)
            await cp.plug_in(1, "BADTAG", ev=EV())
            await until(lambda: bool(csms.payloads("CPBAD", "Authorize")))
            await asyncio.sleep(0.3)
        finally:
            await cp.stop()
    assert "StartTransaction" not in csms.actions("CPBAD")
    assert cp.status(1) == "Preparing" and cp.transaction(1) is None


async def test_session_201_transaction_events_and_remote_stop(csms: MiniCSMS) -> None:
    cp = make(csms, "CP201", "ocpp2.0.1", time_scale=600.0, sample_interval=1.0, tick=0.2)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        await cp.plug_in(1, "TAG201", ev=EV(capacity_wh=60_000.0, soc=30.0, max_power_w=11_000.0))
        await until(lambda: cp.transaction(1) is not None)
        tx = cp.transaction(1)
        assert tx is not None
        await until(lambda: len(csms.payloads("CP201", "TransactionEvent")) >= 3, 5)
        reply = await csms.call("CP201", "RequestStopTransaction", {"transactionId": tx.local_id})
        assert reply[2] == {"status": "Accepted"}
        await until(lambda: csms.payloads("CP201", "TransactionEvent")[-1]["eventType"] == "Ended")
    finally:
        await cp.stop()
    events = csms.payloads("CP201", "TransactionEvent")
    assert events[0]["eventType"] == "Started" and events[0]["idToken"]["idToken"] == "TAG201"
    assert events[0]["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.Begin"
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    assert {e["transactionInfo"]["transactionId"] for e in events} == {tx.local_id}
    assert events[-1]["transactionInfo"]["stoppedReason"] == "Remote"
    assert events[-1]["triggerReason"] == "RemoteStop"
    assert any(e["triggerReason"] == "MeterValuePeriodic" for e in events)
    assert cp.schema_violations == []


async def test_remote_start_16(csms: MiniCSMS) -> None:
    cp = make(csms, "CPRS")
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        reply = await csms.call("CPRS", "RemoteStartTransaction", {"idTag": "REMOTE", "connectorId": 2})
        assert reply[2] == {"status": "Accepted"}
        await until(lambda: bool(csms.payloads("CPRS", "StartTransaction")))
        assert csms.payloads("CPRS", "StartTransaction")[0]["connectorId"] == 2
        await until(lambda: cp.transaction(2) is not None and cp.transaction(2).server_id is not None)  # type: ignore[union-attr]
        tx = cp.transaction(2)
        assert tx is not None
        stop = await csms.call("CPRS", "RemoteStopTransaction", {"transactionId": tx.server_id})
        assert stop[2] == {"status": "Accepted"}
        await until(lambda: bool(csms.payloads("CPRS", "StopTransaction")))
        assert csms.payloads("CPRS", "StopTransaction")[0]["reason"] == "Remote"
    finally:
        await cp.stop()
    assert cp.schema_violations == []


async def test_charging_profile_limits_power(csms: MiniCSMS) -> None:
    cp = make(csms, "CPSC", time_scale=60.0, sample_interval=0.5, tick=0.1)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        await cp.plug_in(1, "TAG", ev=EV(capacity_wh=80_000.0, soc=20.0, max_power_w=22_000.0))
        await until(lambda: cp.connectors[1].power_w > 20_000)
        profile = {
            "chargingProfileId": 5,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
            },
        }
        reply = await csms.call(
            "CPSC", "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": profile}
        )
        assert reply[2] == {"status": "Accepted"}
        limit_w = 16 * 230 * 3
        await until(lambda: 0 < cp.connectors[1].power_w <= limit_w)
        n = len(csms.payloads("CPSC", "MeterValues"))
        await until(lambda: len(csms.payloads("CPSC", "MeterValues")) >= n + 2)
        last = csms.payloads("CPSC", "MeterValues")[-1]["meterValue"][0]
        assert 0 < _values(last, "Power.Active.Import")[0] <= limit_w
        sched = await csms.call("CPSC", "GetCompositeSchedule", {"connectorId": 1, "duration": 3600})
        assert sched[2]["status"] == "Accepted"
        assert sched[2]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == limit_w
        cleared = await csms.call("CPSC", "ClearChargingProfile", {"id": 5})
        assert cleared[2] == {"status": "Accepted"}
        await until(lambda: cp.connectors[1].power_w > limit_w)
    finally:
        await cp.stop()
    assert cp.schema_violations == []


# --------------------------------------------------------------------------- offline queueing
@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_transaction_messages_queued_while_offline(csms: MiniCSMS, protocol: str) -> None:
    cp = make(csms, "CPQ", protocol, time_scale=60.0, sample_interval=0.3, backoff_base=0.2)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        await cp.plug_in(1, "TAGQ", ev=EV())
        await until(lambda: cp.transaction(1) is not None and cp.queued == 0)
        await asyncio.sleep(0.4)
        csms.accepting = False
        await cp.drop_connection()
        mark = len(csms.received)
        await asyncio.sleep(1.0)  # offline: periodic samples queue up
        await cp.unplug(1)
        assert cp.queued >= 3
        csms.accepting = True
        await until(lambda: cp.accepted and cp.queued == 0, 10)
    finally:
        await cp.stop()
    after = [(a, p) for c, a, p, _ in csms.received[mark:] if c == "CPQ"]
    assert after[0][0] == "BootNotification"
    tx_actions = {"MeterValues", "StopTransaction", "TransactionEvent"}
    delivered = [(a, p) for a, p in after if a in tx_actions]
    assert len(delivered) >= 3
    if protocol == "ocpp1.6":
        assert [a for a, _ in delivered][-1] == "StopTransaction"
        assert all(p["transactionId"] == 1 for _, p in delivered)
        stamps = [p["meterValue"][0]["timestamp"] for a, p in delivered if a == "MeterValues"]
        assert stamps == sorted(stamps)
    else:
        assert delivered[-1][1]["eventType"] == "Ended"
        assert all(p.get("offline") is True for _, p in delivered)
        seq = [p["seqNo"] for _, p in delivered]
        assert seq == sorted(seq)
    assert csms.connects["CPQ"] == 2
    assert cp.schema_violations == []
