"""Version-neutral physics and policy: EVs, the power curve, charging profiles and the config store.

Nothing here knows OCPP message shapes; dialects translate to and from these types.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

TAPER_START_SOC = 80.0  # % above which charging power tapers linearly
TAPER_FLOOR = 0.05  # fraction of the power still accepted at 100 % SoC
AC_PHASE_VOLTAGE = 230.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(when: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', the form every CSMS parses."""
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_iso(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class SimClock:
    """Simulated seconds since the fleet started; ``scale`` > 1 makes physics run faster than wall time."""

    __slots__ = ("_t0", "scale")

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.scale


@dataclass(slots=True)
class EV:
    """The car: battery and on-board limits decide how much power it accepts."""

    capacity_wh: float = 60_000.0
    soc: float = 20.0
    max_power_w: float = 11_000.0
    target_soc: float = 100.0
    stop_when_full: bool = False  # True: the charger ends the transaction when the EV is full
    dwell_s: float | None = None  # simulated s the driver stays plugged after full (None: until unplug)
    discharge_w: float = 0.0  # V2X: power the owner lets a bidirectional charger take from the EV
    discharge_floor_soc: float = 30.0  # % the EV keeps; reached, it stops offering and charges again

    @classmethod
    def random(cls, rng: random.Random, dc: bool) -> EV:
        capacity = rng.choice((40_000.0, 58_000.0, 77_000.0, 100_000.0))
        max_power = rng.choice((50_000.0, 100_000.0, 150_000.0)) if dc else rng.choice((7_400.0, 11_000.0))
        return cls(
            capacity_wh=capacity,
            soc=round(rng.uniform(5.0, 60.0), 1),
            max_power_w=max_power,
            target_soc=rng.choice((80.0, 90.0, 100.0)),
            stop_when_full=rng.random() < 0.5,
            dwell_s=rng.uniform(60.0, 1800.0),
        )


def taper(soc: float) -> float:
    """Fraction of the available power accepted at ``soc``: 1 up to 80 %, linear to TAPER_FLOOR at 100 %."""
    if soc <= TAPER_START_SOC:
        return 1.0
    frac = max(0.0, (100.0 - soc) / (100.0 - TAPER_START_SOC))
    return TAPER_FLOOR + (1.0 - TAPER_FLOOR) * frac


def charging_power(ev: EV, charger_max_w: float, limit_w: float | None) -> float:
    """min(charger, EV, profile limit), tapered above 80 % SoC; 0 when the EV reached its target."""
    if ev.soc >= min(ev.target_soc, 100.0):
        return 0.0
    available = min(charger_max_w, ev.max_power_w)
    if limit_w is not None:
        available = min(available, limit_w)
    return max(0.0, available * taper(ev.soc))


def dc_voltage(soc: float) -> float:
    """Pack voltage rising with SoC, so DC Voltage/Current samples look plausible."""
    return 350.0 + soc


@dataclass(slots=True)
class Period:
    start: int
    limit: float
    phases: int | None = None


@dataclass(slots=True)
class ChargingProfile:
    """A parsed SetChargingProfile; ``purpose`` is neutral: 'max', 'txdefault', 'tx' or 'external'."""

    id: int
    connector: int
    stack_level: int
    purpose: str
    kind: str
    unit: str
    periods: list[Period]
    recurrency: str | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    transaction_id: str | None = None
    start: dt.datetime | None = None
    duration: int | None = None
    raw: dict[str, object] = field(default_factory=dict)

    def _origin(self, now: dt.datetime, tx_start: dt.datetime | None) -> dt.datetime:
        if self.kind == "Relative":
            return tx_start or now
        origin = self.start or self.valid_from or now
        if self.kind == "Recurring":
            cycle = dt.timedelta(days=7 if self.recurrency == "Weekly" else 1)
            if now >= origin:
                origin += cycle * ((now - origin) // cycle)
        return origin

    def period_at(self, now: dt.datetime, tx_start: dt.datetime | None) -> Period | None:
        """The schedule period in force at ``now``, or None (profile not valid / schedule over)."""
        if (self.valid_from and now < self.valid_from) or (self.valid_to and now >= self.valid_to):
            return None
        offset = (now - self._origin(now, tx_start)).total_seconds()
        if offset < 0 or (self.duration is not None and offset >= self.duration):
            return None
        current = None
        for period in self.periods:
            if period.start <= offset:
                current = period
        return current

    def boundaries(
        self, now: dt.datetime, horizon: dt.timedelta, tx_start: dt.datetime | None
    ) -> Iterator[dt.datetime]:
        """Instants in [now, now+horizon) where this profile's limit may change (for composite schedules)."""
        end = now + horizon
        origin = self._origin(now, tx_start)
        cycle = (
            dt.timedelta(days=7 if self.recurrency == "Weekly" else 1) if self.kind == "Recurring" else None
        )
        while origin < end:
            for period in self.periods:
                yield origin + dt.timedelta(seconds=period.start)
            if self.duration is not None:
                yield origin + dt.timedelta(seconds=self.duration)
            if cycle is None:
                break
            origin += cycle
        for edge in (self.valid_from, self.valid_to):
            if edge is not None:
                yield edge


@dataclass(frozen=True, slots=True)
class KeyDef:
    """One configuration key / device-model variable; ``kind`` is int, bool, str or csv."""

    default: str
    readonly: bool = False
    kind: str = "str"
    allowed: tuple[str, ...] | None = None  # for csv: allowed members
    max_items: int | None = None


class ConfigStore:
    """Key/value store with shared defaults and per-charger overrides (copy-on-write keeps it small)."""

    __slots__ = ("_defs", "_values")

    def __init__(self, defs: Mapping[str, KeyDef], overrides: dict[str, str] | None = None) -> None:
        self._defs = defs
        self._values: dict[str, str] | None = overrides or None

    def __contains__(self, key: str) -> bool:
        return key in self._defs

    def definition(self, key: str) -> KeyDef | None:
        return self._defs.get(key)

    def get(self, key: str) -> str | None:
        if self._values is not None and key in self._values:
            return self._values[key]
        definition = self._defs.get(key)
        return definition.default if definition else None

    def get_int(self, key: str, fallback: int = 0) -> int:
        try:
            return int(self.get(key) or fallback)
        except ValueError:
            return fallback

    def get_float(self, key: str, fallback: float = 0.0) -> float:
        try:
            return float(self.get(key) or fallback)
        except ValueError:
            return fallback

    def get_bool(self, key: str) -> bool:
        return (self.get(key) or "").lower() == "true"

    def get_list(self, key: str) -> list[str]:
        return [item.strip() for item in (self.get(key) or "").split(",") if item.strip()]

    def put(self, key: str, value: str) -> None:
        """Internal write that bypasses the readonly flag (boot interval, NumberOfConnectors)."""
        if self._values is None:
            self._values = {}
        self._values[key] = value

    def set(self, key: str, value: str) -> str:
        """CSMS write: 'Accepted', 'Rejected' (readonly or bad value) or 'NotSupported' (unknown key)."""
        definition = self._defs.get(key)
        if definition is None:
            return "NotSupported"
        if definition.readonly or not _value_ok(definition, value):
            return "Rejected"
        if definition.kind == "bool":
            value = value.lower()
        self.put(key, value)
        return "Accepted"

    def items(self) -> Iterator[tuple[str, str, bool]]:
        for key, definition in self._defs.items():
            yield key, self.get(key) or "", definition.readonly


def _value_ok(definition: KeyDef, value: str) -> bool:
    if definition.kind == "int":
        return value.strip().isdigit()
    if definition.kind == "bool":
        return value.lower() in ("true", "false")
    if definition.kind == "csv":
        members = [m.strip() for m in value.split(",") if m.strip()]
        if definition.max_items is not None and len(members) > definition.max_items:
            return False
        return definition.allowed is None or all(m in definition.allowed for m in members)
    return len(value) <= 500


MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Power.Offered",
    "Current.Import",
    "Voltage",
    "SoC",
)
_MEASURANDS_CSV = ",".join(MEASURANDS)
# What a bidirectional charger adds (OCPP 2.1 measurands; Power.Export.Offered = its rated discharge power).
V2X_MEASURANDS = ("Power.Active.Export", "Energy.Active.Export.Register", "Power.Export.Offered")

# Keys shared by both dialects (1.6 names; the 2.0.1 dialect maps device-model variables onto them).
COMMON_KEYS: dict[str, KeyDef] = {
    "HeartbeatInterval": KeyDef("300", kind="int"),
    "MeterValueSampleInterval": KeyDef("60", kind="int"),
    "MeterValuesSampledData": KeyDef(_MEASURANDS_CSV, kind="csv", allowed=MEASURANDS, max_items=10),
    "StopTxnSampledData": KeyDef(
        "Energy.Active.Import.Register", kind="csv", allowed=MEASURANDS, max_items=10
    ),
    "MeterValuesAlignedData": KeyDef("Energy.Active.Import.Register", kind="csv", allowed=MEASURANDS),
    "ClockAlignedDataInterval": KeyDef("0", kind="int"),
    "ConnectionTimeOut": KeyDef("60", kind="int"),
    "ResetRetries": KeyDef("1", kind="int"),
    "StopTransactionOnEVSideDisconnect": KeyDef("true", kind="bool"),
    "StopTransactionOnInvalidId": KeyDef("true", kind="bool"),
    "TransactionMessageAttempts": KeyDef("3", kind="int"),
    "TransactionMessageRetryInterval": KeyDef("10", kind="int"),
    "WebSocketPingInterval": KeyDef("0", kind="int"),
    "LocalAuthorizeOffline": KeyDef("true", kind="bool"),
    "LocalPreAuthorize": KeyDef("false", kind="bool"),
    "AuthorizeRemoteTxRequests": KeyDef("false", kind="bool"),
    "AuthorizationCacheEnabled": KeyDef("true", kind="bool"),
    "LocalAuthListEnabled": KeyDef("true", kind="bool"),
    "NumberOfConnectors": KeyDef("1", readonly=True, kind="int"),
    "ChargeProfileMaxStackLevel": KeyDef("10", readonly=True, kind="int"),
    "ChargingScheduleAllowedChargingRateUnit": KeyDef("Current,Power", readonly=True, kind="csv"),
    "ChargingScheduleMaxPeriods": KeyDef("24", readonly=True, kind="int"),
    "MaxChargingProfilesInstalled": KeyDef("20", readonly=True, kind="int"),
    "LocalAuthListMaxLength": KeyDef("1000", readonly=True, kind="int"),
    "SendLocalListMaxLength": KeyDef("100", readonly=True, kind="int"),
}
