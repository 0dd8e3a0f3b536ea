"""What every charger session shares: settings, the store, the bus, this gateway's name, the signer of
stations' certificates (none: CSRs are refused), the PKI clients (OCSP cache, contract certificate service)
Plug & Charge answers from, and its tariffs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chargeops.settings import Settings
from ocpp_gateway.pki import Pki
from ocpp_gateway.pricing import Pricing
from ocpp_gateway.store import Store
from telemetry.bus import Bus

if TYPE_CHECKING:
    from ocpp_gateway.certificates import GatewayCertificates


@dataclass(slots=True)
class GatewayContext:
    settings: Settings
    store: Store
    bus: Bus
    gateway_id: str
    certificates: GatewayCertificates | None = None
    pricing: Pricing | None = None  # None: sessions are not priced (no database behind the gateway)
    pki: Pki = field(init=False)

    def __post_init__(self) -> None:
        self.pki = Pki(self.settings)
