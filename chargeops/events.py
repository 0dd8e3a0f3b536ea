"""The version-neutral events every part of chargeops consumes.

The OCPP gateway turns each charger message, whatever its protocol version, into these; the bus carries
them; ingest stores them; ops reacts to them. What ops sends back to chargers is in `chargeops.commands`.
OCPP shapes leave the gateway only where chargeops keeps something as the charger sent it: `Reported` (a
message with no feature yet), the operator API's raw command relay, and DER settings and vendor fields that
keep the standard's names.

Longer than ~450 lines on purpose: the whole neutral vocabulary (some fifty small dataclasses) reads best as
one catalogue; split it by domain if it grows much further.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

import orjson

SCHEMA_VERSION = 1
ENERGY_REGISTER = "Energy.Active.Import.Register"
_EVENT_NS = uuid.UUID("5d3c6a1e-8a43-4b8e-9a0e-0c6b0c2f6e11")


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventKind(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    BOOTED = "booted"
    HEARTBEAT = "heartbeat"
    STATUS_CHANGED = "status_changed"
    METER_VALUES = "meter_values"
    TRANSACTION_STARTED = "transaction_started"
    TRANSACTION_UPDATED = "transaction_updated"
    TRANSACTION_ENDED = "transaction_ended"
    AUTHORIZATION = "authorization"
    FAULT_REPORTED = "fault_reported"
    FIRMWARE_STATUS = "firmware_status"
    LOG_STATUS = "log_status"
    SECURITY_EVENT = "security_event"
    BATTERY_SWAP = "battery_swap"
    DER_ALARM = "der_alarm"
    DER_CONTROL_START_STOP = "der_control_start_stop"
    DER_CONTROLS_REPORTED = "der_controls_reported"
    REBOOT_REQUESTED = "reboot_requested"
    SIGNED_METER_VALUES = "signed_meter_values"
    METER_IMPLAUSIBLE = "meter_implausible"
    EV_CHARGING_NEEDS = "ev_charging_needs"
    EV_CHARGING_SCHEDULE = "ev_charging_schedule"
    REPORTED = "reported"


@dataclass(slots=True)
class Body:
    """Base of the kind-specific part of an event."""

    kind: ClassVar[EventKind]


@dataclass(slots=True)
class Connected(Body):
    kind = EventKind.CONNECTED
    protocol: str
    gateway_id: str
    session_id: str
    instance: str = ""  # the gateway process's run (its bus instance; docs/bus.md, "Gateway presence")


@dataclass(slots=True)
class Disconnected(Body):
    kind = EventKind.DISCONNECTED
    gateway_id: str
    session_id: str
    reason: str = ""


@dataclass(slots=True)
class Booted(Body):
    kind = EventKind.BOOTED
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None
    reason: str | None = None
    registration: str = "Accepted"


@dataclass(slots=True)
class Heartbeat(Body):
    kind = EventKind.HEARTBEAT


@dataclass(slots=True)
class StatusChanged(Body):
    """A connector's (or with connector_id 0 / evse_id 0, the whole charger's) availability status."""

    kind = EventKind.STATUS_CHANGED
    evse_id: int
    connector_id: int
    status: str
    error_code: str | None = None
    vendor_error_code: str | None = None
    info: str | None = None


@dataclass(slots=True)
class Sample:
    """One sampled value: every measurand, phase, location and context is kept."""

    measurand: str
    value: float
    unit: str | None = None
    phase: str | None = None
    location: str | None = None
    context: str | None = None
    sampled_at: datetime | None = None

    @property
    def register_wh(self) -> float | None:
        """The reading in Wh if this is the main energy register (no phase), else None."""
        if self.measurand != ENERGY_REGISTER or self.phase is not None:
            return None
        return self.value * 1000 if self.unit == "kWh" else self.value


@dataclass(slots=True)
class MeterValues(Body):
    kind = EventKind.METER_VALUES
    evse_id: int
    connector_id: int
    transaction_id: str | None
    samples: list[Sample] = field(default_factory=list)


@dataclass(slots=True)
class SignedMeterValues(Body):
    """Signed readings (OCMF and the like) as the meter signed them, kept for billing disputes: 2.x
    `signedMeterValue`, 1.6 values of format `SignedData`. One dict per reading: `sampled_at` (ISO),
    `measurand`, `context`, `phase`, `value` (the numeric reading beside it, if any), `signed_meter_data`,
    `signing_method`, `encoding_method`, `public_key` (what the charger sent; 1.6 has only the data).
    Apart from `MeterValues` so unsigned meter events keep their ids and their hot path."""

    kind = EventKind.SIGNED_METER_VALUES
    evse_id: int
    connector_id: int
    transaction_id: str | None
    readings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class MeterImplausible(Body):
    """A transaction's energy register reading the gateway judged implausible (`reason`: backwards,
    exceeds_max_power, clock_skew) against the last plausible one (`previous_*`). The sample is stored as
    sent; billing leaves it out."""

    kind = EventKind.METER_IMPLAUSIBLE
    transaction_id: str
    evse_id: int
    connector_id: int
    reason: str
    value_wh: float
    sampled_at: datetime
    previous_wh: float | None = None
    previous_at: datetime | None = None
    detail: str = ""


@dataclass(slots=True)
class TransactionStarted(Body):
    kind = EventKind.TRANSACTION_STARTED
    transaction_id: str
    evse_id: int | None  # None: not said (2.x may start a transaction before an EVSE is chosen)
    connector_id: int | None
    id_token: str | None
    started_at: datetime
    meter_start_wh: float | None = None


@dataclass(slots=True)
class TransactionUpdated(Body):
    kind = EventKind.TRANSACTION_UPDATED
    transaction_id: str
    seq_no: int | None = None
    trigger: str | None = None
    charging_state: str | None = None
    offline: bool = False


@dataclass(slots=True)
class TransactionEnded(Body):
    kind = EventKind.TRANSACTION_ENDED
    transaction_id: str
    stopped_at: datetime
    meter_stop_wh: float | None = None
    reason: str | None = None


@dataclass(slots=True)
class Authorization(Body):
    kind = EventKind.AUTHORIZATION
    id_token: str
    status: str


@dataclass(slots=True)
class FaultReported(Body):
    """A problem the charger reported: an error code on a connector or a component/variable event."""

    kind = EventKind.FAULT_REPORTED
    evse_id: int
    connector_id: int
    component: str
    code: str
    description: str | None = None
    vendor_code: str | None = None
    cleared: bool = False


@dataclass(slots=True)
class FirmwareStatus(Body):
    kind = EventKind.FIRMWARE_STATUS
    status: str
    request_id: int | None = None
    signed: bool = False


@dataclass(slots=True)
class LogStatus(Body):
    kind = EventKind.LOG_STATUS
    status: str
    request_id: int | None = None


@dataclass(slots=True)
class SecurityEvent(Body):
    kind = EventKind.SECURITY_EVENT
    type: str
    tech_info: str | None = None


@dataclass(slots=True)
class BatterySwapped(Body):
    """A swap station's BatteryIn / BatteryOut / BatteryOutTimeout (OCPP 2.1 BatterySwap, or the same facts
    sent by an older station as DataTransfer). `batteries`: one dict per pack with `slot`, `serial`, `soc`,
    `soh` and, where reported, `production_date` (ISO), `cycles`, `cell_temp_min` / `cell_temp_max` (°C),
    `cell_volt_min` / `cell_volt_max` (V) and `vendor_info` (as sent, when it is not the documented JSON)."""

    kind = EventKind.BATTERY_SWAP
    event_type: str
    request_id: int
    id_token: str | None
    batteries: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class DerAlarm(Body):
    """A bidirectional charger's DER function met a grid event (OCPP 2.1 NotifyDERAlarm): `control_type`
    is the DER control involved (e.g. HVMustTrip), `grid_event_fault` the event (e.g. OverVoltage);
    `ended` when the condition is over."""

    kind = EventKind.DER_ALARM
    control_type: str
    grid_event_fault: str | None = None
    ended: bool = False
    extra_info: str | None = None


@dataclass(slots=True)
class DerControlStartStop(Body):
    """A scheduled DER control began (`started`) or ended on the charger (OCPP 2.1 NotifyDERStartStop);
    `superseded_ids`: controls it took over from."""

    kind = EventKind.DER_CONTROL_START_STOP
    control_id: str
    started: bool
    superseded_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DerControlsReported(Body):
    """One part (`more` = further parts follow) of a charger's answer to a request for its DER controls
    (OCPP 2.1 ReportDERControl). `controls`: one dict per control with `control_id`, `control_type`,
    `is_default`, `superseded`, `priority`, `start_time` (ISO, scheduled ones), `duration_s` and `settings`
    (the control's parameters as the standard names them, e.g. `pctMaxDischargePower`)."""

    kind = EventKind.DER_CONTROLS_REPORTED
    request_id: int
    controls: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False


@dataclass(slots=True)
class RebootRequested(Body):
    """The central system asked the charger to restart or to boot again (`command`: "reset",
    "trigger_boot", or "firmware_update": installing reboots) and the charger agreed: the boot that follows,
    and the security events a reset or a new firmware raise, are expected, not a fault."""

    kind = EventKind.REBOOT_REQUESTED
    command: str


@dataclass(slots=True)
class EvChargingNeeds(Body):
    """An ISO 15118 EV's needs for its session (2.x NotifyEVChargingNeeds) in watts and watt-hours: what ops
    plans the session's charging schedule from (None: the EV did not say)."""

    kind = EventKind.EV_CHARGING_NEEDS
    evse_id: int
    transaction_id: str
    energy_transfer: str  # AC_single_phase, AC_two_phase, AC_three_phase, DC, ...
    max_power_w: float
    min_power_w: float = 0.0
    energy_wh: float | None = None
    departure_at: datetime | None = None
    max_periods: int | None = None  # schedule periods the EV takes at most


@dataclass(slots=True)
class EvChargingSchedule(Body):
    """The charging schedule an ISO 15118 EV chose within ours (2.x NotifyEVChargingSchedule): from
    `starts_at`, `periods` `[{"start_s", "limit", "phases"?}]` in `rate_unit` (W or A)."""

    kind = EventKind.EV_CHARGING_SCHEDULE
    evse_id: int
    transaction_id: str | None
    starts_at: datetime
    rate_unit: str
    periods: list[dict[str, Any]] = field(default_factory=list)
    duration_s: int | None = None


@dataclass(slots=True)
class Reported(Body):
    """A charger message with no dedicated feature yet, stored as sent (OCPP field names)."""

    kind = EventKind.REPORTED
    action: str
    payload: dict[str, Any] = field(default_factory=dict)


BODY_TYPES: dict[EventKind, type[Body]] = {
    cls.kind: cls
    for cls in (
        Connected,
        Disconnected,
        Booted,
        Heartbeat,
        StatusChanged,
        MeterValues,
        TransactionStarted,
        TransactionUpdated,
        TransactionEnded,
        Authorization,
        FaultReported,
        FirmwareStatus,
        LogStatus,
        SecurityEvent,
        BatterySwapped,
        DerAlarm,
        DerControlStartStop,
        DerControlsReported,
        RebootRequested,
        SignedMeterValues,
        MeterImplausible,
        EvChargingNeeds,
        EvChargingSchedule,
        Reported,
    )
}


@dataclass(slots=True)
class Event:
    """Envelope: who, when (as reported and as received), and a deterministic id for idempotent storage."""

    charger_id: str
    body: Body
    reported_at: datetime | None = None
    received_at: datetime = field(default_factory=utcnow)
    event_id: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            self.event_id = self.derive_id()

    @property
    def kind(self) -> EventKind:
        return self.body.kind

    def derive_id(self) -> str:
        """Same charger, kind, report time and content → same id, so a replayed message is stored once.

        Connection events are not replays of anything: they get their receive time in the key. A swap step
        carries no time of its own but is unique by itself (station, requestId, event type, packs), as is a
        signed reading (its time and signature are in it). A transaction update resent `offline` is the same
        update: the flag is left out of the key. The gateway already stores a (transaction, seqNo) once; this
        keeps a copy it has no note of (stored before migration 0013, or the note failed) to one row.
        """
        body = self.body
        if isinstance(body, TransactionUpdated) and body.offline:
            body = replace(body, offline=False)
        stamp = self.reported_at
        if self.body.kind in (EventKind.BATTERY_SWAP, EventKind.SIGNED_METER_VALUES):
            stamp = None
        elif stamp is None or self.body.kind in (
            EventKind.CONNECTED,
            EventKind.DISCONNECTED,
            EventKind.HEARTBEAT,
        ):
            stamp = self.received_at
        key = orjson.dumps([self.charger_id, body.kind, stamp, body])
        return str(uuid.UUID(bytes=hashlib.sha1(_EVENT_NS.bytes + key).digest()[:16], version=5))

    def to_doc(self) -> dict[str, Any]:
        """The event as the bus carries it (orjson turns it into JSON; it encodes the body dataclass
        itself, ~25x faster than `asdict`'s deep copy)."""
        return {
            "v": SCHEMA_VERSION,
            "event_id": self.event_id,
            "kind": self.body.kind.value,
            "charger_id": self.charger_id,
            "reported_at": self.reported_at,
            "received_at": self.received_at,
            "data": self.body,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        """The inverse of `to_doc` after a JSON round trip (times come back as ISO strings)."""
        body_cls = BODY_TYPES[EventKind(doc["kind"])]
        data = doc["data"]
        if body_cls is MeterValues:  # the hot path of ingest: parse sample times in place, no dict copies
            for s in data["samples"]:
                if at := s.get("sampled_at"):
                    s["sampled_at"] = datetime.fromisoformat(at)
            data["samples"] = [Sample(**s) for s in data["samples"]]
        else:
            data = _parse_times(data, _TIME_FIELDS.get(body_cls, ()))
        return cls(
            charger_id=doc["charger_id"],
            body=body_cls(**data),
            reported_at=_parse_dt(doc.get("reported_at")),
            received_at=_parse_dt(doc["received_at"]) or utcnow(),
            event_id=doc["event_id"],
        )


_TIME_FIELDS: dict[type[Body], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if "datetime" in str(f.type)) for cls in BODY_TYPES.values()
}


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _parse_times(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: (_parse_dt(v) if k in names else v) for k, v in data.items()}
