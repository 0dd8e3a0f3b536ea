"""Charger password rotation in each OCPP version's words.

A charger's Basic-auth password is changed by 1.6 `ChangeConfiguration AuthorizationKey` (security
whitepaper: 16-20 bytes, sent hex-encoded; the charger decodes it) or 2.x `SetVariables
SecurityCtrlr.BasicAuthPassword` (A01: 16-40 characters). `password_set_by` recognises such a call whoever
sent it — the API's rotation (`chargeops.SetChargerPassword`) or an operator's relayed raw call — so the
session can keep the new password once the charger accepts it.
"""

from __future__ import annotations

import binascii
from typing import Any

from chargeops.passwords import ALPHABET
from ocpp_gateway.versions import V16, OcppVersion

Payload = dict[str, Any]
ACCEPTED = ("Accepted", "RebootRequired")


def length_range(version: OcppVersion) -> tuple[int, int]:
    return (16, 20) if version is V16 else (16, 40)


def problem(version: OcppVersion, password: str) -> str | None:
    """Why `password` cannot be this version's charger password (None: it can)."""
    low, high = length_range(version)
    if not low <= len(password) <= high:
        return f"an OCPP {version.name} charger password has {low}-{high} characters"
    if not set(password) <= set(ALPHABET):
        return "a charger password uses letters, digits and *-_=:+|@. only"
    return None


def call_problem(version: OcppVersion, action: str, payload: Payload) -> str | None:
    """Why a password-setting call (relayed raw, or built here) breaks the version's key rules; None if it
    sets no password or a valid one. 1.6's AuthorizationKey must be hex of 16-20 bytes."""
    password = password_set_by(action, payload)
    if password is None:
        return None
    if action == "ChangeConfiguration":
        value = str(payload.get("value", ""))
        try:
            raw = binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            return "AuthorizationKey must be hex-encoded (16-20 bytes: 32-40 hex digits)"
        if not 16 <= len(raw) <= 20:
            return f"AuthorizationKey must be 16-20 bytes, not {len(raw)}"
    return problem(version, password)


def set_password_call(version: OcppVersion, password: str) -> tuple[str, Payload]:
    if version is V16:
        value = password.encode().hex().upper()
        return "ChangeConfiguration", {"key": "AuthorizationKey", "value": value}
    entry = {
        "attributeValue": password,
        "component": {"name": "SecurityCtrlr"},
        "variable": {"name": "BasicAuthPassword"},
    }
    return "SetVariables", {"setVariableData": [entry]}


def password_set_by(action: str, payload: Payload) -> str | None:
    """The new password a CSMS-initiated call gives the charger, if it sets one."""
    if action == "ChangeConfiguration" and payload.get("key") == "AuthorizationKey":
        value = str(payload.get("value", ""))
        try:
            return binascii.unhexlify(value).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return value  # not hex: a charger that takes the key as it is
    if action == "SetVariables":
        for entry in payload.get("setVariableData", ()):
            if _is_password_variable(entry):
                return str(entry.get("attributeValue"))
    return None


def accepted(action: str, answer: Payload) -> bool:
    """Whether the charger's answer to a password-setting call took the new password."""
    if action == "ChangeConfiguration":
        return answer.get("status") in ACCEPTED
    return any(
        _is_password_variable(r) and r.get("attributeStatus") in ACCEPTED
        for r in answer.get("setVariableResult", ())
    )


def _is_password_variable(entry: Payload) -> bool:
    return (entry.get("component") or {}).get("name") == "SecurityCtrlr" and (
        entry.get("variable") or {}
    ).get("name") == "BasicAuthPassword"
