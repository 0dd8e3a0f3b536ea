"""OCPP 2.1 DER control against the real thing: chargeops on Postgres, real WebSockets, simulated
bidirectional (V2X) chargers speaking schema-strict OCPP 2.1 — the site planner capping discharge with
SetDERControl LimitMaxDischarge beside a 1.6 charger that keeps its charging profile, DER alarms raising and
clearing tickets, the operator's DER-control API, a simulated fleet with V2X chargers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import func, select

from chargeops.commands import (
    PLANNER_CONTROL_ID,
)
from chargeops.db.models import MeterSample, StoredEvent
from chargeops.db.ops_models import DischargeLimit, SiteTelemetry
from chargeops.events import utcnow
from firmware_stubs import EV, SimEnvironment, SimulatedCharger
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from ops.demo import seed_id_tokens
from tests.conftest import StartRuntime
from tests.site_stack import SITE, SiteStack, until

pytest_plugins = ("tests.site_stack",)
RATED_W = 10_000.0


async def _exported_since(stack: SiteStack, cp_id: str, since: Any) -> list[float]:
    async with stack.runtime.sessions() as s:
        rows = await s.scalars(
            select(MeterSample.value)
            .where(
                MeterSample.charger_id == cp_id,
                MeterSample.measurand == "Power.Active.Export",
                MeterSample.sampled_at > since,
            )
            .order_by(MeterSample.sampled_at)
        )
        return list(rows.all())


async def _cap(stack: SiteStack, cp_id: str) -> DischargeLimit | None:
    async with stack.runtime.sessions() as s:
        return await s.get(DischargeLimit, cp_id)


def _der_calls(cp: SimulatedCharger) -> list[dict[str, Any]]:
    return [p for action, p in cp.received_calls if action == "SetDERControl"]


async def test_planner_caps_v2x_discharge_with_der_control(site_stack: SiteStack) -> None:
    """Night, no storage: 3 kW of site load, a 5 kW export limit, a 10 kW bidirectional 2.1 charger whose EV
    offers 10 kW, a 1.6 charger beside it. The planner allows 5 + 3 = 8 kW of discharge: SetDERControl
    LimitMaxDischarge 80 %; the charger's measured discharge drops to 8 kW and the site exports ≤ 5 kW. The
    1.6 charger still gets its SetChargingProfile and no DER message. A higher export limit relaxes the cap
    to 100 %; removing the export limit clears it."""
    stack = site_stack
    body: dict[str, Any] = {"grid_export_limit_kw": 5, "pv_peak_kw": 20}
    await stack.site(30, **body)
    assert (await stack.api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
    v2x = await stack.charger("V2X-1", "ocpp2.1", max_power_w=11_000, max_discharge_w=RATED_W)
    old = await stack.charger("SITE16-1", "ocpp1.6")
    controller = stack.controller(
        discharging_w=lambda: sum(c.export_w for cp in stack.chargers for c in cp.connectors)
    )
    reporting = asyncio.create_task(controller.run())
    try:
        await until(
            lambda: stack.settled({v2x.id: 1300.0, old.id: 1300.0}), what="both chargers at the floor"
        )
        started = utcnow()
        await v2x.plug_in(1, "DRIVER1", ev=EV(capacity_wh=80_000, soc=90.0, discharge_w=RATED_W))

        async def capped(pct: float, watts: float) -> bool:
            cap = await _cap(stack, v2x.id)
            if cap is None or cap.status != "Accepted" or cap.pct != pct:
                return False
            measured = await _exported_since(stack, v2x.id, cap.sent_at)
            return len(measured) >= 3 and all(abs(w - watts) <= 1 for w in measured[-3:])

        await until(lambda: capped(80.0, 8000.0), 30, "discharge capped at 80 % = 8 kW")
        settled_at = utcnow()
        await asyncio.sleep(2.0)  # a few more reports and samples at the cap
        measured = await _exported_since(stack, v2x.id, settled_at)
        async with stack.runtime.sessions() as s:
            export_peak = -float(
                await s.scalar(
                    select(func.min(SiteTelemetry.grid_w)).where(
                        SiteTelemetry.site_id == SITE, SiteTelemetry.at > settled_at
                    )
                )
                or 0.0
            )
            uncapped = max(await _exported_since(stack, v2x.id, started))
        assert measured and max(measured) <= 8000.0 + 1e-6, measured
        assert export_peak <= 5000.0 + 1, export_peak
        assert _der_calls(v2x)[-1] == {
            "isDefault": True,
            "controlId": PLANNER_CONTROL_ID,
            "controlType": "LimitMaxDischarge",
            "limitMaxDischarge": {"pctMaxDischargePower": 80.0, "priority": 5},
        }
        assert {a for a, _ in old.received_calls} >= {"SetChargingProfile"}
        assert not any(a.endswith("DERControl") for a, _ in old.received_calls)
        assert await _cap(stack, old.id) is None
        power = (await stack.api.get(f"/api/sites/{SITE}/power")).json()
        assert power["discharge"]["allowance_w"] == 8000.0 and power["discharge"]["reason"] == "export_limit"
        assert power["discharge"]["caps"][0] | {"sent_at": None} == {
            "charger_id": v2x.id,
            "pct": 80.0,
            "rated_w": RATED_W,
            "status": "Accepted",
            "sent_at": None,
        }
        print(
            json.dumps(
                {
                    "der_test": "V2X 2.1 charger 10 kW, EV offers 10 kW, site load 3 kW, export limit 5 kW",
                    "discharge_before_cap_w": uncapped,
                    "der_control": "LimitMaxDischarge 80 %",
                    "measured_discharge_w": max(measured),
                    "samples_at_cap": len(measured),
                    "site_export_peak_w": export_peak,
                    "grid_export_limit_w": 5000,
                }
            )
        )

        await stack.site(30, **(body | {"grid_export_limit_kw": 20}))
        await until(lambda: capped(100.0, RATED_W), 30, "cap relaxed to 100 %")
        await stack.site(30, **(body | {"grid_export_limit_kw": None}))
        await until(lambda: _gone(stack, v2x.id), 30, "cap cleared")
        assert v2x.der_controls.controls == {}
        assert [a for a, _ in v2x.received_calls if a == "ClearDERControl"]
    finally:
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)


async def _gone(stack: SiteStack, cp_id: str) -> bool:
    return await _cap(stack, cp_id) is None


async def test_der_controls_api_start_stop_and_alarm_ticket(site_stack: SiteStack) -> None:
    """The operator's DER-control API against a simulated V2X 2.1 charger: a default cap it obeys, a
    scheduled control that starts and ends (NotifyDERStartStop), the list as the charger reports it, clearing,
    bad input refused with a JSON reason; a grid event trips the discharge, raises a ticket and clears it when
    it ends."""
    stack = site_stack
    api = stack.api
    await stack.site(30)
    assert (await api.put("/api/id-tokens/DRIVER1", json={"status": "Accepted"})).status_code == 201
    v2x = await stack.charger("V2X-2", "ocpp2.1", max_power_w=11_000, max_discharge_w=RATED_W)
    old = await stack.charger("SITE16-2", "ocpp1.6")
    url = f"/api/chargers/{v2x.id}/der-controls"

    async def exporting(watts: float) -> bool:
        return abs(v2x.connectors[1].export_w - watts) <= 1

    cap = {
        "control_id": "dso-cap",
        "control_type": "LimitMaxDischarge",
        "settings": {"pctMaxDischargePower": 50},
    }
    r = await api.post(url, json=cap)
    assert r.status_code == 201 and r.json() == {
        "charger_id": v2x.id,
        "control_id": "dso-cap",
        "status": "Accepted",
    }
    await v2x.plug_in(1, "DRIVER1", ev=EV(capacity_wh=80_000, soc=90.0, discharge_w=RATED_W))
    await until(lambda: exporting(5000.0), what="the EV discharging at 50 % of 10 kW")

    droop = {"overFreq": 50.2, "underFreq": 49.8, "overDroop": 5, "underDroop": 5, "responseTime": 1}
    start = utcnow() + timedelta(seconds=1)
    scheduled = {
        "control_id": "droop-1",
        "control_type": "FreqDroop",
        "is_default": False,
        "priority": 1,
        "start_time": start.isoformat(),
        "duration_s": 1.5,
        "settings": droop,
    }
    assert (await api.post(url, json=scheduled)).status_code == 201
    listed = (await api.get(url, params={"is_default": "false"})).json()["items"]
    assert listed == [
        {
            "control_id": "droop-1",
            "control_type": "FreqDroop",
            "is_default": False,
            "superseded": False,
            "priority": 1,
            "start_time": listed[0]["start_time"],
            "duration_s": 1.5,
            "settings": droop,
        }
    ]

    async def start_stop() -> list[tuple[str, bool]]:
        async with stack.runtime.sessions() as s:
            rows = await s.scalars(
                select(StoredEvent)
                .where(StoredEvent.charger_id == v2x.id, StoredEvent.kind == "der_control_start_stop")
                .order_by(StoredEvent.reported_at)
            )
            return [(e.data["control_id"], e.data["started"]) for e in rows.all()]

    await until(lambda: _equals(start_stop, [("droop-1", True), ("droop-1", False)]), 15, "droop-1 ran")

    r = await api.get(url, params={"control_type": "LimitMaxDischarge"})
    assert r.status_code == 200, r.text
    assert [(c["control_id"], c["is_default"], c["priority"], c["settings"]) for c in r.json()["items"]] == [
        ("dso-cap", True, 0, {"pctMaxDischargePower": 50})
    ]

    bad_inputs: list[tuple[dict[str, Any], int, str]] = [
        ({"control_type": "Bogus"}, 422, "invalid_request"),
        (cap | {"priority": -1}, 422, "invalid_request"),
        (cap | {"settings": {"pctMaxDischargePower": "half"}}, 422, "invalid_payload"),  # the 2.1 schema
        (cap | {"settings": {"pctMaxDischargePower": 150}}, 409, "der_control_rejected"),  # the charger
        (scheduled | {"start_time": None}, 409, "der_control_rejected"),
        ({"control_type": "VoltVar", "settings": {"yUnit": "PctMaxVar", "curveData": [{"x": 1, "y": 2}]}},
         409, "der_not_supported"),
    ]  # fmt: skip
    for body, status, code in bad_inputs:
        r = await api.post(url, json=body)
        assert r.status_code == status and r.json()["error"] == code, (body, r.text)
        assert set(r.json()) >= {"error", "detail"}
    r = await api.post(f"/api/chargers/{old.id}/der-controls", json=cap)
    assert r.status_code == 409 and r.json()["error"] == "der_not_supported", r.text
    assert "2.1" in r.json()["detail"]
    assert (await api.post("/api/chargers/NOPE/der-controls", json=cap)).status_code == 404

    r = await api.delete(f"{url}/dso-cap")
    assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
    await until(lambda: exporting(RATED_W), what="the cap gone: full discharge again")
    assert (await api.get(url, params={"control_type": "LimitMaxDischarge"})).json()["items"] == []
    again = await api.delete(f"{url}/dso-cap")
    assert again.status_code == 404 and again.json()["error"] == "not_found"

    alarms = {"control_type": "HVMustTrip", "grid_event_fault": "OverVoltage"}
    before = REGISTRY.get_sample_value("chargeops_der_alarms_total", alarms) or 0.0
    v2x.grid_event("OverVoltage")
    await until(lambda: exporting(0.0), what="discharge tripped")

    async def ticket() -> dict[str, Any] | None:
        items = (await api.get("/api/tickets", params={"charger_id": v2x.id})).json()["items"]
        return next((t for t in items if t["rule"] == "der-grid-alarm"), None)

    await until(lambda: _has(ticket), 15, "a ticket for the DER alarm")
    raised = await ticket()
    assert raised is not None and raised["status"] == "open" and raised["cleared_at"] is None
    assert raised["fault"]["code"] == "OverVoltage" and raised["fault"]["component"] == "HVMustTrip"
    assert REGISTRY.get_sample_value("chargeops_der_alarms_total", alarms) == before + 1
    v2x.end_grid_event("OverVoltage")
    await until(lambda: _cleared(ticket), 15, "the ticket cleared by alarmEnded")
    await until(lambda: exporting(RATED_W), what="discharge resumed")
    assert (
        REGISTRY.get_sample_value("chargeops_der_alarms_total", alarms) == before + 1
    )  # endings not counted


async def _equals(get: Callable[[], Awaitable[Any]], expected: Any) -> bool:
    return await get() == expected


async def _has(get: Callable[[], Awaitable[Any]]) -> bool:
    return await get() is not None


async def _cleared(get: Callable[[], Awaitable[dict[str, Any] | None]]) -> bool:
    found = await get()
    return found is not None and found["cleared_at"] is not None


async def test_fleet_runs_v2x_chargers(start_runtime: StartRuntime) -> None:
    """`chargeops simulate --protocol ocpp2.1 --v2x-chargers 2`: ordinary 2.1 chargers and bidirectional ones
    boot, charge, discharge and raise grid events against chargeops with zero schema violations and no
    CALLERROR (the gateway takes NotifyDERAlarm)."""
    runtime = await start_runtime(accept_unknown=True)
    assert runtime.gateway is not None
    await seed_id_tokens(runtime, SimEnvironment().id_tags)
    config = FleetConfig(
        csms_url=f"ws://127.0.0.1:{runtime.gateway.port}/ocpp",
        chargers=1,
        protocol="ocpp2.1",
        v2x_chargers=2,
        duration=4.0,
        time_scale=600.0,
        session_rate=0.0,
        sample_interval=1.0,
        strict=True,
        seed=3,
    )
    fleet = build_fleet(config)
    assert [(cp.id, cp.dialect.subprotocol, cp.max_discharge_w > 0) for cp in fleet] == [
        ("SIM00000", "ocpp2.1", False),
        ("V2X00000", "ocpp2.1", True),
        ("V2X00001", "ocpp2.1", True),
    ]
    running = asyncio.create_task(run_fleet(config, fleet))
    _, giving, tripping = fleet
    await giving.wait_until_accepted(5)
    await tripping.wait_until_accepted(5)
    await giving.plug_in(1, "SIMTAG0000", ev=EV(soc=80.0, discharge_w=giving.max_discharge_w))
    tripping.grid_event("UnderFrequency", clear_after=60.0)
    result = await running
    assert result.schema_violations == [] and result.errors == 0, result
    assert result.boots_accepted == 3 and result.sessions_started == 1 and result.energy_exported_wh > 0
    async with runtime.sessions() as s:
        query = (
            select(StoredEvent.data).where(StoredEvent.kind == "der_alarm").order_by(StoredEvent.reported_at)
        )
        alarms = (await s.scalars(query)).all()
    assert [(a["control_type"], a["grid_event_fault"], a["ended"]) for a in alarms] == [
        ("LFMustTrip", "UnderFrequency", False),
        ("LFMustTrip", "UnderFrequency", True),
    ]
