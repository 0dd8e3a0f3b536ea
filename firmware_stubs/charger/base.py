"""The one object layout every part of a simulated charger shares.

``SimulatedCharger`` is composed of per-concern mixins (link, calls, sessions, physics, smart charging,
jobs), each with ``__slots__ = ()``. They all derive from ``ChargerBase``, which declares every field once:
one charger stays one slotted object with no ``__dict__``, so 10,000 of them cost what they did as one class.
Methods one concern calls on another are declared here for the type checker only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import asyncio
    import datetime as dt
    import random

    from websockets.asyncio.client import ClientConnection

    from firmware_stubs.charger.components import DeviceState, GridState, JobState
    from firmware_stubs.charger.state import Connector, OutboundCall, SimEnvironment, Transaction
    from firmware_stubs.charger.station import SimulatedCharger
    from firmware_stubs.dialects.base import Dialect
    from firmware_stubs.model import EV, ChargingProfile, ConfigStore

logger = logging.getLogger("firmware_stubs")


class CpLogger(logging.LoggerAdapter):
    """Prefixes messages with the charge point id and adds it as ``extra['charge_point_id']``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra['charge_point_id']}] {msg}", kwargs


class ChargerBase:
    """Fields of one simulated charging station, grouped by the concern that writes them."""

    fault_codes: ClassVar[tuple[str, ...]]  # what inject_fault and random faults may raise

    __slots__ = (  # sorted; the annotations below group them by the concern that writes them
        "_auth_cache",
        "_boot_due",
        "_boot_failures",
        "_boot_reason",
        "_connect_at",
        "_device",
        "_failures",
        "_grid",
        "_heartbeat_due",
        "_hold_until",
        "_jobs",
        "_last_tick_sim",
        "_local_list",
        "_msg_seq",
        "_outstanding",
        "_profiles",
        "_queue",
        "_reboot",
        "_reset_on_idle",
        "_sample_due",
        "_task",
        "_tick_due",
        "_waiter",
        "_ws",
        "boots_accepted",
        "call_errors",
        "calls_received",
        "calls_sent",
        "config",
        "connected_count",
        "connectors",
        "dc",
        "dialect",
        "energy_wh",
        "env",
        "faults",
        "firmware_version",
        "id",
        "local_list_version",
        "max_discharge_w",
        "max_power_w",
        "model",
        "password",
        "received_calls",
        "registration",
        "rng",
        "schema_violations",
        "sessions_completed",
        "sessions_started",
        "url",
        "vendor",
    )

    # identity and hardware, set once by SimulatedCharger.__init__
    config: ConfigStore
    connectors: list[Connector]
    dc: bool
    dialect: Dialect
    env: SimEnvironment
    firmware_version: str
    id: str
    max_discharge_w: float  # > 0: bidirectional, rated discharge power
    max_power_w: float
    model: str
    password: str | None
    rng: random.Random
    url: str
    vendor: str

    # link: connection, back-off, boot, timers
    _boot_due: float
    _boot_failures: int
    _boot_reason: str
    _connect_at: float
    _failures: int
    _heartbeat_due: float
    _hold_until: float
    _reboot: tuple[str, float] | None  # (boot reason, loop time it happens at the latest)
    _reset_on_idle: str | None  # boot reason of a reboot waiting for the last session to end
    _task: asyncio.Task[None] | None
    _tick_due: float
    _waiter: asyncio.Timeout | None
    _ws: ClientConnection | None
    boots_accepted: int
    connected_count: int
    registration: str

    # calls: the CALL queue and its counters
    _msg_seq: int
    _outstanding: OutboundCall | None
    _queue: list[OutboundCall]
    call_errors: int
    calls_received: int
    calls_sent: int
    received_calls: list[tuple[str, dict[str, Any]]]
    schema_violations: list[str]

    # sessions: authorization lists and counters
    _auth_cache: dict[str, str] | None
    _local_list: dict[str, str] | None
    faults: int
    local_list_version: int
    sessions_completed: int
    sessions_started: int

    # physics (grid state is made on first use)
    _grid: GridState | None
    _last_tick_sim: float
    _sample_due: float
    energy_wh: float

    # smart charging
    _profiles: list[ChargingProfile] | None

    # jobs (made on first use)
    _jobs: JobState | None

    # OCPP 2.x device-model features the dialects keep per station (made on first use)
    _device: DeviceState | None

    @property
    def log(self) -> CpLogger:
        """Created on demand: a stored adapter per charger would cost memory for 10k chargers."""
        return CpLogger(logger, {"charge_point_id": self.id})

    @property
    def _whole(self) -> SimulatedCharger:
        """This charger as the composed class, as the dialects take it (a mixin's ``self`` is the mixin)."""
        return self  # type: ignore[return-value]  # (not cast(): this is called per dialect event)

    @property
    def serial(self) -> str:
        """Derived, not stored: a string per charger would cost memory for 10k chargers."""
        return f"SN-{self.id}"

    if TYPE_CHECKING:
        # link
        @property
        def accepted(self) -> bool: ...
        def _backoff(self, failures: int) -> float: ...
        def _poke(self) -> None: ...
        def request_reboot(self, boot_reason: str, *, hard: bool, stop_reason: str) -> None: ...
        def _on_boot_result(self, payload: dict[str, Any]) -> None: ...

        # calls
        def emit(
            self,
            action: str,
            payload: dict[str, Any],
            *,
            tx: Transaction | None = None,
            transactional: bool = False,
            triggered: bool = False,
            droppable: bool = False,
            on_result: Callable[[dict[str, Any]], None] | None = None,
        ) -> None: ...
        def _retry(self, item: OutboundCall, now: float) -> None: ...
        async def _pump(self, ws: ClientConnection, now: float) -> None: ...
        async def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> None: ...

        # sessions
        def derive_status(self, c: Connector) -> str: ...
        def inject_fault(
            self,
            connector: int,
            code: str,
            *,
            vendor_code: str | None = None,
            clear_after: float | None = None,
        ) -> None: ...
        def clear_fault(self, connector: int) -> None: ...
        def _plug(self, c: Connector, id_tag: str | None, ev: EV | None) -> None: ...
        def _unplug(self, c: Connector) -> None: ...
        def _end_tx(self, c: Connector, reason: str) -> None: ...
        def _refresh(self, c: Connector) -> None: ...

        # physics
        def _advance(self, c: Connector) -> None: ...
        def _sample_interval(self) -> float: ...
        def _sample_periodic(self, now: float) -> None: ...
        def _sim_tick(self) -> None: ...

        # smart charging
        def set_profile(self, profile: ChargingProfile) -> bool: ...
        def _profiles_changed(self) -> None: ...
        def _limit_w(self, c: Connector, when: dt.datetime) -> float | None: ...
