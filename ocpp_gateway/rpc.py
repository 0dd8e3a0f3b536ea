"""OCPP-J framing and schema validation, done once, centrally, for every message in both directions.

Validators are compiled (fastjsonschema) from the official JSON schemas the `ocpp` library ships and cached
per version, action and direction: the library's own `jsonschema` path costs 70–85 % of each message.
Every failure becomes an `RpcError` carrying the CALLERROR code the connection's OCPP version defines.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from ocpp_gateway.versions import OcppVersion

CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6
MAX_ID_LEN = 36
_ID_PREFIX = re.compile(rb'^\s*\[\s*\d\s*,\s*"([^"\\]{1,36})"')


class RpcError(Exception):
    """An error to answer with CALLERROR `code` (already spelled for the connection's version)."""

    def __init__(self, code: str, description: str, unique_id: str = "-1", details: dict | None = None):
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description[:255]
        self.unique_id = unique_id
        self.details = details or {}


@dataclass(slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallResult:
    unique_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class CallError:
    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


Frame = Call | CallResult | CallError


def parse_frame(raw: str | bytes, version: OcppVersion) -> Frame | None:
    """Parse one WebSocket message; None for a 2.1 SEND (no answer expected). Raises `RpcError`."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RpcError(version.format_violation, "message is not valid JSON", _salvage_id(raw)) from None
    if not isinstance(msg, list) or len(msg) < 3:
        raise RpcError(version.rpc_framework_error, "message is not an OCPP-J array", _salvage_id(raw))
    type_id, unique_id = msg[0], msg[1]
    if not isinstance(unique_id, str) or not unique_id or len(unique_id) > MAX_ID_LEN:
        raise RpcError(version.rpc_framework_error, "message id must be a string of 1-36 characters")
    if type(type_id) is not int:
        raise RpcError(version.rpc_framework_error, "message type id must be an integer", unique_id)
    if type_id == CALL or (type_id == SEND and version.name == "2.1"):
        if len(msg) != 4 or not isinstance(msg[2], str):
            raise RpcError(version.rpc_framework_error, "CALL must be [2, id, action, payload]", unique_id)
        if not isinstance(msg[3], dict):
            raise RpcError(version.format_violation, "CALL payload must be a JSON object", unique_id)
        return Call(unique_id, msg[2], msg[3]) if type_id == CALL else None
    if type_id == CALLRESULT and len(msg) == 3 and isinstance(msg[2], dict):
        return CallResult(unique_id, msg[2])
    if (
        type_id in (CALLERROR, CALLRESULTERROR)
        and len(msg) in (4, 5)
        and (type_id == CALLERROR or version.name == "2.1")
    ):
        details = msg[4] if len(msg) == 5 and isinstance(msg[4], dict) else {}
        return CallError(unique_id, str(msg[2]), str(msg[3]), details)
    if type_id in (CALLRESULT, CALLERROR):
        raise RpcError(version.rpc_framework_error, "malformed CALLRESULT / CALLERROR", unique_id)
    raise RpcError(version.message_type_not_supported, f"message type {type_id} is not supported", unique_id)


def _salvage_id(raw: str | bytes) -> str:
    """The message id of a broken frame where it can still be read, else "-1" (OCPP 2.0.1 part 4 §4.2.3)."""
    data = raw.encode() if isinstance(raw, str) else raw
    m = _ID_PREFIX.match(data[:128])
    return m.group(1).decode() if m else "-1"


def pack_call(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([CALL, unique_id, action, payload]).decode()


def pack_result(unique_id: str, payload: dict[str, Any]) -> str:
    return orjson.dumps([CALLRESULT, unique_id, payload]).decode()


def pack_error(err: RpcError) -> str:
    return orjson.dumps([CALLERROR, err.unique_id, err.code, err.description, err.details]).decode()


# Schema rule -> which CALLERROR it is (OCPP-J: type / length / format are data-type constraints;
# enum and ranges are property constraints; presence and cardinality are occurrence constraints).
_TYPE_RULES = frozenset({"type", "maxLength", "minLength", "format"})
_OCCURRENCE_RULES = frozenset({"required", "minItems", "maxItems", "minProperties", "maxProperties"})
_PROPERTY_RULES = frozenset(
    {"enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "pattern"}
)

Validator = Callable[[Any], Any]
_validators: dict[tuple[str, str, bool], Validator | None] = {}


def validator_for(version: OcppVersion, action: str, response: bool) -> Validator | None:
    """The compiled validator for one action and direction, or None if the version has no such action."""
    key = (version.subprotocol, action, response)
    try:
        return _validators[key]
    except KeyError:
        pass
    path = version.schema_path(action, response)
    compiled: Validator | None = None
    if path.is_file():
        schema = orjson.loads(path.read_text(encoding="utf-8-sig"))
        compiled = fastjsonschema.compile(schema, use_default=False)
    _validators[key] = compiled
    return compiled


def validate(
    version: OcppVersion, action: str, payload: dict[str, Any], *, response: bool, unique_id: str
) -> None:
    """Raise `RpcError` with the version's code if `payload` breaks the official schema."""
    check = validator_for(version, action, response)
    if check is None:
        raise RpcError("NotImplemented", f"{action} is not an OCPP {version.name} action", unique_id)
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise schema_error(version, exc, unique_id) from None


def schema_error(
    version: OcppVersion, exc: fastjsonschema.JsonSchemaValueException, unique_id: str
) -> RpcError:
    rule = exc.rule or ""
    where = ".".join(str(p) for p in (exc.path or [])[1:]) or "payload"
    detail = {"field": where, "rule": rule}
    if rule in _TYPE_RULES and where != "payload":
        code = "TypeConstraintViolation"
    elif rule in _OCCURRENCE_RULES:
        code = version.occurrence_violation
    elif rule in _PROPERTY_RULES:
        code = "PropertyConstraintViolation"
    else:
        code = version.format_violation
    return RpcError(code, exc.message, unique_id, detail)


def warm_up(version: OcppVersion) -> int:
    """Compile every validator of a version up front (start-up, not the first charger, pays for it)."""
    count = 0
    for action in version.known_actions():
        for response in (False, True):
            if validator_for(version, action, response) is not None:
                count += 1
    return count
