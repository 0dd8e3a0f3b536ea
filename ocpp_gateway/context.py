"""What every charger session shares: settings, the store, the bus and this gateway's name."""

from __future__ import annotations

from dataclasses import dataclass

from chargeops.settings import Settings
from ocpp_gateway.store import Store
from telemetry.bus import Bus


@dataclass(slots=True)
class GatewayContext:
    settings: Settings
    store: Store
    bus: Bus
    gateway_id: str
