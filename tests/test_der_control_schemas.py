"""OCPP 2.1 DER payloads against the 2.1 schemas: what chargeops sends (SetDERControl and the neutral DER
actions per version), what the simulated charger reports and how it applies priorities, supersedes and
schedules, the gateway reading DER reports as the schema spells them (not as the `ocpp` library does), the
discharge allowance arithmetic and DER alarm observations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.v21 import call
from ocpp.v21.datatypes import FixedPFGetType, FixedPFType
from sqlalchemy import select

from chargeops.commands import (
    CLEAR_DER_CONTROL,
    DER_CONTROL_TYPES,
    GET_DER_CONTROLS,
    PLANNER_CONTROL_ID,
    SET_DER_CONTROL,
    SET_DISCHARGE_LIMIT,
)
from chargeops.db.models import StoredEvent
from chargeops.db.ops_models import Site, SiteTelemetry
from chargeops.events import DerAlarm, Event, utcnow
from firmware_stubs.der import DerControls
from ocpp_gateway.commands import Unsupported, to_ocpp
from ocpp_gateway.der import SETTING_FIELD, reported_controls
from ocpp_gateway.rpc import RpcError, validate
from ocpp_gateway.versions import V16, V21, V201
from ops.rules import load_rules, observations
from ops.site_discharge import V2xCharger, discharge_allowance, discharge_caps
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.site_stack import SITE, until

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
