"""Splitting one list request into calls a 2.x station takes, and merging their answers back into one.

A station says how many entries (`ItemsPerMessage`) and bytes (`BytesPerMessage`) one GetVariables,
SetVariables, SetVariableMonitoring or ClearVariableMonitoring may carry; a bigger one it may refuse whole.
`plan` cuts the request into parts that fit, in order; `merge` puts the parts' results back in request order,
so the caller sees one answer as if one call had carried it all. Pure: no I/O, no session.

Bytes are those of the whole OCPP-J CALL frame (message id at its longest, 36 characters), the strictest
reading of "bytes in a message". An entry that alone makes a frame too big is never sent: its result says
`Rejected` with reason `TooLargeElement` (OCPP 2.0.1 appendix 5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Payload = dict[str, Any]
TOO_LARGE = "TooLargeElement"
UNSPECIFIED = "Unspecified"
_LONGEST_ID = "x" * 36


@dataclass(frozen=True, slots=True)
class Limits:
    """A station's limits for one action; None: no limit known."""

    items: int | None = None
    bytes: int | None = None


def _variable_failed(item: Payload, code: str, info: str) -> Payload:
    """A GetVariableResult / SetVariableResult (same fields) for an entry the station did not answer."""
    result: Payload = {
        "attributeStatus": "Rejected",
        "component": item["component"],
        "variable": item["variable"],
    }
    if "attributeType" in item:
        result["attributeType"] = item["attributeType"]
    result["attributeStatusInfo"] = {"reasonCode": code, "additionalInfo": info[:512]}
    return result


def _monitor_failed(item: Payload, code: str, info: str) -> Payload:
    result: Payload = {k: item[k] for k in ("id", "type", "severity", "component", "variable") if k in item}
    return {"status": "Rejected", **result, "statusInfo": {"reasonCode": code, "additionalInfo": info[:512]}}


def _clear_failed(item: int, code: str, info: str) -> Payload:
    return {
        "status": "Rejected",
        "id": item,
        "statusInfo": {"reasonCode": code, "additionalInfo": info[:512]},
    }


@dataclass(frozen=True, slots=True)
class Split:
    """Where an action keeps its entries and its results, which controller holds its limits, and the
    result to give an entry the station never answered."""

    component: str
    entries: str
    results: str
    failed: Callable[[Any, str, str], Payload]


SPLITS: dict[str, Split] = {
    "GetVariables": Split("DeviceDataCtrlr", "getVariableData", "getVariableResult", _variable_failed),
    "SetVariables": Split("DeviceDataCtrlr", "setVariableData", "setVariableResult", _variable_failed),
    "SetVariableMonitoring": Split(
        "MonitoringCtrlr", "setMonitoringData", "setMonitoringResult", _monitor_failed
    ),
    "ClearVariableMonitoring": Split("MonitoringCtrlr", "id", "clearMonitoringResult", _clear_failed),
}


@dataclass(frozen=True, slots=True)
class Part:
    """One call: the request indices of its entries, and its payload."""

    indices: list[int]
    payload: Payload


@dataclass(slots=True)
class Plan:
    parts: list[Part] = field(default_factory=list)
    too_large: list[int] = field(default_factory=list)  # indices of entries that fit no message


def _size(data: Any) -> int:
    return len(orjson.dumps(data))


def frame_bytes(action: str, payload: Payload) -> int:
    """Bytes of the CALL frame that carries `payload`, with the longest message id."""
    return _size([2, _LONGEST_ID, action, payload])


def plan(action: str, payload: Payload, limits: Limits) -> Plan:
    """Cut `payload` into parts of at most `limits.items` entries and `limits.bytes` frame bytes, each
    entry in request order; entries too big for any frame go to `too_large`. Greedy: a part is closed when
    the next entry would break a limit (compact JSON makes a part's size exactly computable)."""
    key = SPLITS[action].entries
    entries = payload[key]
    empty = frame_bytes(action, {**payload, key: []})
    max_items = limits.items if limits.items and limits.items > 0 else len(entries)
    max_bytes = limits.bytes if limits.bytes and limits.bytes > 0 else None
    result = Plan()
    indices: list[int] = []
    size = empty

    def close() -> None:
        if indices:
            result.parts.append(Part(list(indices), {**payload, key: [entries[i] for i in indices]}))
            indices.clear()

    for i, entry in enumerate(entries):
        grows = _size(entry)
        if max_bytes is not None and empty + grows > max_bytes:
            result.too_large.append(i)
            continue
        if len(indices) == max_items or (max_bytes is not None and size + 1 + grows > max_bytes):
            close()
        size = empty + grows if not indices else size + 1 + grows  # "," between entries
        indices.append(i)
    close()
    return result


def leading_fit(action: str, payload: Payload, key: str, max_bytes: int | None) -> int:
    """How many of the leading entries of `payload[key]` fit one CALL frame of at most `max_bytes` (for a
    request whose parts cannot be merged back, e.g. a versioned SendLocalList: the caller sends the rest
    in its next message)."""
    entries = payload.get(key) or []
    if max_bytes is None or max_bytes <= 0:
        return len(entries)
    size = frame_bytes(action, {**payload, key: []})
    for i, entry in enumerate(entries):
        size += _size(entry) + (1 if i else 0)  # "," between entries
        if size > max_bytes:
            return i
    return len(entries)


@dataclass(frozen=True, slots=True)
class Unanswered:
    """A part with no usable answer (CALLERROR, timeout, not sent at all): why, for each of its entries."""

    why: str


def merge(action: str, payload: Payload, planned: Plan, answers: Sequence[Payload | Unanswered]) -> Payload:
    """One answer for the whole request: each part's results where its entries stood, a `Rejected` result
    for every entry too large or in a part without an answer. A part answered with a different number of
    results than it carried keeps them together, in the place of its first entry."""
    split = SPLITS[action]
    entries = payload[split.entries]
    placed: list[tuple[int, Payload]] = []
    for i in planned.too_large:
        why = "alone it makes a message larger than the station's BytesPerMessage; not sent"
        placed.append((i, split.failed(entries[i], TOO_LARGE, why)))
    extra: Payload = {}
    for part, answer in zip(planned.parts, answers, strict=True):
        if isinstance(answer, Unanswered):
            placed += [(i, split.failed(entries[i], UNSPECIFIED, answer.why)) for i in part.indices]
            continue
        results = answer.get(split.results) or []
        if "customData" in answer:
            extra.setdefault("customData", answer["customData"])
        if len(results) == len(part.indices):
            placed += zip(part.indices, results, strict=True)
        else:
            placed += [(part.indices[0], r) for r in results]
    placed.sort(key=lambda pair: pair[0])  # stable: a part's results keep their order
    return {split.results: [result for _, result in placed], **extra}
