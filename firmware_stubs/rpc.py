"""OCPP-J framing (``[2,id,action,payload]``, ``[3,id,payload]``, ``[4,id,code,desc,details]``) with orjson.

Kept free of any per-version knowledge so both dialects share one wire layer.
"""

from __future__ import annotations

from typing import Any

import orjson

CALL = 2
CALLRESULT = 3
CALLERROR = 4


class CallError(Exception):
    """Raised by a CSMS-call handler to answer with a CALLERROR instead of a CALLRESULT.

    ``code`` is the version-neutral (OCPP 2.0.1 spelling) error code; dialects translate it.
    """

    def __init__(self, code: str, description: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


class FrameError(Exception):
    """The received text is not a well-formed OCPP-J frame."""

    def __init__(self, code: str, description: str, unique_id: str = "-1") -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.unique_id = unique_id


def dumps(frame: list[Any]) -> bytes:
    """Serialise a frame; bytes are sent as a *text* websocket frame by the caller."""
    return orjson.dumps(frame)


def parse(raw: str | bytes) -> list[Any]:
    """Decode and structurally check one OCPP-J frame, raising :class:`FrameError` on garbage."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("FormatViolation", f"invalid JSON: {exc}") from exc
    if not isinstance(frame, list) or len(frame) < 3 or not isinstance(frame[1], str):
        raise FrameError("RpcFrameworkError", "frame is not [type, id, ...]")
    kind = frame[0]
    uid = frame[1]
    if kind == CALL:
        if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
            raise FrameError("RpcFrameworkError", "CALL must be [2, id, action, {payload}]", uid)
    elif kind == CALLRESULT:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise FrameError("RpcFrameworkError", "CALLRESULT must be [3, id, {payload}]", uid)
    elif kind == CALLERROR:
        if len(frame) < 4:
            raise FrameError("RpcFrameworkError", "CALLERROR must be [4, id, code, desc, details]", uid)
    else:
        raise FrameError("MessageTypeNotSupported", f"unknown message type {kind!r}", uid)
    return frame
