"""The fault rules file (`ops/rules.yaml`, or CHARGEOPS_RULES_FILE) and the observations it matches.

Events arrive version-neutral; `observations` turns the ones that can mean a fault into `Observation`s,
the rest (boot loops, offline, stalled energy) are observed by the engine's scans. Matching is pure: the
engine decides what a match does to tickets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from chargeops.events import DerAlarm, Event, FaultReported, FirmwareStatus, MeterImplausible, SecurityEvent

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
Priority = Literal["P1", "P2", "P3", "P4"]
ObservationKind = Literal[
    "fault",
    "security",
    "firmware",
    "boot_loop",
    "offline",
    "energy_stalled",
    "power_low",
    "battery",
    "swap_timeouts",
    "der_alarm",
    "meter",
]
FIRMWARE_FAILURES = frozenset(
    {"DownloadFailed", "InstallationFailed", "InstallVerificationFailed", "InvalidSignature"}
)


@dataclass(frozen=True, slots=True)
class Observation:
    """Something wrong with a charger, as the rules see it; `key` identifies its occurrence (event id)."""

    event: ObservationKind
    charger_id: str
    key: str
    at: datetime
    code: str = ""
    component: str = ""
    evse_id: int = 0
    vendor_code: str | None = None
    description: str | None = None
    cleared: bool = False
    subject: str | None = None  # what the ticket is about beyond the charger (a battery pack's serial)
    expected: bool = False  # the central system asked for it or a crew is at work (`ops.security_events`)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    event: ObservationKind
    code: str | None = None
    component: str | None = None
    vendor_code: str | None = None
    description: str | None = None
    expected: bool | None = None

    def fits(self, obs: Observation) -> bool:
        if self.event != obs.event or self.expected not in (None, obs.expected):
            return False
        checks = (
            (self.code, obs.code),
            (self.component, obs.component),
            (self.vendor_code, obs.vendor_code),
            (self.description, obs.description),
        )
        return all(p is None or fnmatchcase(value or "", p) for p, value in checks)


class PartNeed(_Strict):
    category: str
    qty: int = Field(default=1, ge=1)


class Escalation(_Strict):
    occurrences: int = Field(ge=2)
    to: Priority


class Rule(_Strict):
    id: str
    match: list[Match] = Field(min_length=1)
    diagnosis: str
    priority: Priority
    sla_hours: float | None = None
    parts: list[PartNeed] = Field(default_factory=list)
    escalate: Escalation | None = None

    def priority_after(self, occurrences: int, current: str) -> str:
        """The priority a ticket has after `occurrences` repeats: only ever raised (P1 is highest)."""
        if self.escalate and occurrences >= self.escalate.occurrences:
            return min(current, self.escalate.to)
        return current


class BootLoop(_Strict):
    boots: int = Field(default=3, ge=2)
    minutes: float = Field(default=10, gt=0)


class PowerLow(_Strict):
    ratio: float = Field(default=0.5, gt=0, lt=1)
    minutes: float = Field(default=15, gt=0)
    min_offered_kw: float = Field(default=3, ge=0)
    max_soc: float = Field(default=80, gt=0, le=100)


class BatteryLimits(_Strict):
    soh_min: float = Field(default=70, ge=0, le=100)
    fade_points: float = Field(default=5, gt=0)
    fade_days: float = Field(default=90, gt=0)
    temp_spread_c: float = Field(default=10, gt=0)
    volt_spread_v: float = Field(default=0.1, gt=0)


class SwapTimeouts(_Strict):
    count: int = Field(default=3, ge=1)
    hours: float = Field(default=24, gt=0)


class SecuritySettings(_Strict):
    expected_hours: float = Field(default=24, gt=0)


class RuleSettings(_Strict):
    offline_after_minutes: float = Field(default=30, gt=0)
    boot_loop: BootLoop = Field(default_factory=BootLoop)
    energy_stalled_minutes: float = Field(default=15, gt=0)
    power_low: PowerLow = Field(default_factory=PowerLow)
    battery: BatteryLimits = Field(default_factory=BatteryLimits)
    swap_timeouts: SwapTimeouts = Field(default_factory=SwapTimeouts)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    sla_hours: dict[str, float] = Field(
        default_factory=lambda: {"P1": 8.0, "P2": 24.0, "P3": 72.0, "P4": 168.0}
    )


class RuleBook(_Strict):
    settings: RuleSettings = Field(default_factory=RuleSettings)
    rules: list[Rule]

    def match(self, obs: Observation) -> Rule | None:
        return next((r for r in self.rules if any(m.fits(obs) for m in r.match)), None)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def sla_hours(self, rule: Rule, priority: str) -> float:
        return rule.sla_hours or self.settings.sla_hours.get(priority, 72)


def load_rules(path: Path | None = None) -> RuleBook:
    """Reads and validates a rules file; a mistake fails at start-up with the offending field named."""
    doc = yaml.safe_load((path or DEFAULT_RULES).read_text())
    book = RuleBook.model_validate(doc)
    ids = [r.id for r in book.rules]
    if len(ids) != len(set(ids)):
        raise ValueError(f"rule ids must be unique: {sorted({i for i in ids if ids.count(i) > 1})}")
    return book


def observations(ev: Event) -> list[Observation]:
    """What in an event the rules look at (faults, security events, failed firmware updates, DER alarms,
    implausible meter readings)."""
    body = ev.body
    if isinstance(body, FaultReported):
        return [
            observed(
                ev,
                "fault",
                code=body.code,
                component=body.component,
                evse_id=body.evse_id,
                vendor_code=body.vendor_code,
                description=body.description,
                cleared=body.cleared,
            )
        ]
    if isinstance(body, SecurityEvent):
        return [observed(ev, "security", code=body.type, description=body.tech_info)]
    if isinstance(body, FirmwareStatus) and body.status in FIRMWARE_FAILURES:
        return [observed(ev, "firmware", code=body.status)]
    if isinstance(body, DerAlarm):
        code, component = body.grid_event_fault or body.control_type, body.control_type
        return [observed(ev, "der_alarm", code=code, component=component, description=body.extra_info,
                         cleared=body.ended)]  # fmt: skip
    if isinstance(body, MeterImplausible):
        text = f"transaction {body.transaction_id}: {body.detail}"
        return [observed(ev, "meter", code=body.reason, evse_id=body.evse_id, description=text)]
    return []


def observed(ev: Event, kind: ObservationKind, key: str | None = None, **fields: Any) -> Observation:
    """An observation drawn from `ev`: its charger and time, and its id as the key unless one is given."""
    return Observation(kind, ev.charger_id, key or ev.event_id, ev.reported_at or ev.received_at, **fields)
