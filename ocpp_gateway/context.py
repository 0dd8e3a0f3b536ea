"""What every charger session shares: settings, the store, the bus, this gateway's name and its tariffs."""

from __future__ import annotations

from dataclasses import dataclass

from chargeops.settings import Settings
from ocpp_gateway.pricing import Pricing
from ocpp_gateway.store import Store
from telemetry.bus import Bus


@dataclass(slots=True)
class GatewayContext:
    settings: Settings
    store: Store
    bus: Bus
    gateway_id: str
    pricing: Pricing | None = None  # None: sessions are not priced (no database behind the gateway)
