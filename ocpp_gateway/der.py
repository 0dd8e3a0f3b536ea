"""OCPP 2.1 DER control (part 2, functional block R) in version-neutral words, both ways.

Ops (the site planner, the operator API) never build an OCPP payload: they send the neutral DER commands of
`chargeops.commands`, which the session holding the charger turns into SetDERControl / ClearDERControl /
GetDERControl here (only 2.1 has DER control: `ocpp_gateway.commands` refuses them with `NotSupported` on
1.6 / 2.0.1 before anything is sent), and the answers back into neutral words. A charger's own DER messages
(NotifyDERAlarm, NotifyDERStartStop, ReportDERControl) become events in `v21`.

The payloads are built as plain dicts: `ocpp` 2.1.0's snake→camel conversion writes `fixedPfAbsorb` /
`fixedPfInject` / `fixedPf` where the schema says `fixedPFAbsorb` / `fixedPFInject` / `fixedPF`, which a
strict charger refuses.
"""

from __future__ import annotations

from typing import Any

import orjson

from chargeops.commands import (
    CLEAR_DER_CONTROL,
    PLANNER_CONTROL_ID,
    SET_DER_CONTROL,
    SET_DISCHARGE_LIMIT,
)
from ocpp_gateway.versions import V21

Payload = dict[str, Any]

# The planner's discharge cap: its priority number sits above 0, so an operator's (or a grid operator's)
# LimitMaxDischarge with a lower number takes precedence on the charger.
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


def der_to_ocpp(action: str, p: Payload) -> tuple[str, Payload]:
    """A neutral DER action as the OCPP 2.1 call; ValueError for nonsense."""
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
