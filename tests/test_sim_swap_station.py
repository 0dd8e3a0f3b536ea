"""Simulated battery-swap station against an in-test OCPP 2.1 central system (real websockets, strict)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ocpp.charge_point import snake_to_camel_case
from ocpp.v21 import call
from ocpp.v21.datatypes import BatteryDataType, IdTokenType
from websockets.asyncio.server import serve
from websockets.typing import Subprotocol

from firmware_stubs import SimEnvironment, SwapStation, schemas
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from tests.mini_csms import MiniCSMS
from tests.waiting import until

Payload = dict[str, Any]
VERSIONS = {"ocpp2.1": "2.1", "ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
VENDOR_KEYS = {"cycles", "cellTempMin", "cellTempMax", "cellVoltMin", "cellVoltMax"}


class SwapCSMS(MiniCSMS):
    """MiniCSMS that also speaks OCPP 2.1 and checks every station call against the official schemas."""

    async def __aenter__(self) -> SwapCSMS:
        self.server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=[Subprotocol(p) for p in VERSIONS],
            compression=None,
        )
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ocpp"
        self.violations: list[str] = []
        return self

    def _respond(self, cp_id: str, action: str, payload: Payload) -> Payload:
        version = VERSIONS[self.connections[cp_id].subprotocol or ""]
        err = schemas.validate(version, action, payload, response=False)
        if err is not None:
            self.violations.append(f"{cp_id} {action}: {schemas.describe(err)}")
        return super()._respond(cp_id, action, payload)

    def swaps(self, cp_id: str) -> list[Payload]:
        """BatterySwap payloads, whether sent natively (2.1) or by the DataTransfer fallback."""
        native = self.payloads(cp_id, "BatterySwap")
        wrapped = [
            json.loads(p["data"])
            for p in self.payloads(cp_id, "DataTransfer")
            if p["vendorId"] == "org.chargeops.swap" and p["messageId"] == "BatterySwap"
        ]
        return native + wrapped


@pytest.fixture
async def csms() -> AsyncIterator[SwapCSMS]:
    async with SwapCSMS() as server:
        yield server
        assert server.violations == []


def station(csms: SwapCSMS, cp_id: str, protocol: str = "ocpp2.1", **kw: Any) -> SwapStation:
    """Three slots (unless told): a charged pack in 1, a half-full one in 2, slot 3 free."""
    env = SimEnvironment(strict=True, tick=0.05, time_scale=kw.pop("time_scale", 10.0))
    kw.setdefault("slots", 3)
    st = SwapStation(cp_id, csms.url, protocol=protocol, env=env, **kw)
    for slot, soc in ((1, 95.0), (2, 50.0)):
        pack = st.pack(slot)
        assert pack is not None
        pack.soc = soc
    return st


async def started(st: SwapStation) -> SwapStation:
    await st.start()
    await st.wait_until_accepted(5)
    return st


async def test_local_swap_authorizes_then_battery_in_and_out(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPLOCAL"))
    try:
        out_serial = st.pack(1).serial  # type: ignore[union-attr]
        in_serial = st.vehicle_packs[0].serial
        request_id = await st.swap("DRIVER1", in_serial)
        assert request_id is not None
        await until(lambda: len(csms.swaps("SWAPLOCAL")) == 2)
    finally:
        await st.stop()
    actions = csms.actions("SWAPLOCAL")
    assert actions.index("Authorize") < actions.index("BatterySwap")
    assert csms.payloads("SWAPLOCAL", "Authorize")[0]["idToken"]["idToken"] == "DRIVER1"
    battery_in, battery_out = csms.swaps("SWAPLOCAL")
    assert [battery_in["eventType"], battery_out["eventType"]] == ["BatteryIn", "BatteryOut"]
    assert battery_in["requestId"] == battery_out["requestId"] == request_id
    assert battery_in["idToken"] == {"idToken": "DRIVER1", "type": "ISO14443"}
    (docked,) = battery_in["batteryData"]
    (taken,) = battery_out["batteryData"]
    assert (docked["evseId"], docked["serialNumber"]) == (3, in_serial)
    assert (taken["evseId"], taken["serialNumber"]) == (1, out_serial)
    assert docked["soC"] <= 35.0 and taken["soC"] >= 80.0
    info = json.loads(taken["vendorInfo"])
    assert info.keys() == VENDOR_KEYS and len(taken["vendorInfo"]) <= 500
    assert info["cellTempMin"] <= info["cellTempMax"] and info["cellVoltMin"] <= info["cellVoltMax"]
    assert st.pack(1) is None and st.pack(3).serial == in_serial  # type: ignore[union-attr]
    assert out_serial in [p.serial for p in st.vehicle_packs]
    assert st.swaps_completed == 1 and st.schema_violations == []


async def test_refused_driver_keeps_their_pack() -> None:
    async with SwapCSMS() as csms:
        csms.auth_status = "Blocked"
        st = await started(station(csms, "SWAPBLOCK"))
        try:
            in_serial = st.vehicle_packs[0].serial
            await st.swap("STOLEN", in_serial)
            await until(lambda: bool(csms.payloads("SWAPBLOCK", "Authorize")))
            await until(lambda: in_serial in [p.serial for p in st.vehicle_packs])
        finally:
            await st.stop()
    assert csms.swaps("SWAPBLOCK") == [] and st.pack(3) is None


async def test_remote_request_battery_swap_accepted_then_rejected(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPREMOTE"))
    token = {"idToken": "APPUSER7", "type": "Central"}
    try:
        reply = await csms.call("SWAPREMOTE", "RequestBatterySwap", {"requestId": 4711, "idToken": token})
        assert reply[2] == {"status": "Accepted"}
        await until(lambda: len(csms.swaps("SWAPREMOTE")) == 2)
        # the only other docked pack is half full: nothing to hand out
        again = await csms.call("SWAPREMOTE", "RequestBatterySwap", {"requestId": 4712, "idToken": token})
        assert again[2] == {"status": "Rejected"}
    finally:
        await st.stop()
    assert "Authorize" not in csms.actions("SWAPREMOTE")
    events = csms.swaps("SWAPREMOTE")
    assert [(e["eventType"], e["requestId"], e["idToken"]) for e in events] == [
        ("BatteryIn", 4711, token),
        ("BatteryOut", 4711, token),
    ]
    assert st.schema_violations == []


async def test_battery_out_timeout_leaves_the_pack_in_its_slot(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPTIMEOUT", out_timeout=30.0, time_scale=100.0))
    try:
        request_id = await st.swap("DRIVER2", take=False)
        await until(lambda: len(csms.swaps("SWAPTIMEOUT")) == 2)
    finally:
        await st.stop()
    battery_in, timeout = csms.swaps("SWAPTIMEOUT")
    assert (battery_in["eventType"], timeout["eventType"]) == ("BatteryIn", "BatteryOutTimeout")
    assert battery_in["requestId"] == timeout["requestId"] == request_id
    left = timeout["batteryData"][0]
    assert left["evseId"] == 1 and st.pack(1).serial == left["serialNumber"]  # type: ignore[union-attr]
    assert st.out_timeouts == 1 and st.swaps_completed == 0 and st.schema_violations == []


async def test_injected_foreign_low_soh_and_hot_packs(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPODD", slots=4, docked=2, packs=6))
    st.pack(2).soc = 90.0  # type: ignore[union-attr]
    try:
        await st.swap("DRIVER3", "FOREIGN-XYZ-1", soh=61.5, temp_spread=18.0)
        await until(lambda: len(csms.swaps("SWAPODD")) == 2)
        with pytest.raises(ValueError, match="docked"):
            await st.swap("DRIVER4", st.pack(2).serial)  # type: ignore[union-attr]
    finally:
        await st.stop()
    (foreign,) = csms.swaps("SWAPODD")[0]["batteryData"]
    assert foreign["serialNumber"] == "FOREIGN-XYZ-1" and foreign["soH"] == 61.5
    info = json.loads(foreign["vendorInfo"])
    assert info["cellTempMax"] - info["cellTempMin"] == pytest.approx(18.0, abs=0.11)
    assert "FOREIGN-XYZ-1" in st.serials


async def test_slot_fault_raised_and_cleared(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPFAULT", time_scale=100.0))
    try:
        await until(lambda: bool(csms.payloads("SWAPFAULT", "StatusNotification")))
        st.inject_fault(1, "SlotLock")
        assert await st.swap("DRIVER5") is None  # the only charged pack is locked in
        st.clear_fault(1)
        st.inject_fault(3, "SlotActuator", clear_after=30.0)  # auto-clears after 30 simulated s
        await until(lambda: len(csms.payloads("SWAPFAULT", "NotifyEvent")) == 4)
    finally:
        await st.stop()
    events = [p["eventData"][0] for p in csms.payloads("SWAPFAULT", "NotifyEvent")]
    assert [(e["component"]["name"], e["component"]["evse"]["id"], e["actualValue"]) for e in events] == [
        ("SlotLock", 1, "true"),
        ("SlotLock", 1, "false"),
        ("SlotActuator", 3, "true"),
        ("SlotActuator", 3, "false"),
    ]
    assert all(e["trigger"] == "Alerting" and e["variable"] == {"name": "Problem"} for e in events)
    assert [e["cleared"] for e in events] == [False, True, False, True]
    faulted = [
        p["evseId"]
        for p in csms.payloads("SWAPFAULT", "StatusNotification")
        if p["connectorStatus"] == "Faulted"
    ]
    assert faulted == [1, 3]
    with pytest.raises(ValueError, match="unknown fault code"):
        st.inject_fault(1, "GroundFailure")
    assert st.schema_violations == []


async def test_docked_packs_charge_as_transaction_events(csms: SwapCSMS) -> None:
    st = station(csms, "SWAPCHG", time_scale=600.0)
    st.config.put("MeterValueSampleInterval", "0.2")
    st.pack(1).soc = 99.0  # type: ignore[union-attr]
    await started(st)
    try:

        def tx_events(slot: int) -> list[Payload]:
            return [p for p in csms.payloads("SWAPCHG", "TransactionEvent") if p["evse"]["id"] == slot]

        await until(lambda: any(p["eventType"] == "Ended" for p in tx_events(1)))
        await until(lambda: any(p["eventType"] == "Updated" and "meterValue" in p for p in tx_events(2)))
    finally:
        await st.stop()
    first, *_, last = tx_events(1)
    assert first["eventType"] == "Started" and first["triggerReason"] == "CablePluggedIn"
    assert first["idToken"] == {"idToken": "", "type": "NoAuthorization"}
    assert last["transactionInfo"]["stoppedReason"] == "StoppedByEV" and st.pack(1).soc == 100.0  # type: ignore[union-attr]
    socs = [
        v["value"]
        for p in tx_events(2)
        for mv in p.get("meterValue", [])
        for v in mv["sampledValue"]
        if v["measurand"] == "SoC"
    ]
    assert socs and socs == sorted(socs) and socs[-1] > 50.0
    assert st.schema_violations == []


async def test_v201_station_reports_swaps_by_data_transfer(csms: SwapCSMS) -> None:
    st = await started(station(csms, "SWAPOLD", protocol="ocpp2.0.1"))
    try:
        request_id = await st.swap("DRIVER6")
        await until(lambda: len(csms.swaps("SWAPOLD")) == 2)
    finally:
        await st.stop()
    assert "BatterySwap" not in csms.actions("SWAPOLD")
    transfers = csms.payloads("SWAPOLD", "DataTransfer")
    assert {(t["vendorId"], t["messageId"]) for t in transfers} == {("org.chargeops.swap", "BatterySwap")}
    for t in transfers:  # data is a 2.1 BatterySwapRequest, as a JSON string
        assert isinstance(t["data"], str)
        assert schemas.validate("2.1", "BatterySwap", json.loads(t["data"]), response=False) is None
    assert [(s["eventType"], s["requestId"]) for s in csms.swaps("SWAPOLD")] == [
        ("BatteryIn", request_id),
        ("BatteryOut", request_id),
    ]
    assert st.schema_violations == []


def test_battery_data_spelling_is_the_schemas_not_the_librarys() -> None:
    """`ocpp` 2.1.0 turns `soc`/`soh` into `SoC`/`soh`; the schema wants `soC`/`soH`."""
    st = SwapStation("SWAPSPELL", "ws://unused", slots=2)
    pack = st.pack(1)
    assert pack is not None
    ours: Payload = {
        "eventType": "BatteryIn",
        "requestId": 1,
        "idToken": {"idToken": "T", "type": "ISO14443"},
        "batteryData": [pack.battery_data(1, load=0.0)],
    }
    assert {"soC", "soH"} <= ours["batteryData"][0].keys()
    assert schemas.validate("2.1", "BatterySwap", ours, response=False) is None
    library = snake_to_camel_case(
        dataclasses.asdict(
            call.BatterySwap(
                battery_data=[BatteryDataType(evse_id=1, serial_number="S", soc=50.0, soh=90.0)],
                event_type="BatteryIn",
                id_token=IdTokenType(id_token="T", type="ISO14443"),
                request_id=1,
            )
        )
    )
    library = {k: v for k, v in library.items() if v is not None}
    library["batteryData"] = [{k: v for k, v in b.items() if v is not None} for b in library["batteryData"]]
    assert {"SoC", "soh"} <= library["batteryData"][0].keys()
    assert schemas.validate("2.1", "BatterySwap", library, response=False) is not None


async def test_fleet_runs_swap_stations_beside_chargers(csms: SwapCSMS) -> None:
    config = FleetConfig(
        csms_url=csms.url,
        chargers=2,
        protocol="mixed",
        swap_stations=2,
        swap_rate=3600.0,
        duration=2.0,
        time_scale=60.0,
        session_rate=0.0,
        strict=True,
    )
    fleet = build_fleet(config)
    stations = [cp for cp in fleet if isinstance(cp, SwapStation)]
    assert [(s.id, s.dialect.subprotocol) for s in stations] == [
        ("SWAP00000", "ocpp2.1"),
        ("SWAP00001", "ocpp2.0.1"),
    ]
    assert all(len(s.connectors) == 9 and len(s.serials) > 8 for s in stations)
    result = await run_fleet(config, fleet)
    assert result.swaps > 0 and result.schema_violations == []
    assert csms.swaps("SWAP00000") and csms.swaps("SWAP00001")
