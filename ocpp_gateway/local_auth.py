"""Authorization data in each OCPP version's words: the idTagInfo (1.6) / idTokenInfo (2.x) the gateway
answers Authorize, StartTransaction and TransactionEvent with and puts in a local list entry, and the neutral
local-authorization commands of `chargeops.commands` (GetLocalAuthSettings, GetLocalListVersion,
SendLocalList, ClearAuthCache) as calls and their answers back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chargeops.commands import (
    CLEAR_AUTH_CACHE,
    GET_LOCAL_AUTH_SETTINGS,
    GET_LOCAL_LIST_VERSION,
    SEND_LOCAL_LIST,
)
from ocpp_gateway.times import ocpp_time, parse_time
from ocpp_gateway.versions import V16, OcppVersion

Payload = dict[str, Any]
GROUP_TOKEN_TYPE = "Central"  # a group id is ours (the operator's), not read from a card
LOCAL_AUTH_ACTIONS = frozenset(
    {GET_LOCAL_AUTH_SETTINGS, GET_LOCAL_LIST_VERSION, SEND_LOCAL_LIST, CLEAR_AUTH_CACHE}
)

# neutral setting → 1.6 configuration key / 2.x (component, variable)
_V16_KEYS = {
    "list_enabled": "LocalAuthListEnabled",
    "max_length": "LocalAuthListMaxLength",
    "items_per_message": "SendLocalListMaxLength",
    "cache_enabled": "AuthorizationCacheEnabled",
}
_V2_VARIABLES = {
    "list_enabled": ("LocalAuthListCtrlr", "Enabled"),
    "items_per_message": ("LocalAuthListCtrlr", "ItemsPerMessage"),
    "bytes_per_message": ("LocalAuthListCtrlr", "BytesPerMessage"),
    "cache_enabled": ("AuthCacheCtrlr", "Enabled"),
}
_BOOLEAN = ("list_enabled", "cache_enabled")
SETTINGS = ("list_enabled", "max_length", "items_per_message", "bytes_per_message", "cache_enabled")


def id_tag_info(status: str, expiry: datetime | None, group_id: str | None) -> Payload:
    """1.6 IdTagInfo."""
    info: Payload = {"status": status}
    if expiry is not None:
        info["expiryDate"] = ocpp_time(expiry)
    if group_id:
        info["parentIdTag"] = group_id
    return info


def id_token_info(status: str, expiry: datetime | None, group_id: str | None) -> Payload:
    """2.x IdTokenInfo."""
    info: Payload = {"status": status}
    if expiry is not None:
        info["cacheExpiryDateTime"] = ocpp_time(expiry)
    if group_id:
        info["groupIdToken"] = {"idToken": group_id, "type": GROUP_TOKEN_TYPE}
    return info


def _entry(version: OcppVersion, e: Payload) -> Payload:
    token = e.get("id_token")
    if not isinstance(token, str) or not token:
        raise ValueError("every entry needs an id_token")
    status = e.get("status")
    expiry = parse_time(e["expiry"]) if e.get("expiry") else None
    if version is V16:
        entry: Payload = {"idTag": token}
        if status is not None:
            entry["idTagInfo"] = id_tag_info(status, expiry, e.get("group_id"))
        return entry
    entry = {"idToken": {"idToken": token, "type": e.get("type") or "ISO14443"}}
    if status is not None:
        entry["idTokenInfo"] = id_token_info(status, expiry, e.get("group_id"))
    return entry


def _send_local_list(version: OcppVersion, p: Payload) -> Payload:
    number = p.get("version")
    if not isinstance(number, int) or number <= 0:
        raise ValueError("version must be a whole number above 0 (0 and -1 mean 'no list')")
    full = bool(p.get("full"))
    entries = [_entry(version, e) for e in p.get("entries") or ()]
    if full and any(("idTagInfo" if version is V16 else "idTokenInfo") not in e for e in entries):
        raise ValueError("a full update cannot remove tokens: every entry needs a status")
    call: Payload = {"listVersion" if version is V16 else "versionNumber": number}
    call["updateType"] = "Full" if full else "Differential"
    if entries:  # 2.x: the list has at least one entry when present
        call["localAuthorizationList"] = entries
    return call


def _settings_call(version: OcppVersion) -> tuple[str, Payload]:
    if version is V16:
        return "GetConfiguration", {"key": list(_V16_KEYS.values())}
    data = [{"component": {"name": c}, "variable": {"name": v}} for c, v in _V2_VARIABLES.values()]
    return "GetVariables", {"getVariableData": data}


def to_ocpp(version: OcppVersion, action: str, p: Payload) -> tuple[str, Payload]:
    """The OCPP call of a neutral local-authorization action (ValueError: a payload that makes no sense)."""
    if action == GET_LOCAL_AUTH_SETTINGS:
        return _settings_call(version)
    if action == SEND_LOCAL_LIST:
        return "SendLocalList", _send_local_list(version, p)
    if action == GET_LOCAL_LIST_VERSION:
        return "GetLocalListVersion", {}
    return "ClearCache", {}


def _value(name: str, raw: object) -> bool | int | None:
    text = str(raw).strip().lower()
    if name in _BOOLEAN:
        return {"true": True, "false": False}.get(text)
    try:
        return int(text)
    except ValueError:
        return None


def _settings_answer(answer: Payload) -> Payload:
    raw: dict[str, object] = {}
    if "configurationKey" in answer or "unknownKey" in answer:  # 1.6 GetConfiguration
        by_key = {k["key"]: k.get("value") for k in answer.get("configurationKey") or ()}
        raw = {name: by_key[key] for name, key in _V16_KEYS.items() if by_key.get(key) is not None}
    for result in answer.get("getVariableResult") or ():  # 2.x GetVariables
        where = (result["component"]["name"], result["variable"]["name"])
        name = next((n for n, cv in _V2_VARIABLES.items() if cv == where), None)
        if name and result.get("attributeStatus") == "Accepted" and "attributeValue" in result:
            raw[name] = result["attributeValue"]
    return {name: _value(name, raw[name]) if name in raw else None for name in SETTINGS}


def from_ocpp(action: str, answer: Payload) -> Payload:
    """The charger's answer to a neutral local-authorization action, in neutral words."""
    if action == GET_LOCAL_AUTH_SETTINGS:
        return _settings_answer(answer)
    if action == GET_LOCAL_LIST_VERSION:
        return {"version": answer.get("listVersion", answer.get("versionNumber"))}
    out: Payload = {"status": answer.get("status")}
    reason = (answer.get("statusInfo") or {}).get("reasonCode")
    if reason:
        out["reason"] = reason
    if "entries_sent" in answer:  # added by the gateway: a SendLocalList cut to BytesPerMessage
        out["entries_sent"] = answer["entries_sent"]
    return out
