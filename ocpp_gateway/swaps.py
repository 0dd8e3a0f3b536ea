"""Battery swaps: OCPP 2.1 `BatterySwap`, and the same facts from 1.6 / 2.0.1 stations by DataTransfer; the
neutral swap request (`chargeops.RequestBatterySwap`) as OCPP 2.1 RequestBatterySwap.

Older stations send `DataTransfer` with vendorId `org.chargeops.swap`, messageId `BatterySwap` and
`data` = the 2.1 BatterySwapRequest payload as a JSON string; it is validated against the 2.1 schema, so
both paths give the same neutral `BatterySwapped` event. `vendorInfo` is parsed when it is the documented
JSON object (`cycles`, `cellTempMin`, `cellTempMax`, `cellVoltMin`, `cellVoltMax`), kept as sent otherwise.
"""

from __future__ import annotations

from typing import Any

import orjson

from chargeops.events import BatterySwapped, Reported
from ocpp_gateway.routes import Reporting
from ocpp_gateway.rpc import RpcError, validate
from ocpp_gateway.versions import V21

SWAP_VENDOR_ID = "org.chargeops.swap"
_VENDOR_KEYS = {
    "cycles": "cycles",
    "cellTempMin": "cell_temp_min",
    "cellTempMax": "cell_temp_max",
    "cellVoltMin": "cell_volt_min",
    "cellVoltMax": "cell_volt_max",
}
Payload = dict[str, Any]


def swap_event(p: Payload) -> BatterySwapped:
    """A schema-valid 2.1 BatterySwapRequest payload as the neutral event."""
    return BatterySwapped(
        event_type=p["eventType"],
        request_id=p["requestId"],
        id_token=p["idToken"].get("idToken"),
        batteries=[_battery(b) for b in p["batteryData"]],
    )


def _battery(b: Payload) -> dict[str, Any]:
    out: dict[str, Any] = {"slot": b["evseId"], "serial": b["serialNumber"], "soc": b["soC"], "soh": b["soH"]}
    if "productionDate" in b:
        out["production_date"] = b["productionDate"]
    info = b.get("vendorInfo")
    if info is not None:
        try:
            parsed = orjson.loads(info)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.keys() <= _VENDOR_KEYS.keys():
            out |= {_VENDOR_KEYS[k]: v for k, v in parsed.items() if isinstance(v, int | float)}
        else:
            out["vendor_info"] = info
    return out


def swap_from_data_transfer(data: Any) -> BatterySwapped | None:
    """The DataTransfer fallback's `data`, or None when it is not a valid BatterySwapRequest."""
    try:
        payload = orjson.loads(data) if isinstance(data, str) else data
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    try:
        validate(V21, "BatterySwap", payload, response=False, unique_id="-1")
    except RpcError:
        return None
    return swap_event(payload)


async def on_data_transfer(session: Reporting, p: Payload) -> Payload:
    """Every version's DataTransfer handler: one carrying a swap becomes a swap, any other is stored as
    reported and answered UnknownVendorId."""
    if p.get("vendorId") != SWAP_VENDOR_ID:
        await session.emit(Reported("DataTransfer", p))
        return {"status": "UnknownVendorId"}
    swap = swap_from_data_transfer(p.get("data")) if p.get("messageId") == "BatterySwap" else None
    if swap is None:
        return {"status": "Rejected"}
    await session.emit(swap)
    return {"status": "Accepted"}


async def on_battery_swap(session: Reporting, p: Payload) -> Payload:
    """OCPP 2.1 BatterySwap: BatteryIn / BatteryOut / BatteryOutTimeout of a swap station (part 2, S)."""
    await session.emit(swap_event(p))
    return {}


def request_battery_swap(p: Payload) -> Payload:
    """The RequestBatterySwapRequest for a neutral `{"request_id", "id_token", "id_token_type"?}` (the
    schema check follows in the session)."""
    return {
        "requestId": p.get("request_id"),
        "idToken": {"idToken": p.get("id_token"), "type": p.get("id_token_type", "ISO14443")},
    }
