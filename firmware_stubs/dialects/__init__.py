"""OCPP version dialects: thin translators between the neutral charger core and each version's messages."""

from __future__ import annotations

from firmware_stubs.dialects.base import Dialect
from firmware_stubs.dialects.v16 import V16
from firmware_stubs.dialects.v21 import V21
from firmware_stubs.dialects.v201 import V201

_DIALECTS: dict[str, Dialect] = {"ocpp1.6": V16(), "ocpp2.0.1": V201(), "ocpp2.1": V21()}


def dialect_for(protocol: str) -> Dialect:
    """The dialect instance, shared by every charger, for a websocket subprotocol name."""
    try:
        return _DIALECTS[protocol]
    except KeyError:
        raise ValueError(f"unsupported protocol {protocol!r}; use one of {sorted(_DIALECTS)}") from None


__all__ = ["Dialect", "dialect_for"]
