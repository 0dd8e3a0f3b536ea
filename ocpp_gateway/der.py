"""OCPP 2.1 DER control (part 2, functional block R) in version-neutral words, both ways.

Ops (the site planner, the operator API) never build an OCPP payload; they send these bus actions, which the
session holding the charger turns into its version's call (only 2.1 has DER control: on 1.6 / 2.0.1 they
are refused with `NotSupported` before anything is sent):

* `chargeops.SetDerControl` `{"control_id", "control_type", "is_default", "priority", "start_time"?,
  "duration_s"?, "settings": {...}}` → SetDERControl; `settings` are the control's own parameters as the
  standard names them (e.g. `{"pctMaxDischargePower": 40}`, or `{"yUnit", "curveData"}` for a curve).
* `chargeops.SetDischargeLimit` `{"pct": 0..100}` → the site planner's LimitMaxDischarge: a default control
  with a fixed id, so each new cap replaces the last one.
* `chargeops.ClearDerControl` `{"is_default", "control_id"?, "control_type"?}` → ClearDERControl.
* `chargeops.GetDerControls` `{"request_id", "is_default"?, "control_type"?, "control_id"?}` →
  GetDERControl; the controls arrive as `DerControlsReported` events.

Answers come back neutral: `{"status", "superseded_ids"?, "reason"?, "info"?}`. The payloads are built as
plain dicts: `ocpp` 2.1.0's snake→camel conversion writes `fixedPfAbsorb` / `fixedPfInject` / `fixedPf` where
the schema says `fixedPFAbsorb` / `fixedPFInject` / `fixedPF`, which a strict charger refuses.
"""

from __future__ import annotations

from typing import Any

import orjson
from ocpp.routing import on

from chargeops.events import DerAlarm, DerControlsReported, DerControlStartStop
from ocpp_gateway.times import parse_time
from ocpp_gateway.versions import V21, OcppVersion

Payload = dict[str, Any]

SET_DER_CONTROL = "chargeops.SetDerControl"
SET_DISCHARGE_LIMIT = "chargeops.SetDischargeLimit"
CLEAR_DER_CONTROL = "chargeops.ClearDerControl"
GET_DER_CONTROLS = "chargeops.GetDerControls"
DER_ACTIONS = frozenset({SET_DER_CONTROL, SET_DISCHARGE_LIMIT, CLEAR_DER_CONTROL, GET_DER_CONTROLS})
# The planner's own discharge cap. Its priority number sits above 0, so an operator's (or a grid operator's)
# LimitMaxDischarge with a lower number takes precedence on the charger.
PLANNER_CONTROL_ID = "chargeops-site-discharge"
PLANNER_PRIORITY = 5


def _setting_fields() -> dict[str, str]:
    """Control type → the SetDERControlRequest field holding its setting (spelled as the schema spells it):
    a type whose lower-camel name (singular for `Gradients`) is a field of the 2.1 request has its own
    setting; every other type is a curve."""
    request = orjson.loads(V21.schema_path("SetDERControl", response=False).read_bytes())
    fields = request["properties"]
    out: dict[str, str] = {}
    for control_type in request["definitions"]["DERControlEnumType"]["enum"]:
        name = control_type[0].lower() + control_type[1:]
        out[control_type] = name if name in fields else name[:-1] if name[:-1] in fields else "curve"
    return out


SETTING_FIELD = _setting_fields()
# ReportDERControlRequest list → (control type, unless a curve says its own; key of the setting in an entry)
_REPORT_LISTS: dict[str, tuple[str | None, str]] = {
    "curve": (None, "curve"),
    "enterService": ("EnterService", "enterService"),
    "fixedPFAbsorb": ("FixedPFAbsorb", "fixedPF"),
    "fixedPFInject": ("FixedPFInject", "fixedPF"),
    "fixedVar": ("FixedVar", "fixedVar"),
    "freqDroop": ("FreqDroop", "freqDroop"),
    "gradient": ("Gradients", "gradient"),
    "limitMaxDischarge": ("LimitMaxDischarge", "limitMaxDischarge"),
}
_TIMING = ("priority", "startTime", "duration")


class Unsupported(ValueError):
    """A neutral action this charger's OCPP version has no message for."""


def set_der_control(p: Payload) -> Payload:
    """The SetDERControlRequest for a neutral control (the schema check follows in the session)."""
    control_type = p.get("control_type")
    field = SETTING_FIELD.get(control_type) if isinstance(control_type, str) else None
    if field is None:
        raise ValueError(f"control_type must be one of {sorted(SETTING_FIELD)}")
    settings = p.get("settings") or {}
    if not isinstance(settings, dict):
        raise ValueError("settings must be an object")
    setting: Payload = {k: v for k, v in settings.items() if k not in _TIMING}
    setting["priority"] = p.get("priority", 0)
    if p.get("start_time") is not None:
        setting["startTime"] = p["start_time"]
    if p.get("duration_s") is not None:
        setting["duration"] = p["duration_s"]
    return {
        "isDefault": p.get("is_default", True),
        "controlId": p.get("control_id"),
        "controlType": control_type,
        field: setting,
    }


def discharge_limit(pct: Any) -> Payload:
    """The planner's LimitMaxDischarge: at most `pct` % of the charger's rated discharge power."""
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
        raise ValueError("pct must be a number from 0 to 100")
    return set_der_control(
        {
            "control_id": PLANNER_CONTROL_ID,
            "control_type": "LimitMaxDischarge",
            "is_default": True,
            "priority": PLANNER_PRIORITY,
            "settings": {"pctMaxDischargePower": float(pct)},
        }
    )


def _selection(p: Payload, *, default_flag: bool) -> Payload:
    out: Payload = {}
    if p.get("is_default") is not None or default_flag:
        out["isDefault"] = p.get("is_default", True)
    for neutral, ocpp_name in (("control_type", "controlType"), ("control_id", "controlId")):
        if p.get(neutral) is not None:
            out[ocpp_name] = p[neutral]
    return out


def der_to_ocpp(version: OcppVersion, action: str, p: Payload) -> tuple[str, Payload]:
    """A neutral DER action as the OCPP 2.1 call. Raises Unsupported before 2.1, ValueError for nonsense."""
    if version is not V21:
        raise Unsupported(f"DER control needs OCPP 2.1; this charger speaks {version.name}")
    if action == SET_DISCHARGE_LIMIT:
        return "SetDERControl", discharge_limit(p.get("pct"))
    if action == SET_DER_CONTROL:
        return "SetDERControl", set_der_control(p)
    if action == CLEAR_DER_CONTROL:
        return "ClearDERControl", _selection(p, default_flag=True)
    return "GetDERControl", {"requestId": p.get("request_id"), **_selection(p, default_flag=False)}


def reply_from_ocpp(answer: Payload) -> Payload:
    """A Set/Get/ClearDERControl response in neutral words."""
    out: Payload = {"status": answer["status"]}
    if answer.get("supersededIds"):
        out["superseded_ids"] = list(answer["supersededIds"])
    info = answer.get("statusInfo") or {}
    if "reasonCode" in info:
        out["reason"] = info["reasonCode"]
    if "additionalInfo" in info:
        out["info"] = info["additionalInfo"]
    return out


def reported_controls(p: Payload) -> list[Payload]:
    """The controls of a schema-valid ReportDERControlRequest, neutral (see `DerControlsReported`)."""
    controls: list[Payload] = []
    for list_name, (control_type, key) in _REPORT_LISTS.items():
        for entry in p.get(list_name) or ():
            setting = entry[key]
            kind = control_type or entry["curveType"]
            controls.append(
                {
                    "control_id": entry["id"],
                    "control_type": kind,
                    "is_default": entry.get("isDefault", True),
                    "superseded": entry.get("isSuperseded", False),
                    "priority": setting["priority"],
                    "start_time": setting.get("startTime"),
                    "duration_s": setting.get("duration"),
                    "settings": {k: v for k, v in setting.items() if k not in _TIMING},
                }
            )
    return controls


class DerReports:
    """Mixed into the OCPP 2.1 session: the charger's DER messages as neutral events."""

    @on("NotifyDERAlarm")
    async def on_notify_der_alarm(self, p: Payload) -> Payload:
        alarm = DerAlarm(
            p["controlType"], p.get("gridEventFault"), bool(p.get("alarmEnded")), p.get("extraInfo")
        )
        self.log.warning(  # type: ignore[attr-defined]
            "DER alarm %s %s%s",
            alarm.control_type,
            alarm.grid_event_fault or "",
            " ended" if alarm.ended else "",
        )
        await self.emit(alarm, reported_at=parse_time(p["timestamp"]))  # type: ignore[attr-defined]
        return {}

    @on("NotifyDERStartStop")
    async def on_notify_der_start_stop(self, p: Payload) -> Payload:
        event = DerControlStartStop(p["controlId"], p["started"], list(p.get("supersededIds") or ()))
        await self.emit(event, reported_at=parse_time(p["timestamp"]))  # type: ignore[attr-defined]
        return {}

    @on("ReportDERControl")
    async def on_report_der_control(self, p: Payload) -> Payload:
        report = DerControlsReported(p["requestId"], reported_controls(p), bool(p.get("tbc")))
        await self.emit(report)  # type: ignore[attr-defined]
        return {}
