"""Simulated charger firmware against a tiny in-test central system (tests/mini_csms.py): boot (Pending
back-off), heartbeat interval, 1.6 configuration keys and 2.0.1 variables driving behaviour."""

from __future__ import annotations

import itertools

from tests.mini_csms import MiniCSMS, make
from tests.waiting import until

pytest_plugins = ("tests.mini_csms",)


async def test_boot_pending_backoff_then_heartbeat_interval() -> None:
    async with MiniCSMS(pending_boots=2, interval=1) as csms:
        cp = make(csms, "CPBOOT")
        await cp.start()
        try:
            await cp.wait_until_accepted(10)
            await until(lambda: len(csms.payloads("CPBOOT", "Heartbeat")) >= 2, 5)
        finally:
            await cp.stop()
    times = {a: [t for c, x, _, t in csms.received if x == a] for a in ("BootNotification", "Heartbeat")}
    boots = times["BootNotification"]
    assert len(boots) == 3
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(boots))  # waited the Pending interval
    actions = csms.actions("CPBOOT")
    assert actions[:3] == ["BootNotification"] * 3  # nothing else before Accepted
    statuses = csms.payloads("CPBOOT", "StatusNotification")
    assert [s["connectorId"] for s in statuses[:3]] == [0, 1, 2]
    beats = times["Heartbeat"]
    assert 0.8 <= beats[1] - beats[0] <= 1.5
    boot = csms.payloads("CPBOOT", "BootNotification")[0]
    assert boot["chargePointVendor"] and boot["firmwareVersion"] == "1.0.0"
    assert cp.schema_violations == []


async def test_change_configuration_changes_heartbeat(csms: MiniCSMS) -> None:
    cp = make(csms, "CPCFG")
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        reply = await csms.call("CPCFG", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "1"})
        assert reply[2] == {"status": "Accepted"}
        await until(lambda: len(csms.payloads("CPCFG", "Heartbeat")) >= 2, 4)
        ro = await csms.call("CPCFG", "ChangeConfiguration", {"key": "NumberOfConnectors", "value": "5"})
        assert ro[2] == {"status": "Rejected"}
        bad = await csms.call("CPCFG", "ChangeConfiguration", {"key": "Nope", "value": "5"})
        assert bad[2] == {"status": "NotSupported"}
        conf = await csms.call("CPCFG", "GetConfiguration", {"key": ["HeartbeatInterval", "Nope"]})
        assert conf[2]["configurationKey"] == [{"key": "HeartbeatInterval", "readonly": False, "value": "1"}]
        assert conf[2]["unknownKey"] == ["Nope"]
    finally:
        await cp.stop()
    assert cp.schema_violations == []


async def test_v201_variables_drive_behaviour(csms: MiniCSMS) -> None:
    cp = make(csms, "CPVAR", "ocpp2.0.1")
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        boot = csms.payloads("CPVAR", "BootNotification")[0]
        assert boot["reason"] == "PowerUp" and boot["chargingStation"]["vendorName"]
        data = [
            {
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "HeartbeatInterval"},
                "attributeValue": "1",
            },
            {
                "component": {"name": "SampledDataCtrlr"},
                "variable": {"name": "TxUpdatedInterval"},
                "attributeValue": "2",
            },
            {"component": {"name": "Bogus"}, "variable": {"name": "X"}, "attributeValue": "1"},
        ]
        reply = await csms.call("CPVAR", "SetVariables", {"setVariableData": data})
        assert [r["attributeStatus"] for r in reply[2]["setVariableResult"]] == [
            "Accepted",
            "Accepted",
            "UnknownComponent",
        ]
        assert cp.config.get("MeterValueSampleInterval") == "2"
        await until(lambda: len(csms.payloads("CPVAR", "Heartbeat")) >= 2, 4)
        got = await csms.call(
            "CPVAR",
            "GetVariables",
            {
                "getVariableData": [
                    {"component": {"name": "HeartbeatCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
                ]
            },
        )
        assert got[2]["getVariableResult"][0]["attributeValue"] == "1"
        report = await csms.call("CPVAR", "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"})
        assert report[2] == {"status": "Accepted"}
        await until(lambda: any(not p["tbc"] for p in csms.payloads("CPVAR", "NotifyReport")))
    finally:
        await cp.stop()
    assert cp.schema_violations == []
