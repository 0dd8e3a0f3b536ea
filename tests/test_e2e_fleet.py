"""The whole stack over the wire: simulated 1.6 and 2.0.1 firmware (strict: it validates everything it sends
and receives against the official schemas) against a running chargeops, driven through the operator API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chargeops.db.models import MeterSample, StoredEvent
from firmware_stubs import EV, SimEnvironment, SimulatedCharger
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.csms_payloads import V16_CALLS, V201_CALLS
from tests.ocpp_client import raw_charger
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}
PROTOCOLS = ["ocpp1.6", "ocpp2.0.1"]


class Stack:
    """A running chargeops with an HTTP client and helpers to make simulated chargers."""

    def __init__(self, runtime: Runtime, api: httpx.AsyncClient):
        self.runtime = runtime
        self.api = api
        self.chargers: list[SimulatedCharger] = []
        self.env = SimEnvironment(
            strict=True,
            time_scale=120.0,
            sample_interval=0.5,
            reboot_delay=0.2,
            firmware_step=0.1,
            backoff_base=0.2,
            backoff_cap=1.0,
            call_timeout=10.0,
        )

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.runtime.gateway.port}/ocpp"  # type: ignore[union-attr]

    async def charger(
        self, cp_id: str, protocol: str, *, connectors: int = 2, password: str = "sim-password-1234"
    ) -> SimulatedCharger:
        r = await self.api.post("/api/chargers", json={"id": cp_id, "password": password, "site": "north"})
        assert r.status_code == 201, r.text
        cp = SimulatedCharger(
            cp_id,
            self.ocpp_url,
            protocol=protocol,
            password=password,
            connectors=connectors,
            env=self.env,
            max_power_w=22_000.0,
        )
        self.chargers.append(cp)
        await cp.start()
        await cp.wait_until_accepted(10)
        return cp

    async def command(
        self, cp_id: str, action: str, payload: dict[str, Any], **params: Any
    ) -> httpx.Response:
        return await self.api.post(f"/api/chargers/{cp_id}/ocpp/{action}", json=payload, params=params)

    async def events(self, cp_id: str, kind: str) -> list[dict[str, Any]]:
        async with self.runtime.sessions() as session:
            rows = await session.execute(
                select(StoredEvent.data).where(StoredEvent.charger_id == cp_id, StoredEvent.kind == kind)
            )
            return list(rows.scalars())


@pytest.fixture
async def stack(start_runtime: StartRuntime) -> AsyncIterator[Stack]:
    runtime = await start_runtime(call_timeout=10.0, allow_private_urls=True)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        s = Stack(runtime, api)
        yield s
        for cp in s.chargers:
            await cp.stop()
        for cp in s.chargers:
            assert cp.schema_violations == [], cp.schema_violations


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_boot_session_and_energy(stack: Stack, protocol: str) -> None:
    cp_id = "E2E-TX-" + protocol[-3:].replace(".", "")
    assert (await stack.api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
    cp = await stack.charger(cp_id, protocol)
    charger = (await stack.api.get(f"/api/chargers/{cp_id}")).json()
    assert charger["connected"] and charger["protocol"] == protocol and charger["vendor"] == "ChargeOps"
    await cp.plug_in(1, "DRIVER1", ev=EV(capacity_wh=60_000, soc=40.0, max_power_w=11_000))
    await until(lambda: cp.transaction(1) is not None and cp.connectors[1].meter_wh > 200, 15)
    active = (await stack.api.get("/api/transactions", params={"charger_id": cp_id, "active": "true"})).json()
    assert len(active["items"]) == 1
    await asyncio.sleep(1.2)  # a few periodic samples
    await cp.unplug(1)
    await until(lambda: cp.transaction(1) is None and cp.queued == 0, 10)

    async def ended() -> dict[str, Any]:
        items = (await stack.api.get("/api/transactions", params={"charger_id": cp_id})).json()["items"]
        return items[0]

    for _ in range(50):
        tx = await ended()
        if not tx["active"]:
            break
        await asyncio.sleep(0.1)
    assert not tx["active"] and tx["id_token"] == "DRIVER1" and tx["stop_reason"] == "EVDisconnected"
    # 1.6's meterStop is whole Wh (the simulator truncates), its register samples carry 0.1 Wh: billing takes
    # the last plausible reading, which may be the sample just before the stop, up to 1 Wh above meterStop
    assert tx["energy_wh"] == pytest.approx(tx["meter_stop_wh"] - tx["meter_start_wh"], abs=1.0)
    assert tx["energy_wh"] > 200
    async with stack.runtime.sessions() as session:
        measurands = set(
            (
                await session.execute(select(MeterSample.measurand).where(MeterSample.charger_id == cp_id))
            ).scalars()
        )
    assert {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
        "SoC",
    } <= measurands


async def test_unknown_token_gets_no_charge(stack: Stack) -> None:
    cp = await stack.charger("E2E-BADTAG", "ocpp1.6")
    await cp.plug_in(1, "STRANGER")
    await until(lambda: bool(cp.received_calls) or cp.status(1) != "Available", 5)
    await asyncio.sleep(0.5)
    assert cp.transaction(1) is None
    auth = await stack.events("E2E-BADTAG", "authorization")
    assert auth and auth[-1]["status"] == "Invalid"


@pytest.mark.parametrize(("protocol", "calls"), [("ocpp1.6", V16_CALLS), ("ocpp2.0.1", V201_CALLS)])
async def test_every_operator_command_reaches_the_charger(
    stack: Stack, protocol: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    cp_id = "E2E-CMD-" + protocol[-3:].replace(".", "")
    cp = await stack.charger(cp_id, protocol)
    for action, payload in calls:
        r = await stack.command(cp_id, action, payload)
        assert r.status_code == 200, (action, r.status_code, r.text)
        assert isinstance(r.json()["response"], dict)
    seen = {c[0] if isinstance(c, tuple | list) else c for c in cp.received_calls}
    assert seen, "the simulator recorded no CSMS calls"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_commands_have_real_effects(stack: Stack, protocol: str) -> None:
    cp_id = "E2E-FX-" + protocol[-3:].replace(".", "")
    await stack.api.put("/api/id-tokens/REMOTE1", json={"status": "Accepted"})
    cp = await stack.charger(cp_id, protocol)
    v16 = protocol == "ocpp1.6"
    # remote start starts a session, remote stop ends it
    start = (
        ("RemoteStartTransaction", {"connectorId": 2, "idTag": "REMOTE1"})
        if v16
        else (
            "RequestStartTransaction",
            {"evseId": 2, "remoteStartId": 7, "idToken": {"idToken": "REMOTE1", "type": "ISO14443"}},
        )
    )
    assert (await stack.command(cp_id, *start)).json()["response"]["status"] == "Accepted"
    await until(lambda: cp.transaction(2) is not None, 10)
    await until(lambda: cp.queued == 0, 10)
    await asyncio.sleep(0.2)
    active = (
        await stack.api.get("/api/transactions", params={"charger_id": cp_id, "active": "true"})
    ).json()["items"]
    assert len(active) == 1
    tx_id = active[0]["transaction_id"]
    stop = (
        ("RemoteStopTransaction", {"transactionId": int(tx_id)})
        if v16
        else ("RequestStopTransaction", {"transactionId": tx_id})
    )
    assert (await stack.command(cp_id, *stop)).json()["response"]["status"] == "Accepted"
    await until(lambda: cp.transaction(2) is None, 10)
    # configuration changes behaviour
    if v16:
        r = await stack.command(cp_id, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "77"})
        assert r.json()["response"]["status"] == "Accepted"
        conf = (await stack.command(cp_id, "GetConfiguration", {"key": ["HeartbeatInterval"]})).json()[
            "response"
        ]
        assert conf["configurationKey"][0]["value"] == "77"
    else:
        var = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
        r = await stack.command(cp_id, "SetVariables", {"setVariableData": [{**var, "attributeValue": "77"}]})
        assert r.json()["response"]["setVariableResult"][0]["attributeStatus"] == "Accepted"
        got = (await stack.command(cp_id, "GetVariables", {"getVariableData": [var]})).json()["response"]
        assert got["getVariableResult"][0]["attributeValue"] == "77"
    # reset reboots: a new BootNotification arrives
    boots = len(await stack.events(cp_id, "booted"))
    reset = {"type": "Soft"} if v16 else {"type": "Immediate"}
    assert (await stack.command(cp_id, "Reset", reset)).json()["response"]["status"] == "Accepted"
    await until(lambda: cp.boots_accepted >= 2, 10)
    await asyncio.sleep(0.3)
    assert len(await stack.events(cp_id, "booted")) > boots


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_firmware_update_and_log_upload(stack: Stack, protocol: str) -> None:
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # firmware image
            body = b"firmware-image"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # diagnostics / log upload
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        do_PUT = do_POST

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        cp_id = "E2E-FW-" + protocol[-3:].replace(".", "")
        cp = await stack.charger(cp_id, protocol)
        v16 = protocol == "ocpp1.6"
        soon = "2020-01-01T00:00:00Z"
        fw = (
            ("UpdateFirmware", {"location": f"{base}/2.0.0.bin", "retrieveDate": soon})
            if v16
            else (
                "UpdateFirmware",
                {"requestId": 11, "firmware": {"location": f"{base}/2.0.0.bin", "retrieveDateTime": soon}},
            )
        )
        assert (await stack.command(cp_id, *fw)).status_code == 200
        await until(lambda: cp.firmware_version == "2.0.0" and cp.accepted, 15)
        await asyncio.sleep(0.3)
        statuses = [e["status"] for e in await stack.events(cp_id, "firmware_status")]
        assert {"Downloading", "Downloaded", "Installing", "Installed"} <= set(statuses)
        charger = (await stack.api.get(f"/api/chargers/{cp_id}")).json()
        assert charger["firmware_version"] == "2.0.0"
        log = (
            ("GetDiagnostics", {"location": f"{base}/upload"})
            if v16
            else (
                "GetLog",
                {"logType": "DiagnosticsLog", "requestId": 12, "log": {"remoteLocation": f"{base}/upload"}},
            )
        )
        assert (await stack.command(cp_id, *log)).status_code == 200
        await until(lambda: bool(received), 10)
        await asyncio.sleep(0.3)
        assert "Uploaded" in [e["status"] for e in await stack.events(cp_id, "log_status")]
    finally:
        server.shutdown()


async def test_private_urls_are_refused_unless_allowed(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
        await api.post("/api/chargers", json={"id": "CP-URL"})
        async with raw_charger(runtime.gateway.port, "CP-URL") as cp:  # type: ignore[union-attr]
            await cp.boot()
            for url in (
                "http://127.0.0.1/fw.bin",
                "http://10.1.2.3/fw.bin",
                "http://169.254.169.254/latest",
                "http://localhost/x",
                "http://[::1]/x",
                "file:///etc/passwd",
            ):
                r = await api.post(
                    "/api/chargers/CP-URL/ocpp/UpdateFirmware",
                    json={"location": url, "retrieveDate": "2026-01-01T00:00:00Z"},
                )
                assert r.status_code == 422 and r.json()["error"] == "url_refused", (url, r.text)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_queued_transaction_messages_arrive_after_reconnect(stack: Stack, protocol: str) -> None:
    cp_id = "E2E-Q-" + protocol[-3:].replace(".", "")
    await stack.api.put("/api/id-tokens/DRIVER2", json={"status": "Accepted"})
    cp = await stack.charger(cp_id, protocol)
    await cp.plug_in(1, "DRIVER2", ev=EV(capacity_wh=50_000, soc=30.0, max_power_w=11_000))
    await until(
        lambda: cp.transaction(1) is not None and cp.queued == 0 and cp.connectors[1].meter_wh > 100, 15
    )
    await cp.drop_connection(offline_for=1.5)
    await asyncio.sleep(0.6)  # samples taken while offline are queued
    await cp.unplug(1)
    assert cp.queued > 0
    await until(lambda: cp.accepted and cp.queued == 0, 15)
    await asyncio.sleep(0.3)
    items = (await stack.api.get("/api/transactions", params={"charger_id": cp_id})).json()["items"]
    assert len(items) == 1
    tx = items[0]
    assert not tx["active"] and tx["energy_wh"] == pytest.approx(tx["meter_stop_wh"] - tx["meter_start_wh"])
    if protocol == "ocpp2.0.1":
        updates = await stack.events(cp_id, "transaction_updated")
        assert any(u["offline"] for u in updates)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_faults_are_reported_and_visible(stack: Stack, protocol: str) -> None:
    cp_id = "E2E-F-" + protocol[-3:].replace(".", "")
    cp = await stack.charger(cp_id, protocol)
    cp.inject_fault(1, "GroundFailure", vendor_code="GF-17")
    await until(lambda: cp.queued == 0, 5)
    await asyncio.sleep(0.3)
    faults = await stack.events(cp_id, "fault_reported")
    assert faults and not faults[-1]["cleared"]
    charger = (await stack.api.get(f"/api/chargers/{cp_id}")).json()
    statuses = {c["status"] for c in charger["connectors"]}
    assert "Faulted" in statuses and charger["status"] == "Faulted"
    cp.clear_fault(1)
    await until(lambda: cp.queued == 0, 5)
    await asyncio.sleep(0.3)
    charger = (await stack.api.get(f"/api/chargers/{cp_id}")).json()
    assert "Faulted" not in {c["status"] for c in charger["connectors"]}


async def test_command_outcomes_over_the_wire(start_runtime: StartRuntime) -> None:
    """404 unknown, 409 offline, 422 invalid, 502 CALLERROR, 504 silence — with a raw charger we control."""
    runtime = await start_runtime(call_timeout=1.0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
        await api.post("/api/chargers", json={"id": "CP-RAW"})
        assert (await api.post("/api/chargers/NOPE/ocpp/Reset", json={"type": "Soft"})).status_code == 404
        assert (await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Soft"})).status_code == 409
        async with raw_charger(runtime.gateway.port, "CP-RAW") as cp:  # type: ignore[union-attr]
            await cp.boot()
            r = await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Sideways"})
            assert r.status_code == 422 and r.json()["ocpp_error"] == "PropertyConstraintViolation"
            r = await api.post("/api/chargers/CP-RAW/ocpp/RequestStartTransaction", json={})
            assert r.status_code == 422  # a 2.0.1 action on a 1.6 charger

            async def answer(frame_for: Callable[[list[Any]], list[Any] | None]) -> None:
                call = await cp.recv()
                reply = frame_for(call)
                if reply is not None:
                    await cp.ws.send(json.dumps(reply))

            task = asyncio.create_task(answer(lambda c: [4, c[1], "InternalError", "relay stuck", {"x": 1}]))
            r = await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Soft"})
            await task
            assert r.status_code == 502 and r.json()["ocpp_error"] == "InternalError"
            task = asyncio.create_task(answer(lambda c: None))
            r = await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Soft"})
            await task
            assert r.status_code == 504
            task = asyncio.create_task(answer(lambda c: [3, c[1], {"status": "Maybe"}]))
            r = await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Soft"})
            await task
            assert r.status_code == 502 and r.json()["error"] == "invalid_charger_response"
            task = asyncio.create_task(answer(lambda c: [3, c[1], {"status": "Accepted"}]))
            r = await api.post("/api/chargers/CP-RAW/ocpp/Reset", json={"type": "Hard"})
            await task
            assert r.status_code == 200 and r.json() == {"response": {"status": "Accepted"}}
