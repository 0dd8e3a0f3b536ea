"""OCPP 2.1 dialect: 2.0.1 plus what swap stations need (part 2, section S: battery swapping).

Everything 2.0.1 has keeps its 2.0.1 shape in 2.1, so this only adds the swap messages and validates
against the 2.1 schemas (``version``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_stubs import rpc
from firmware_stubs.dialects.base import Payload
from firmware_stubs.dialects.v201 import V201

if TYPE_CHECKING:
    from firmware_stubs.charger import SimulatedCharger


class V21(V201):
    version = "2.1"
    subprotocol = "ocpp2.1"

    def battery_swap(self, cp: SimulatedCharger, payload: Payload) -> None:
        cp.emit("BatterySwap", payload, transactional=True)

    def on_RequestBatterySwap(self, cp: SimulatedCharger, p: Payload) -> Payload:
        from firmware_stubs.swap_station import SwapStation

        if not isinstance(cp, SwapStation):
            raise rpc.CallError("NotSupported", "not a battery-swap station")
        return {"status": "Accepted" if cp.request_swap(p["requestId"], p["idToken"]) else "Rejected"}
