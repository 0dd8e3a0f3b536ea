"""OCPP 2.1 DER control against the real thing: chargeops on Postgres, real WebSockets, simulated
bidirectional (V2X) chargers speaking schema-strict OCPP 2.1 — the site planner capping discharge with
SetDERControl LimitMaxDischarge beside a 1.6 charger that keeps its charging profile, DER alarms raising and
clearing tickets, the operator's DER-control API, and the DER payloads both sides build against the 2.1
schemas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.v21 import call
from ocpp.v21.datatypes import FixedPFGetType, FixedPFType
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from chargeops.commands import (
    CLEAR_DER_CONTROL,
    DER_CONTROL_TYPES,
    GET_DER_CONTROLS,
    PLANNER_CONTROL_ID,
    SET_DER_CONTROL,
    SET_DISCHARGE_LIMIT,
)
from chargeops.db.models import MeterSample, StoredEvent
from chargeops.db.ops_models import DischargeLimit, Site, SiteTelemetry
from chargeops.events import DerAlarm, Event, utcnow
from firmware_stubs import EV, SimEnvironment, SimulatedCharger
from firmware_stubs.der import DerControls
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from ocpp_gateway.commands import Unsupported, to_ocpp
from ocpp_gateway.der import SETTING_FIELD, reported_controls
from ocpp_gateway.rpc import RpcError, validate
from ocpp_gateway.versions import V16, V21, V201
from ops.demo import seed_id_tokens
from ops.rules import load_rules, observations
from ops.site_discharge import V2xCharger, discharge_allowance, discharge_caps
from tests import test_site_power
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.test_site_power import SITE, SiteStack, until

site_stack = test_site_power.site_stack  # the running chargeops with a site, as the site tests use it
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


FIXED_PF = {"priority": 2, "displacement": 0.95, "excitation": True}
NEUTRAL_CONTROLS: list[dict[str, Any]] = [
    {"control_id": "a", "control_type": "LimitMaxDischarge", "settings": {"pctMaxDischargePower": 40}},
    {"control_id": "b", "control_type": "FixedPFAbsorb", "priority": 2, "settings": FIXED_PF},
    {"control_id": "c", "control_type": "FixedPFInject", "is_default": False,
     "start_time": "2030-01-01T00:00:00Z", "duration_s": 600, "settings": FIXED_PF},
    {"control_id": "d", "control_type": "VoltWatt",
     "settings": {"yUnit": "PctMaxW", "curveData": [{"x": 106, "y": 100}, {"x": 110, "y": 0}]}},
    {"control_id": "e", "control_type": "Gradients", "settings": {"gradient": 10, "softGradient": 5}},
]  # fmt: skip


@pytest.mark.parametrize("neutral", NEUTRAL_CONTROLS, ids=lambda c: c["control_type"])
def test_der_payloads_are_what_the_21_schema_says(neutral: dict[str, Any]) -> None:
    """Every SetDERControl we send validates against the 2.1 schema and carries its setting under the
    schema's own name; the `ocpp` 2.1.0 library's snake→camel conversion would misspell the fixedPF ones."""
    action, payload = to_ocpp(V21, SET_DER_CONTROL, neutral)
    assert action == "SetDERControl"
    validate(V21, action, payload, response=False, unique_id="t")
    field = {"FixedPFAbsorb": "fixedPFAbsorb", "FixedPFInject": "fixedPFInject", "VoltWatt": "curve"}.get(
        neutral["control_type"], neutral["control_type"][0].lower() + neutral["control_type"][1:].rstrip("s")
    )
    assert set(payload) == {"isDefault", "controlId", "controlType", field}
    assert payload[field]["priority"] == neutral.get("priority", 0)
    library = snake_to_camel_case({"fixed_pf_absorb": FIXED_PF, "fixed_pf_inject": FIXED_PF, "fixed_pf": 1})
    assert set(library) == {"fixedPfAbsorb", "fixedPfInject", "fixedPf"}  # what ocpp 2.1.0 would write
    wrong = {k: v for k, v in payload.items() if k not in ("fixedPFAbsorb", "fixedPFInject")}
    if field.startswith("fixedPF"):
        with pytest.raises(RpcError):
            validate(
                V21,
                action,
                wrong | {field.replace("PF", "Pf"): payload[field]},
                response=False,
                unique_id="t",
            )


def test_neutral_der_actions_per_version() -> None:
    assert to_ocpp(V21, SET_DISCHARGE_LIMIT, {"pct": 80}) == (
        "SetDERControl",
        {
            "isDefault": True,
            "controlId": PLANNER_CONTROL_ID,
            "controlType": "LimitMaxDischarge",
            "limitMaxDischarge": {"pctMaxDischargePower": 80.0, "priority": 5},
        },
    )
    assert to_ocpp(V21, CLEAR_DER_CONTROL, {"control_id": "x"}) == (
        "ClearDERControl",
        {"isDefault": True, "controlId": "x"},
    )
    assert to_ocpp(V21, GET_DER_CONTROLS, {"request_id": 7, "control_type": "LimitMaxDischarge"}) == (
        "GetDERControl",
        {"requestId": 7, "controlType": "LimitMaxDischarge"},
    )
    for action, payload in (
        ("ClearDERControl", {"isDefault": True, "controlId": "x"}),
        ("GetDERControl", {"requestId": 7, "controlType": "LimitMaxDischarge"}),
    ):
        validate(V21, action, payload, response=False, unique_id="t")
    for bad in ({}, {"pct": -1}, {"pct": 101}, {"pct": "80"}, {"pct": True}):
        with pytest.raises(ValueError):
            to_ocpp(V21, SET_DISCHARGE_LIMIT, bad)
    with pytest.raises(ValueError):
        to_ocpp(V21, SET_DER_CONTROL, {"control_type": "Bogus"})
    for version in (V16, V201):
        with pytest.raises(Unsupported):
            to_ocpp(version, SET_DISCHARGE_LIMIT, {"pct": 50})
    # the kernel's control types (what ops may ask for) are the 2.1 schema's
    assert set(SETTING_FIELD) == DER_CONTROL_TYPES


def test_simulated_charger_reports_what_the_21_schema_says() -> None:
    """What the simulated V2X charger sends back (its SetDERControl answers, a ReportDERControl with every
    kind of control) validates against the 2.1 schema, and the gateway reads the report back unchanged."""
    now = utcnow()
    controls = DerControls()
    for neutral in NEUTRAL_CONTROLS:
        _, payload = to_ocpp(V21, SET_DER_CONTROL, neutral)
        answer = controls.set(payload, now)
        expected = "NotSupported" if neutral["control_type"].startswith("FixedPF") else "Accepted"
        assert answer["status"] == expected, (neutral, answer)
        validate(V21, "SetDERControl", answer, response=True, unique_id="t")
    report = controls.report(11, list(controls.controls.values()))
    validate(V21, "ReportDERControl", report, response=False, unique_id="t")
    assert {(c["control_id"], c["control_type"], c["settings"].get("pctMaxDischargePower")) for c in
            reported_controls(report)} == {("a", "LimitMaxDischarge", 40), ("d", "VoltWatt", None),
                                           ("e", "Gradients", None)}  # fmt: skip
    fixed = {"requestId": 1, "fixedPFAbsorb": [{"id": "f", "isDefault": True, "isSuperseded": False,
                                                "fixedPF": FIXED_PF}]}  # fmt: skip
    validate(V21, "ReportDERControl", fixed, response=False, unique_id="t")
    assert reported_controls(fixed)[0]["control_type"] == "FixedPFAbsorb"
    with pytest.raises(RpcError):  # the library's spelling is refused, never read half
        validate(V21, "ReportDERControl", {"requestId": 1, "fixedPfAbsorb": fixed["fixedPFAbsorb"]},
                 response=False, unique_id="t")  # fmt: skip


def test_simulated_der_controls_priority_supersede_and_schedule() -> None:
    now = utcnow()
    controls = DerControls()

    def cap(control_id: str, pct: float, priority: int, **schedule: Any) -> dict[str, Any]:
        neutral = {"control_id": control_id, "control_type": "LimitMaxDischarge", "priority": priority,
                   "settings": {"pctMaxDischargePower": pct}, **schedule}  # fmt: skip
        payload = to_ocpp(V21, SET_DER_CONTROL, neutral)[1]
        return controls.set(payload, now)

    assert cap("planner", 80, 5) == {"status": "Accepted"}
    assert controls.max_discharge_pct(now) == 80
    assert cap("dso", 30, 0) == {"status": "Accepted", "supersededIds": ["planner"]}
    assert controls.max_discharge_pct(now) == 30
    window = {"is_default": False, "start_time": (now + timedelta(seconds=10)).isoformat(), "duration_s": 60}
    assert cap("evening", 10, 1, **window)["status"] == "Accepted"
    assert controls.transitions(now) == [] and controls.max_discharge_pct(now) == 30
    later = now + timedelta(seconds=11)
    assert [(c.id, started) for c, started in controls.transitions(later)] == [("evening", True)]
    assert controls.max_discharge_pct(later) == 10  # a running scheduled control overrides the defaults
    end = now + timedelta(seconds=71)
    assert [(c.id, started) for c, started in controls.transitions(end)] == [("evening", False)]
    assert "evening" not in controls.controls and controls.max_discharge_pct(end) == 30
    assert cap("bad", 150, 0)["status"] == "Rejected"
    assert (
        cap("late", 50, 0, is_default=False, start_time=now.isoformat(), duration_s=0.0)["status"]
        == "Rejected"
    )
    assert controls.report(1, list(controls.controls.values()))["limitMaxDischarge"] == [
        {"id": "planner", "isDefault": True, "isSuperseded": True, "limitMaxDischarge": ANY},
        {"id": "dso", "isDefault": True, "isSuperseded": False, "limitMaxDischarge": ANY},
    ]
    assert [c.id for c in controls.clear({"isDefault": True, "controlId": "dso"})] == ["dso"]
    assert controls.max_discharge_pct(end) == 80  # the planner's default is back in effect
    assert [c.id for c in controls.clear({"isDefault": True, "controlType": "LimitMaxDischarge"})] == [
        "planner"
    ]
    assert controls.max_discharge_pct(end) is None


def test_discharge_allowance_and_caps() -> None:
    now = utcnow()
    site = Site(id=SITE, name="s", grid_export_limit_kw=5, pv_peak_kw=20, storage_max_kw=10)
    night = SiteTelemetry(site_id=SITE, at=now, pv_w=0, load_w=3000, storage_w=-2000)
    age = timedelta(minutes=3)
    # 5 kW export + 3 kW load + 1 kW charging − 2 kW the storage already gives
    assert discharge_allowance(site, night, now, 1000, age).watts == 7000
    sunny = SiteTelemetry(site_id=SITE, at=now, pv_w=9000, load_w=3000)
    assert discharge_allowance(site, sunny, now, 4000, age) == discharge_allowance(site, sunny, now, 0, age)
    assert discharge_allowance(site, sunny, now, 0, age).reason == "pv_surplus"
    stale = SiteTelemetry(site_id=SITE, at=now - timedelta(minutes=10), pv_w=0, load_w=3000)
    assert discharge_allowance(site, stale, now, 0, age).watts == 0  # 5 kW − 20 kW PV − 10 kW storage
    unlimited = Site(id=SITE, name="s")
    assert discharge_allowance(unlimited, night, now, 0, age).watts is None
    allowance = discharge_allowance(site, night, now, 1000, age)
    chargers = [
        V2xCharger("big", True, 1, 10_000.0),
        V2xCharger("small", True, 1, 2000.0),
        V2xCharger("idle", True, 0, 10_000.0),
    ]
    # 7 kW: the small one takes its whole 2 kW, the big one the remaining 5 kW (50 %), the idle one 0 %
    assert discharge_caps(allowance, chargers) == {"small": 100.0, "big": 50.0, "idle": 0.0}


def test_der_alarm_observations() -> None:
    raised = Event("V2X-9", DerAlarm("HVMustTrip", "OverVoltage", extra_info="253 V"))
    ended = Event("V2X-9", DerAlarm("HVMustTrip", "OverVoltage", ended=True))
    book = load_rules()
    (obs,) = observations(raised)
    assert (obs.event, obs.code, obs.component, obs.cleared) == (
        "der_alarm",
        "OverVoltage",
        "HVMustTrip",
        False,
    )
    assert book.match(obs) is not None and book.match(obs).id == "der-grid-alarm"  # type: ignore[union-attr]
    assert observations(ended)[0].cleared


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


async def test_gateway_reads_der_reports_as_the_schema_spells_them(start_runtime: StartRuntime) -> None:
    """Over a real WebSocket: a ReportDERControl as the `ocpp` 2.1.0 dataclasses put it on the wire
    (`fixedPfAbsorb`, `fixedPf`) breaks the schema and is answered with a CALLERROR, never stored half-read;
    spelled as the schema says, it is stored as a neutral event. A 2.0.1 charger has no DER messages."""
    runtime = await start_runtime(accept_unknown=True)
    assert runtime.gateway is not None
    setting = FixedPFType(displacement=0.95, excitation=True, priority=1)
    library = call.ReportDERControl(
        request_id=41, fixed_pf_absorb=[FixedPFGetType(setting, "pf-1", is_default=True, is_superseded=False)]
    )
    wire = remove_nones(snake_to_camel_case(asdict(library)))
    assert "fixedPfAbsorb" in wire and "fixedPf" in wire["fixedPfAbsorb"][0], (
        wire
    )  # the bug, as of ocpp 2.1.0
    async with raw_charger(runtime.gateway.port, "V2X-RAW", "ocpp2.1") as cp:
        await cp.boot()
        frame = await cp.call("ReportDERControl", wire)
        assert frame[0] == 4 and frame[2] in ("OccurrenceConstraintViolation", "FormatViolation"), frame
        entry = {"id": "pf-1", "isDefault": True, "isSuperseded": False, "fixedPF": FIXED_PF}
        assert await cp.result("ReportDERControl", {"requestId": 42, "fixedPFAbsorb": [entry]}) == {}
        missing = await cp.call("NotifyDERAlarm", {"controlType": "HVMustTrip"})  # no timestamp
        assert missing[0] == 4, missing
    async with raw_charger(runtime.gateway.port, "OLD-RAW", "ocpp2.0.1") as cp:
        await cp.boot()
        alarm = {"controlType": "HVMustTrip", "timestamp": utcnow().isoformat()}
        assert (await cp.call("NotifyDERAlarm", alarm))[:3] == [4, "m2", "NotImplemented"]

    async def reports() -> list[Any]:
        async with runtime.sessions() as s:
            query = select(StoredEvent.data).where(StoredEvent.kind == "der_controls_reported")
            return list((await s.scalars(query)).all())

    await until(lambda: _has_items(reports), what="the report stored")
    [stored] = await reports()
    assert stored["request_id"] == 42 and [
        (c["control_id"], c["control_type"], c["settings"]) for c in stored["controls"]
    ] == [("pf-1", "FixedPFAbsorb", {"displacement": 0.95, "excitation": True})]


async def _has_items(get: Callable[[], Awaitable[list[Any]]]) -> bool:
    return bool(await get())
