"""Simulated charger firmware against a tiny in-test central system (real websockets, no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from chargeops.pki.csr import check_csr
from firmware_stubs import EV, SimEnvironment, SimulatedCharger
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from tests.csms_payloads import V16_CALLS, V201_CALLS
from tests.waiting import until

Payload = dict[str, Any]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class MiniCSMS:
    """Minimal OCPP central system: accepts boots, issues 1.6 transaction ids, records everything."""

    def __init__(self, *, pending_boots: int = 0, interval: int = 300, auth_status: str = "Accepted") -> None:
        self.pending_boots = pending_boots
        self.interval = interval
        self.auth_status = auth_status
        self.accepting = True
        self.received: list[tuple[str, str, Payload, float]] = []  # (cp id, action, payload, loop time)
        self.connections: dict[str, ServerConnection] = {}
        self.connects: dict[str, int] = {}
        self.boots: dict[str, int] = {}
        self.overrides: dict[str, Callable[[str, Payload], Payload]] = {}
        self._pending: dict[str, asyncio.Future[list[Any]]] = {}
        self._ids = itertools.count(1)
        self._tx_ids = itertools.count(1)
        self.server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> MiniCSMS:
        self.server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
            compression=None,
            process_request=self._gate,
        )
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ocpp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        if not self.accepting:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "down\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rsplit("/", 1)[-1]
        self.connections[cp_id] = ws
        self.connects[cp_id] = self.connects.get(cp_id, 0) + 1
        try:
            await self._serve_frames(cp_id, ws)
        except ConnectionClosed:
            pass

    async def _serve_frames(self, cp_id: str, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame[0] == 2:
                _, uid, action, payload = frame
                self.received.append((cp_id, action, payload, loop.time()))
                reply = self._respond(cp_id, action, payload)
                await ws.send(orjson.dumps([3, uid, reply]).decode())
            elif frame[1] in self._pending:
                self._pending.pop(frame[1]).set_result(frame)

    def _respond(self, cp_id: str, action: str, payload: Payload) -> Payload:
        if action in self.overrides:
            return self.overrides[action](cp_id, payload)
        if action == "BootNotification":
            self.boots[cp_id] = self.boots.get(cp_id, 0) + 1
            status = "Pending" if self.boots[cp_id] <= self.pending_boots else "Accepted"
            interval = 1 if status == "Pending" else self.interval
            return {"status": status, "currentTime": now_iso(), "interval": interval}
        if action == "Heartbeat":
            return {"currentTime": now_iso()}
        if action == "Authorize":
            key = "idTagInfo" if "idTag" in payload else "idTokenInfo"
            return {key: {"status": self.auth_status}}
        if action == "StartTransaction":
            return {"transactionId": next(self._tx_ids), "idTagInfo": {"status": self.auth_status}}
        if action == "TransactionEvent" and payload["eventType"] == "Started":
            return {"idTokenInfo": {"status": self.auth_status}}
        if action in ("DataTransfer", "SignCertificate"):
            return {"status": "Accepted"}
        return {}

    async def call(self, cp_id: str, action: str, payload: Payload, timeout: float = 5.0) -> list[Any]:
        """Send a CSMS-initiated CALL and return the full reply frame ([3,...] or [4,...])."""
        uid = f"csms-{next(self._ids)}"
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[uid] = fut
        await self.connections[cp_id].send(orjson.dumps([2, uid, action, payload]).decode())
        return await asyncio.wait_for(fut, timeout)

    def actions(self, cp_id: str) -> list[str]:
        return [a for c, a, _, _ in self.received if c == cp_id]

    def payloads(self, cp_id: str, action: str) -> list[Payload]:
        return [p for c, a, p, _ in self.received if c == cp_id and a == action]


@pytest.fixture
async def csms() -> AsyncIterator[MiniCSMS]:
    async with MiniCSMS() as server:
        yield server


class HttpSink:
    """Tiny HTTP server: serves firmware images on GET and records uploads (POST/PUT bodies)."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str, bytes]] = []
        self.files = {"/fw-2.0.0.bin": b"\x7fFIRMWARE" * 100}
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HttpSink:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, path, _ = (await reader.readline()).decode().split(" ", 2)
        lines: list[str] = []
        while (raw := await reader.readline()) not in (b"\r\n", b""):
            lines.append(raw.decode())
        headers = Headers()
        for text in lines:
            key, _, value = text.partition(":")
            headers[key.strip()] = value.strip()
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        if method == "GET" and path in self.files:
            status, content = "200 OK", self.files[path]
        elif method in ("POST", "PUT"):
            self.uploads.append((path, body))
            status, content = "200 OK", b"ok"
        else:
            status, content = "404 Not Found", b"missing"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
        )
        writer.write(content)
        await writer.drain()
        writer.close()


def make(csms: MiniCSMS, cp_id: str, protocol: str = "ocpp1.6", **env: Any) -> SimulatedCharger:
    env.setdefault("strict", True)
    return SimulatedCharger(
        cp_id, csms.url, protocol=protocol, connectors=2, env=SimEnvironment(**env), max_power_w=22_000.0
    )


# --------------------------------------------------------------------------- boot & heartbeat
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


# --------------------------------------------------------------------------- faults
async def test_fault_injection_16_and_201(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPF16")
    cp201 = make(csms, "CPF201", "ocpp2.0.1")
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        await cp16.plug_in(1, "T", ev=EV())
        await until(lambda: cp16.status(1) == "Charging")
        for cp in (cp16, cp201):
            cp.inject_fault(1, "GroundFailure", vendor_code="GF-42")
        await until(lambda: bool(csms.payloads("CPF201", "NotifyEvent")))
        await until(lambda: bool(csms.payloads("CPF16", "StopTransaction")))
        for cp in (cp16, cp201):
            cp.clear_fault(1)
        await until(lambda: len(csms.payloads("CPF201", "NotifyEvent")) == 2)
        await until(
            lambda: csms.payloads("CPF16", "StatusNotification")[-1]["status"] in ("Finishing", "Preparing")
        )
        with pytest.raises(ValueError):
            cp16.inject_fault(1, "Gremlins")
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())
    faulted = [s for s in csms.payloads("CPF16", "StatusNotification") if s["status"] == "Faulted"]
    assert faulted[0]["errorCode"] == "GroundFailure" and faulted[0]["vendorErrorCode"] == "GF-42"
    assert csms.payloads("CPF16", "StatusNotification")[-1]["errorCode"] == "NoError"
    assert csms.payloads("CPF16", "StopTransaction")[0]["reason"] == "Other"
    raised, cleared = csms.payloads("CPF201", "NotifyEvent")
    assert (
        raised["eventData"][0]["component"]["name"] == "RCD" and raised["eventData"][0]["techCode"] == "GF-42"
    )
    assert cleared["eventData"][0]["cleared"] is True
    statuses = [
        s["connectorStatus"] for s in csms.payloads("CPF201", "StatusNotification") if s["evseId"] == 1
    ]
    assert "Faulted" in statuses and statuses[-1] == "Available"
    assert cp16.schema_violations == [] and cp201.schema_violations == []


# --------------------------------------------------------------------------- reset & firmware
async def test_reset_reboots_16_and_201(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPR16", reboot_delay=0.2)
    cp201 = make(csms, "CPR201", "ocpp2.0.1", reboot_delay=0.2)
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        await cp16.plug_in(1, "T", ev=EV())
        await until(lambda: cp16.transaction(1) is not None and cp16.queued == 0)
        assert (await csms.call("CPR16", "Reset", {"type": "Soft"}))[2] == {"status": "Accepted"}
        assert (await csms.call("CPR201", "Reset", {"type": "Immediate"}))[2] == {"status": "Accepted"}
        await until(lambda: csms.connects.get("CPR16") == 2 and csms.connects.get("CPR201") == 2)
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())
    assert csms.payloads("CPR16", "StopTransaction")[0]["reason"] == "SoftReset"
    assert len(csms.payloads("CPR16", "BootNotification")) == 2
    assert [b["reason"] for b in csms.payloads("CPR201", "BootNotification")] == ["PowerUp", "RemoteReset"]


async def test_firmware_update_sequence_and_failure(csms: MiniCSMS) -> None:
    async with HttpSink() as http:
        cp16 = make(csms, "CPFW", firmware_step=0.05, reboot_delay=0.1)
        cp201 = make(csms, "CPFW2", "ocpp2.0.1", firmware_step=0.05, reboot_delay=0.1)
        await asyncio.gather(cp16.start(), cp201.start())
        try:
            await cp16.wait_until_accepted(5)
            await cp201.wait_until_accepted(5)
            url = f"{http.url}/fw-2.0.0.bin"
            reply = await csms.call("CPFW", "UpdateFirmware", {"location": url, "retrieveDate": now_iso()})
            assert reply[2] == {}
            fw201 = {"location": url, "retrieveDateTime": now_iso()}
            reply = await csms.call("CPFW2", "UpdateFirmware", {"requestId": 9, "firmware": fw201})
            assert reply[2] == {"status": "Accepted"}
            await until(lambda: len(csms.payloads("CPFW", "BootNotification")) == 2)
            await until(lambda: len(csms.payloads("CPFW2", "BootNotification")) == 2)
            await cp16.wait_until_accepted(5)
            bad = {"location": "http://127.0.0.1:9/nothing.bin", "retrieveDate": now_iso()}
            await csms.call("CPFW", "UpdateFirmware", bad)
            await until(
                lambda: csms.payloads("CPFW", "FirmwareStatusNotification")[-1]["status"] == "DownloadFailed"
            )
        finally:
            await asyncio.gather(cp16.stop(), cp201.stop())
    steps = [p["status"] for p in csms.payloads("CPFW", "FirmwareStatusNotification")]
    assert steps == ["Downloading", "Downloaded", "Installing", "Installed", "Downloading", "DownloadFailed"]
    assert csms.payloads("CPFW", "BootNotification")[1]["firmwareVersion"] == "fw-2.0.0"
    assert cp16.firmware_version == "fw-2.0.0"
    steps201 = csms.payloads("CPFW2", "FirmwareStatusNotification")
    assert [p["status"] for p in steps201] == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert all(p["requestId"] == 9 for p in steps201)
    assert csms.payloads("CPFW2", "BootNotification")[1]["reason"] == "FirmwareUpdate"
    assert cp16.schema_violations == [] and cp201.schema_violations == []


async def test_get_diagnostics_and_get_log_upload(csms: MiniCSMS) -> None:
    async with HttpSink() as http:
        cp16 = make(csms, "CPDIAG")
        cp201 = make(csms, "CPLOG", "ocpp2.0.1")
        await asyncio.gather(cp16.start(), cp201.start())
        try:
            await cp16.wait_until_accepted(5)
            await cp201.wait_until_accepted(5)
            reply = await csms.call("CPDIAG", "GetDiagnostics", {"location": f"{http.url}/upload"})
            assert reply[2]["fileName"].startswith("CPDIAG-diagnostics")
            log = {"remoteLocation": f"{http.url}/logs"}
            reply = await csms.call(
                "CPLOG", "GetLog", {"logType": "DiagnosticsLog", "requestId": 3, "log": log}
            )
            assert reply[2]["status"] == "Accepted"
            await until(lambda: len(csms.payloads("CPDIAG", "DiagnosticsStatusNotification")) == 2)
            await until(lambda: len(csms.payloads("CPLOG", "LogStatusNotification")) == 2)
            unreachable = await csms.call("CPDIAG", "GetDiagnostics", {"location": "http://127.0.0.1:9/x"})
            assert unreachable[0] == 3
            await until(lambda: len(csms.payloads("CPDIAG", "DiagnosticsStatusNotification")) == 4)
        finally:
            await asyncio.gather(cp16.stop(), cp201.stop())
    diag = [p["status"] for p in csms.payloads("CPDIAG", "DiagnosticsStatusNotification")]
    assert diag == ["Uploading", "Uploaded", "Uploading", "UploadFailed"]
    assert [p["status"] for p in csms.payloads("CPLOG", "LogStatusNotification")] == ["Uploading", "Uploaded"]
    paths = sorted(path for path, _ in http.uploads)
    assert paths == ["/logs", "/upload"]
    assert all(b"CPDIAG" in body or b"CPLOG" in body for _, body in http.uploads)


# --------------------------------------------------------------------------- strictness & errors
async def test_strict_mode_catches_invalid_csms_response() -> None:
    async with MiniCSMS() as csms:
        csms.overrides["Heartbeat"] = lambda cp, p: {"currentTime": "yesterday at noon"}
        csms.overrides["Authorize"] = lambda cp, p: {"idTagInfo": {"status": "Maybe"}}
        cp = make(csms, "CPSTRICT")
        await cp.start()
        try:
            await cp.wait_until_accepted(5)
            await csms.call("CPSTRICT", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            await cp.plug_in(1, "T", ev=EV())
            await until(lambda: len(cp.schema_violations) >= 2)
        finally:
            await cp.stop()
    joined = "\n".join(cp.schema_violations)
    assert "received HeartbeatResponse: currentTime" in joined
    assert "received AuthorizeResponse" in joined


async def test_invalid_and_unknown_csms_calls_get_the_right_callerror(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPERR", strict=False)
    cp201 = make(csms, "CPERR2", "ocpp2.0.1", strict=False)
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        assert (await csms.call("CPERR", "Reset", {"type": "Warm"}))[2] == "PropertyConstraintViolation"
        assert (await csms.call("CPERR", "Reset", {}))[2] == "OccurenceConstraintViolation"
        assert (await csms.call("CPERR", "Reset", {"type": 5}))[2] == "TypeConstraintViolation"
        assert (await csms.call("CPERR", "FlyToTheMoon", {}))[2] == "NotImplemented"
        assert (await csms.call("CPERR2", "Reset", {}))[2] == "OccurrenceConstraintViolation"
        assert (await csms.call("CPERR2", "Reset", {"type": "Immediate", "x": 1}))[2] == "FormatViolation"
        assert (await csms.call("CPERR2", "FlyToTheMoon", {}))[2] == "NotImplemented"
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())


# ------------------------------------------------------------------- every CSMS action answers validly


@pytest.mark.parametrize(("protocol", "calls"), [("ocpp1.6", V16_CALLS), ("ocpp2.0.1", V201_CALLS)])
async def test_every_csms_action_gets_a_schema_valid_answer(
    csms: MiniCSMS, protocol: str, calls: list[tuple[str, Payload]]
) -> None:
    cp_id = "CPALL" + protocol[-3:].replace(".", "")
    cp = make(csms, cp_id, protocol)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        for action, payload in calls:
            reply = await csms.call(cp_id, action, payload)
            assert reply[0] == 3, (action, reply)
        await until(lambda: cp.queued == 0)
    finally:
        await cp.stop()
    assert cp.schema_violations == []
    assert cp.local_list_version in (2, 3)
    if protocol == "ocpp2.0.1":
        assert csms.payloads(cp_id, "NotifyCustomerInformation") and csms.payloads(
            cp_id, "NotifyDisplayMessages"
        )
        assert csms.payloads(cp_id, "ReportChargingProfiles") and csms.payloads(
            cp_id, "NotifyMonitoringReport"
        )
    else:
        signs = csms.payloads(cp_id, "SignCertificate")
        assert signs
        # a real CSR, as the built-in CA checks it (CN = the id, O = the default organization, key size)
        check_csr(signs[0]["csr"], cp_id, "chargeops")


# --------------------------------------------------------------------------- fleets & seeds
async def test_fleet_of_200_chargers_in_one_process(csms: MiniCSMS) -> None:
    config = FleetConfig(csms.url, chargers=200, protocol="mixed", duration=4.0, connect_rate=2000.0, seed=3)
    config.strict = True
    report = await run_fleet(config)
    assert report.chargers == 200
    assert report.ever_connected == 200 and report.boots_accepted >= 200
    assert report.schema_violations == []
    assert {
        p["chargingStation"]["vendorName"]
        for c, a, p, _ in csms.received
        if a == "BootNotification" and "chargingStation" in p
    } == {"ChargeOps"}


def test_seed_makes_fleets_repeatable() -> None:
    def fingerprint(seed: int) -> list[tuple[Any, ...]]:
        fleet = build_fleet(FleetConfig("ws://127.0.0.1:1/ocpp", chargers=20, seed=seed, protocol="mixed"))
        out = []
        for cp in fleet:
            ev = EV.random(cp.rng, cp.dc)
            out.append(
                (cp.id, cp.dialect.version, len(cp.connectors), cp.max_power_w, cp.dc, ev.soc, ev.capacity_wh)
            )
        return out

    assert fingerprint(42) == fingerprint(42)
    assert fingerprint(42) != fingerprint(43)
