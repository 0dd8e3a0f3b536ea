"""The small records a simulated charger is made of, and the fleet-wide settings they run under.

Records are ``@dataclass(slots=True, eq=False)``: slots because there are tens of thousands of them per
process, ``eq=False`` because they are entities compared by identity (``c.tx is tx``) and kept in sets.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from firmware_stubs.model import EV, SimClock, utc_now

FAULT_CODES = (
    "ConnectorLockFailure",
    "EVCommunicationError",
    "GroundFailure",
    "HighTemperature",
    "InternalError",
    "LocalListConflict",
    "OtherError",
    "OverCurrentFailure",
    "OverVoltage",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "WeakSignal",
)
RECEIVED_CALLS_KEPT = 200

Sample = tuple[str, float, str, str | None]  # measurand, value, unit, phase


def chance(rate: float, periods: float) -> float:
    """Probability of at least one arrival in `periods` at `rate` arrivals per period (Poisson), so any
    non-negative rate works, including more than one per period."""
    return 1.0 - math.exp(-rate * periods)


@dataclass(slots=True)
class SimEnvironment:
    """Settings shared by all chargers of a fleet: one object instead of one copy per charger."""

    time_scale: float = 1.0
    sample_interval: float = 60.0
    session_rate: float = 0.0  # probability a free connector gets an EV per simulated minute
    fault_rate: float = 0.0  # probability of a random fault per charger per simulated hour
    strict: bool = False
    call_timeout: float = 30.0
    tick: float = 1.0  # wall seconds between physics/arrival/fault ticks
    reboot_delay: float = 1.0
    firmware_step: float = 0.5  # wall seconds between firmware status steps
    transfer_timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    queue_limit: int = 1000
    seed: int = 0
    id_tags: tuple[str, ...] = tuple(f"SIMTAG{n:04d}" for n in range(100))
    clock: SimClock = field(init=False)
    jitter: random.Random = field(init=False)  # shared: jitter must not disturb per-charger seeded streams

    def __post_init__(self) -> None:
        self.clock = SimClock(self.time_scale)
        self.jitter = random.Random(self.seed ^ 0x5EED)


@dataclass(slots=True, eq=False)
class Reservation:
    id: int
    id_tag: str
    expiry: dt.datetime


@dataclass(slots=True, eq=False)
class Transaction:
    """One charging session; ``local_id`` is the 2.0.1 id, ``server_id`` the CSMS-issued 1.6 id."""

    local_id: str
    id_tag: str
    meter_start: float
    server_id: int | None = None
    started: dt.datetime = field(default_factory=utc_now)
    seq: int = 0
    remote_start_id: int | None = None
    reservation_id: int | None = None
    charging_state: str = ""
    cost: float | None = None

    def matches(self, transaction_id: object) -> bool:
        return str(transaction_id) in (self.local_id, str(self.server_id))

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq


@dataclass(slots=True, eq=False)
class Connector:
    """Connector ``index`` (0 = the whole station, used for station-wide status/faults/availability)."""

    index: int
    status: str = ""
    operative: bool = True
    pending_operative: bool | None = None
    fault: str | None = None
    vendor_fault: str | None = None
    fault_clear_at: float | None = None
    ev: EV | None = None
    tx: Transaction | None = None
    finished: bool = False
    reservation: Reservation | None = None
    pending_tag: str | None = None
    meter_wh: float = 0.0
    power_w: float = 0.0
    export_w: float = 0.0  # V2X: power discharged from the EV into the site (Power.Active.Export)
    export_wh: float = 0.0
    last_sim: float = 0.0
    depart_at: float | None = None


@dataclass(slots=True, eq=False)
class OutboundCall:
    """A queued CALL. Transactional calls survive disconnects and are retried; others are dropped."""

    action: str
    payload: dict[str, Any]
    _: KW_ONLY
    tx: Transaction | None = None
    transactional: bool = False
    triggered: bool = False
    droppable: bool = False
    on_result: Callable[[dict[str, Any]], None] | None = None
    attempts: int = field(default=0, init=False)
    uid: str = field(default="", init=False)
    deadline: float = field(default=0.0, init=False)
