"""The neutral commands of `chargeops.commands` in each OCPP version's words, and their answers back.

`to_ocpp` turns a neutral `chargeops.*` action into the OCPP call of the charger's version (an OCPP action
passes through unchanged); `from_ocpp` turns the answer back where the command has neutral answers (DER,
local authorization, passwords);
`reboot_requested` reads from a call and its answer whether the charger agreed to restart.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from chargeops.commands import (
    DER_ACTIONS,
    REQUEST_BATTERY_SWAP,
    SET_CHARGER_PASSWORD,
    SET_EV_CHARGING_SCHEDULE,
    SET_POWER_LIMIT,
    UPDATE_COST,
)
from ocpp_gateway import local_auth, passwords
from ocpp_gateway.der import der_to_ocpp, reply_from_ocpp
from ocpp_gateway.ev_charging import tx_profile
from ocpp_gateway.limits import power_limit
from ocpp_gateway.swaps import request_battery_swap
from ocpp_gateway.versions import V16, V21, OcppVersion

Payload = dict[str, Any]
FIRMWARE_UPDATES = frozenset({"UpdateFirmware", "SignedUpdateFirmware"})  # 1.6 (security extension), 2.x
Translation = Callable[[OcppVersion, str, Payload], tuple[str, Payload]]


class Unsupported(ValueError):
    """A neutral action this charger's OCPP version has no message for."""


def _needs_v21(what: str, translate: Callable[[str, Payload], tuple[str, Payload]]) -> Translation:
    def translation(version: OcppVersion, action: str, p: Payload) -> tuple[str, Payload]:
        if version is not V21:
            raise Unsupported(f"{what} needs OCPP 2.1; this charger speaks {version.name}")
        return translate(action, p)

    return translation


_TRANSLATIONS: dict[str, Translation] = {
    SET_POWER_LIMIT: lambda version, _, p: ("SetChargingProfile", power_limit(version, p)),
    **dict.fromkeys(DER_ACTIONS, _needs_v21("DER control", der_to_ocpp)),
    REQUEST_BATTERY_SWAP: _needs_v21(
        "RequestBatterySwap", lambda _, p: ("RequestBatterySwap", request_battery_swap(p))
    ),
    SET_CHARGER_PASSWORD: lambda version, _, p: _set_password(version, p),
    SET_EV_CHARGING_SCHEDULE: lambda version, _, p: _ev_schedule(version, p),
    UPDATE_COST: lambda version, _, p: _cost_updated(version, p),
    **dict.fromkeys(local_auth.LOCAL_AUTH_ACTIONS, local_auth.to_ocpp),
}


def _ev_schedule(version: OcppVersion, p: Payload) -> tuple[str, Payload]:
    if version is V16:
        raise Unsupported("ISO 15118 charging schedules need OCPP 2.x; this charger speaks 1.6")
    return "SetChargingProfile", tx_profile(p)


def _cost_updated(version: OcppVersion, p: Payload) -> tuple[str, Payload]:
    """The running cost (decimal text) as 2.x CostUpdated's `totalCost` number."""
    if version is V16:
        raise Unsupported("CostUpdated needs OCPP 2.x; a 1.6 charger is told no cost")
    try:
        total = Decimal(str(p["total_cost"]))
        tx_id = str(p["transaction_id"])
    except (KeyError, ArithmeticError):
        raise ValueError("UpdateCost needs transaction_id and total_cost (decimal text)") from None
    if not total.is_finite():
        raise ValueError(f"total_cost {total} is not an amount")
    return "CostUpdated", {"totalCost": float(total), "transactionId": tx_id}


def _set_password(version: OcppVersion, p: Payload) -> tuple[str, Payload]:
    password = str(p.get("password", ""))
    if (why := passwords.problem(version, password)) is not None:
        raise ValueError(why)
    return passwords.set_password_call(version, password)


def to_ocpp(version: OcppVersion, action: str, payload: Payload) -> tuple[str, Payload]:
    """A neutral `chargeops.*` action as this version's OCPP call; OCPP actions pass through unchanged.
    Raises ValueError for a neutral payload that makes no sense (`Unsupported` for an action this version
    has no message for)."""
    translate = _TRANSLATIONS.get(action)
    return (action, payload) if translate is None else translate(version, action, payload)


def from_ocpp(action: str, answer: Payload) -> Payload:
    """The charger's answer to `action` (the neutral one) as the command's caller gets it."""
    if action in local_auth.LOCAL_AUTH_ACTIONS:
        return local_auth.from_ocpp(action, answer)
    if action == SET_CHARGER_PASSWORD:
        accepted = answer.get("status") or next(
            (r.get("attributeStatus") for r in answer.get("setVariableResult", ())), "Rejected"
        )
        return {"status": accepted}
    return reply_from_ocpp(answer) if action in DER_ACTIONS else answer


def reboot_requested(action: str, payload: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """What restart the charger agreed to, if any: a Reset; a TriggerMessage for a BootNotification; a
    firmware update, which installs with a reboot (1.6 UpdateFirmware is answered without a status)."""
    agreed = answer.get("status") in ("Accepted", "Scheduled")
    if action == "Reset" and agreed:
        return "reset"
    if action == "TriggerMessage" and payload.get("requestedMessage") == "BootNotification" and agreed:
        return "trigger_boot"
    if action in FIRMWARE_UPDATES and answer.get("status", "Accepted") in ("Accepted", "AcceptedCanceled"):
        return "firmware_update"
    return None
