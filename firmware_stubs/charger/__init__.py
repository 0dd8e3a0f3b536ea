"""Version-neutral simulated charger: connection, OCPP-J call discipline, boot, sessions, faults, jobs.

One ``SimulatedCharger`` is one object composed of per-concern mixins (see ``base``): ``link`` (connection,
back-off, boot), ``calls`` (CALL discipline), ``sessions``, ``physics``, ``smart_charging`` and ``jobs``; the
small records are in ``state`` and the state only some chargers need, made on first use, in ``components``.
"""

from firmware_stubs.charger.components import DeviceState, GridState, JobState
from firmware_stubs.charger.state import (
    FAULT_CODES,
    RECEIVED_CALLS_KEPT,
    Connector,
    OutboundCall,
    Reservation,
    Sample,
    SimEnvironment,
    Transaction,
    chance,
)
from firmware_stubs.charger.station import SimulatedCharger

__all__ = [
    "FAULT_CODES",
    "RECEIVED_CALLS_KEPT",
    "Connector",
    "DeviceState",
    "GridState",
    "JobState",
    "OutboundCall",
    "Reservation",
    "Sample",
    "SimEnvironment",
    "SimulatedCharger",
    "Transaction",
    "chance",
]
