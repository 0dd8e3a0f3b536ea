"""Validation against the official OCPP JSON schemas shipped in the ``ocpp`` package.

Uses ``jsonschema`` (not the server's validator) so strict mode is an independent second opinion.
Validators are compiled once per process and shared by every simulated charger.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import orjson
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMAT_CHECKER = FormatChecker()
_FOLDERS = {"1.6": "v16", "2.0.1": "v201", "2.1": "v21"}


@FORMAT_CHECKER.checks("date-time")
def _is_datetime(value: object) -> bool:
    """RFC 3339 date-time; jsonschema skips this format unless an extra package is installed."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        dt.datetime.fromisoformat(value.upper())
    except ValueError:
        return False
    return True


def schema(version: str, name: str) -> dict[str, Any] | None:
    """The official schema `name` (e.g. "SetDERControlRequest") of an OCPP version, None if there is none.
    Decimal floats: 1.6 schemas use multipleOf 0.1, which binary floats cannot satisfy reliably."""
    path = resources.files("ocpp") / _FOLDERS[version] / "schemas" / f"{name}.json"
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"), parse_float=Decimal)
    return loaded


@cache
def _validator(version: str, name: str) -> Validator | None:
    loaded = schema(version, name)
    if loaded is None:
        return None
    cls = validator_for(loaded)
    return cls(loaded, format_checker=FORMAT_CHECKER)


def schema_name(version: str, action: str, response: bool) -> str:
    """File name of the schema: 1.6 names requests by the bare action, 2.0.1 and 2.1 append 'Request'."""
    if response:
        return f"{action}Response"
    return action if version == "1.6" else f"{action}Request"


def has_schema(version: str, action: str) -> bool:
    return _validator(version, schema_name(version, action, False)) is not None


def validate(version: str, action: str, payload: Any, *, response: bool) -> ValidationError | None:
    """Return the most relevant schema violation, or None if the payload is valid."""
    validator = _validator(version, schema_name(version, action, response))
    if validator is None:
        return None
    instance = json.loads(orjson.dumps(payload), parse_float=Decimal)
    return best_match(validator.iter_errors(instance))


def error_code(err: ValidationError) -> str:
    """Map a schema violation to the OCPP-J error code (2.0.1 spelling; dialects translate)."""
    if err.validator == "required":
        return "OccurrenceConstraintViolation"
    if err.validator == "type":
        return "TypeConstraintViolation"
    if err.validator == "additionalProperties":
        return "FormatViolation"
    return "PropertyConstraintViolation"


def describe(err: ValidationError) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "<root>"
    return f"{where}: {err.message}"
