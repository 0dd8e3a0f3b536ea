"""The DER controls a simulated bidirectional (V2X) OCPP 2.1 charger keeps (part 2, block R).

Controls are kept by controlId, as sent (OCPP field names: this is 2.1-only state). Per type, a scheduled
control (`startTime` + `duration`, both required here) is in effect inside its window, the one with the
lowest `priority` number when several are; otherwise the default control with the lowest number (the newest
among equals) is, and the other defaults are superseded only while it lasts, so clearing it brings the next
one back. A new scheduled control supersedes the overlapping scheduled ones with the same or a higher number
for good, or is itself superseded by one with a lower number; superseded scheduled controls never run.
What the station implements (`SUPPORTED`) is stored and reported; only
LimitMaxDischarge changes its physics (see `max_discharge_pct`); the reactive-power controls are answered
NotSupported.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from firmware_stubs import schemas
from firmware_stubs.model import parse_iso

Payload = dict[str, Any]


def _setting_fields() -> dict[str, str]:
    """Control type → the SetDERControlRequest field holding its setting, from the 2.1 schema: a type whose
    name in lower camel case (`Gradients` without its s) is a field has a setting of its own; the others are
    curves."""
    request = schemas.schema("2.1", "SetDERControlRequest")
    assert request is not None
    types: list[str] = request["definitions"]["DERControlEnumType"]["enum"]
    names = {t: t[0].lower() + t[1:] for t in types}
    fields = request["properties"]
    return {t: next((f for f in (n, n.removesuffix("s")) if f in fields), "curve") for t, n in names.items()}


SETTING_FIELD = _setting_fields()
# Active power and trips: implemented. Reactive power (var / power-factor control) needs an inverter this
# station does not simulate.
UNSUPPORTED = frozenset({"FixedPFAbsorb", "FixedPFInject", "FixedVar", "VoltVar", "WattPF", "WattVar"})
SUPPORTED = frozenset(SETTING_FIELD) - UNSUPPORTED
DEFAULT_ONLY = frozenset({"EnterService", "Gradients"})  # no schedule: they say how to (re)start
MAX_PER_TYPE = 24  # a ReportDERControl list holds at most 24 entries
# Grid event → the trip curve that acts on it (and is named in NotifyDERAlarm).
GRID_TRIPS = {
    "OverVoltage": "HVMustTrip",
    "UnderVoltage": "LVMustTrip",
    "OverFrequency": "HFMustTrip",
    "UnderFrequency": "LFMustTrip",
    "OverCurrent": "PowerMonitoringMustTrip",
}


@dataclass(slots=True)
class DerControl:
    id: str
    control_type: str
    is_default: bool
    setting: Payload
    superseded: bool = False
    running: bool = False
    supersedes: list[str] = field(default_factory=list)

    @property
    def priority(self) -> int:
        return int(self.setting["priority"])

    def window(self) -> tuple[dt.datetime, dt.datetime] | None:
        """(start, end) of a scheduled control; None for a default one (always)."""
        if self.is_default:
            return None
        start = parse_iso(self.setting.get("startTime"))
        assert start is not None
        return start, start + dt.timedelta(seconds=float(self.setting["duration"]))

    def running_at(self, now: dt.datetime) -> bool:
        """A scheduled control that is not superseded, inside its window."""
        window = self.window()
        return window is not None and not self.superseded and window[0] <= now < window[1]

    def overlaps(self, other: DerControl) -> bool:
        a, b = self.window(), other.window()
        return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def _rejected(reason: str, info: str) -> Payload:
    return {"status": "Rejected", "statusInfo": {"reasonCode": reason, "additionalInfo": info[:1024]}}


class DerControls:
    """One charger's DER controls (made by its first DER control message, so chargers without any pay
    nothing)."""

    __slots__ = ("controls",)

    def __init__(self) -> None:
        self.controls: dict[str, DerControl] = {}

    # -- SetDERControl / GetDERControl / ClearDERControl -------------------------------------------
    def set(self, p: Payload, now: dt.datetime) -> Payload:
        """Store a control; the SetDERControlResponse."""
        control_type = p["controlType"]
        if control_type not in SUPPORTED:
            return {"status": "NotSupported"}
        key = SETTING_FIELD[control_type]
        given = [f for f in set(SETTING_FIELD.values()) if f in p]
        if given != [key]:
            return _rejected("InvalidValue", f"{control_type} takes exactly its `{key}` setting, got {given}")
        setting = p[key]
        pct = setting.get("pctMaxDischargePower")
        if pct is not None and not 0 <= pct <= 100:
            return _rejected("InvalidValue", "pctMaxDischargePower must be 0 to 100")
        is_default = p["isDefault"]
        if not is_default:
            if control_type in DEFAULT_ONLY:
                return _rejected("InvalidValue", f"{control_type} can only be a default control")
            start = parse_iso(setting.get("startTime"))
            if start is None or setting.get("duration") is None:
                return _rejected("MissingParam", "a scheduled control needs startTime and duration")
            if setting["duration"] <= 0 or start + dt.timedelta(seconds=setting["duration"]) <= now:
                return _rejected("InvalidSchedule", "the control would already be over")
        new = DerControl(p["controlId"], control_type, is_default, setting)
        self.controls.pop(new.id, None)
        if len([c for c in self.controls.values() if c.control_type == control_type]) >= MAX_PER_TYPE:
            return _rejected("TooManyControls", f"at most {MAX_PER_TYPE} {control_type} controls")
        previous = self.default(control_type)
        overlapping = [
            c
            for c in self.controls.values()
            if c.control_type == control_type and not c.superseded and c.overlaps(new)
        ]
        if any(c.priority < new.priority for c in overlapping):
            new.superseded = True
        else:
            for c in overlapping:
                c.superseded = True
                new.supersedes.append(c.id)
        self.controls[new.id] = new
        if is_default and previous is not None and self.default(control_type) is new:
            new.supersedes.append(previous.id)
        answer: Payload = {"status": "Accepted"}
        if new.supersedes:
            answer["supersededIds"] = new.supersedes[:24]
        return answer

    def select(self, p: Payload) -> list[DerControl]:
        """The controls a Get/ClearDERControlRequest names (every given criterion must fit)."""
        return [
            c
            for c in self.controls.values()
            if ("isDefault" not in p or c.is_default == p["isDefault"])
            and ("controlType" not in p or c.control_type == p["controlType"])
            and ("controlId" not in p or c.id == p["controlId"])
        ]

    def clear(self, p: Payload) -> list[DerControl]:
        """Remove what a ClearDERControlRequest names; returns the removed controls."""
        removed = self.select(p)
        for c in removed:
            del self.controls[c.id]
        return removed

    def report(self, request_id: int, controls: list[DerControl]) -> Payload:
        """One ReportDERControlRequest with `controls` (at most 24 per type, so one message holds them)."""
        payload: Payload = {"requestId": request_id}
        for c in controls:
            key = SETTING_FIELD[c.control_type]
            entry: Payload = {"id": c.id}
            if key == "curve":
                entry["curveType"] = c.control_type
            if c.control_type not in DEFAULT_ONLY:
                entry |= {"isDefault": c.is_default, "isSuperseded": self.superseded(c)}
            entry["fixedPF" if key.startswith("fixedPF") else key] = c.setting
            payload.setdefault(key, []).append(entry)
        return payload

    # -- what the station does with them ------------------------------------------------------------
    def default(self, control_type: str) -> DerControl | None:
        """The default control of a type that is not superseded: lowest priority number, newest of equals."""
        defaults = [c for c in self.controls.values() if c.control_type == control_type and c.is_default]
        return min(reversed(defaults), key=lambda c: c.priority, default=None)

    def superseded(self, c: DerControl) -> bool:
        return c.superseded if not c.is_default else self.default(c.control_type) is not c

    def effective(self, control_type: str, now: dt.datetime) -> DerControl | None:
        """The control of `control_type` in effect now: a running scheduled one, else the default one."""
        running = [c for c in self.controls.values() if c.control_type == control_type and c.running_at(now)]
        return min(running, key=lambda c: c.priority, default=None) or self.default(control_type)

    def max_discharge_pct(self, now: dt.datetime) -> float | None:
        """The discharge cap in % of the rated discharge power (None: no LimitMaxDischarge in effect)."""
        control = self.effective("LimitMaxDischarge", now)
        if control is None:
            return None
        pct = control.setting.get("pctMaxDischargePower")
        return None if pct is None else float(pct)

    def transitions(self, now: dt.datetime) -> list[tuple[DerControl, bool]]:
        """Scheduled controls that started (True) or ended (False) since the last call; ended ones are
        forgotten."""
        changed: list[tuple[DerControl, bool]] = []
        for c in list(self.controls.values()):
            window = c.window()
            if window is None or c.superseded:
                continue
            active = window[0] <= now < window[1]
            if active != c.running:
                c.running = active
                changed.append((c, active))
            if now >= window[1]:
                del self.controls[c.id]
        return changed
