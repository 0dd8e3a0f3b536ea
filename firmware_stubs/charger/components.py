"""Per-charger state that only some chargers ever need, each created on first use.

Most of 10,000 simulated chargers never see a grid event, a variable monitor or a firmware update: an
empty slot costs them 8 bytes where an object would cost a hundred. Each component is typed and owned by one
concern; readers that must not create one (per-tick checks) look at the slot and treat None as empty.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from firmware_stubs.der import DerControls

Payload = dict[str, Any]
CertificateEntry = tuple[str, dict[str, str]]  # certificate type, CertificateHashData
IDLE_FIRMWARE: tuple[str, int | None, bool] = ("Idle", None, False)  # status, requestId, signed
IDLE_UPLOAD: tuple[str, int | None] = ("Idle", None)  # status, requestId


@dataclass(slots=True, eq=False)
class GridState:
    """Grid events at a bidirectional charger and the DER controls a CSMS set (physics)."""

    events: dict[str, float | None] = field(default_factory=dict)  # fault -> simulated clear time
    der: DerControls | None = None  # created by the first DER control message, ticked from then on


@dataclass(slots=True, eq=False)
class JobState:
    """Background jobs in flight, the last status each kind reported, and the installed certificates."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    firmware: tuple[str, int | None, bool] = IDLE_FIRMWARE
    uploads: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # kind -> last status
    certificates: list[CertificateEntry] = field(default_factory=list)
    csr_key: Any = None  # the private key of the last CSR sent (SignCertificate)


@dataclass(slots=True, eq=False)
class DeviceState:
    """What the OCPP 2.x device-model features remember per station: monitors, display messages, network
    profiles and the NotifyEvent id counter."""

    event_id: int = 0
    monitors: dict[int, Payload] = field(default_factory=dict)
    monitoring_base: str | None = None
    monitoring_level: int | None = None
    display: dict[int, Payload] = field(default_factory=dict)
    network_profiles: dict[int, Payload] = field(default_factory=dict)

    def next_event_id(self) -> int:
        self.event_id += 1
        return self.event_id
