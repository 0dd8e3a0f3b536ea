"""Splitting list requests to a station's ItemsPerMessage / BytesPerMessage (`ocpp_gateway.batching`), the
limits learned per connection (`message_limits`) and the calls made in parts (`split_calls`) against a
stand-in sender: fast, no socket. tests/test_ocpp_conformance.py drives the same over a real WebSocket."""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

import pytest

from chargeops.commands import CommandReply
from chargeops.logs import for_charger
from ocpp_gateway.batching import Limits, Unanswered, frame_bytes, leading_fit, merge, plan
from ocpp_gateway.message_limits import MessageLimits
from ocpp_gateway.rpc import pack_call, validate
from ocpp_gateway.split_calls import call_in_parts
from ocpp_gateway.versions import V201

Payload = dict[str, Any]
LOG = for_charger(logging.getLogger("test"), "CP-B")


def var(i: int, value: str | None = None) -> Payload:
    entry: Payload = {"component": {"name": "Ctrlr"}, "variable": {"name": f"V{i}"}}
    if value is not None:
        entry["attributeValue"] = value
    return entry


def got(entry: Payload, value: str = "1") -> Payload:
    return {"attributeStatus": "Accepted", "attributeValue": value, **entry}


def test_no_limits_no_split() -> None:
    payload = {"getVariableData": [var(i) for i in range(5)]}
    planned = plan("GetVariables", payload, Limits())
    assert [p.indices for p in planned.parts] == [[0, 1, 2, 3, 4]] and planned.too_large == []
    assert planned.parts[0].payload == payload


def test_items_per_message_cuts_in_order_and_keeps_the_other_fields() -> None:
    payload = {"getVariableData": [var(i) for i in range(5)], "customData": {"vendorId": "X"}}
    planned = plan("GetVariables", payload, Limits(items=2))
    assert [p.indices for p in planned.parts] == [[0, 1], [2, 3], [4]]
    assert all(p.payload["customData"] == {"vendorId": "X"} for p in planned.parts)
    assert planned.parts[1].payload["getVariableData"] == [var(2), var(3)]


def test_leading_fit_takes_the_most_leading_entries_a_frame_holds() -> None:
    """SendLocalList cannot be split and merged (each message has its own version): the leading entries
    whose frame fits go; one more would not fit; none when the first alone is too large."""
    rng = random.Random(11)
    entries = [
        {"idToken": {"idToken": f"T{i}" + "x" * rng.randrange(0, 30), "type": "ISO14443"}} for i in range(9)
    ]
    payload = {"versionNumber": 3, "updateType": "Differential", "localAuthorizationList": entries}
    key = "localAuthorizationList"
    assert leading_fit("SendLocalList", payload, key, None) == 9
    for limit in (200, 300, 500):
        n = leading_fit("SendLocalList", payload, key, limit)
        assert 0 < n < 9
        assert frame_bytes("SendLocalList", {**payload, key: entries[:n]}) <= limit
        assert frame_bytes("SendLocalList", {**payload, key: entries[: n + 1]}) > limit
    assert leading_fit("SendLocalList", payload, key, 100) == 0


def test_bytes_per_message_parts_fit_and_are_full() -> None:
    """Each part's frame fits the limit (also with a real uuid4 message id) and could not take the next
    entry: the size is computed exactly, not estimated."""
    rng = random.Random(7)
    entries = [var(i, "x" * rng.randrange(0, 300)) for i in range(40)]
    payload = {"setVariableData": entries}
    for limit in (400, 700, 1500):
        planned = plan("SetVariables", payload, Limits(bytes=limit))
        sent = [i for p in planned.parts for i in p.indices]
        assert sorted(sent + planned.too_large) == list(range(40)) and sent == sorted(sent)
        for k, part in enumerate(planned.parts):
            assert len(pack_call(str(uuid.uuid4()), "SetVariables", part.payload)) <= limit
            assert frame_bytes("SetVariables", part.payload) <= limit
            if k + 1 < len(planned.parts):
                nxt = planned.parts[k + 1].indices[0]
                bigger = {"setVariableData": part.payload["setVariableData"] + [entries[nxt]]}
                assert frame_bytes("SetVariables", bigger) > limit
        for i in planned.too_large:
            assert frame_bytes("SetVariables", {"setVariableData": [entries[i]]}) > limit


def test_both_limits_together() -> None:
    payload = {"getVariableData": [var(i) for i in range(7)]}
    one = frame_bytes("GetVariables", {"getVariableData": [var(0)]})
    planned = plan("GetVariables", payload, Limits(items=3, bytes=one + 60))  # two small entries fit
    assert [p.indices for p in planned.parts] == [[0, 1], [2, 3], [4, 5], [6]]


def test_an_entry_too_large_is_not_sent_and_answered_in_its_place() -> None:
    entries = [var(0, "a"), var(1, "b" * 500), var(2, "c")]
    payload = {"setVariableData": entries}
    planned = plan("SetVariables", payload, Limits(items=10, bytes=300))
    assert [p.indices for p in planned.parts] == [[0, 2]] and planned.too_large == [1]
    answer = {
        "setVariableResult": [
            {"attributeStatus": "Accepted", **var(0)},
            {"attributeStatus": "Accepted", **var(2)},
        ]
    }
    merged = merge("SetVariables", payload, planned, [answer])
    results = merged["setVariableResult"]
    assert [r["variable"]["name"] for r in results] == ["V0", "V1", "V2"]
    assert results[1]["attributeStatus"] == "Rejected"
    assert results[1]["attributeStatusInfo"]["reasonCode"] == "TooLargeElement"
    validate(V201, "SetVariables", merged, response=True, unique_id="t")


def test_merge_keeps_request_order_and_marks_unanswered_parts() -> None:
    payload = {"getVariableData": [var(i) for i in range(5)]}
    planned = plan("GetVariables", payload, Limits(items=2))
    answers: list[Payload | Unanswered] = [
        {"getVariableResult": [got(var(0), "a"), got(var(1), "b")]},
        Unanswered("not answered: error FormatViolation"),
        Unanswered("not sent: an earlier part of this request was not answered"),
    ]
    merged = merge("GetVariables", payload, planned, answers)
    results = merged["getVariableResult"]
    assert [r["variable"]["name"] for r in results] == ["V0", "V1", "V2", "V3", "V4"]
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 2 + ["Rejected"] * 3
    assert results[2]["attributeStatusInfo"] == {
        "reasonCode": "Unspecified",
        "additionalInfo": "not answered: error FormatViolation",
    }
    validate(V201, "GetVariables", merged, response=True, unique_id="t")


def test_a_part_answered_with_the_wrong_count_stays_together_in_its_place() -> None:
    payload = {"getVariableData": [var(i) for i in range(4)]}
    planned = plan("GetVariables", payload, Limits(items=2))
    odd = {"getVariableResult": [got(var(0)), got(var(1)), got(var(9))]}
    merged = merge("GetVariables", payload, planned, [odd, {"getVariableResult": [got(var(2)), got(var(3))]}])
    assert [r["variable"]["name"] for r in merged["getVariableResult"]] == ["V0", "V1", "V9", "V2", "V3"]


def test_monitoring_requests_split_too() -> None:
    monitor = {"value": 1.0, "type": "Delta", "severity": 5, **var(1)}
    payload = {"setMonitoringData": [monitor, {**monitor, "value": 2.0}]}
    planned = plan("SetVariableMonitoring", payload, Limits(items=1))
    merged = merge("SetVariableMonitoring", payload, planned, [Unanswered("x"), Unanswered("y")])
    assert [r["status"] for r in merged["setMonitoringResult"]] == ["Rejected", "Rejected"]
    validate(V201, "SetVariableMonitoring", merged, response=True, unique_id="t")
    clear = {"id": list(range(1, 8))}
    planned = plan("ClearVariableMonitoring", clear, Limits(items=3))
    assert [p.payload["id"] for p in planned.parts] == [[1, 2, 3], [4, 5, 6], [7]]
    merged = merge("ClearVariableMonitoring", clear, planned, [Unanswered("z")] * 3)
    assert [r["id"] for r in merged["clearMonitoringResult"]] == list(range(1, 8))
    validate(V201, "ClearVariableMonitoring", merged, response=True, unique_id="t")


def _ref(kind: str, action: str, component: str = "DeviceDataCtrlr") -> Payload:
    return {"component": {"name": component}, "variable": {"name": kind, "instance": action}}


def _told(kind: str, action: str, value: str, component: str = "DeviceDataCtrlr") -> Payload:
    """A GetVariables result giving one limit."""
    return {"attributeStatus": "Accepted", "attributeValue": value, **_ref(kind, action, component)}


def test_limits_are_learned_from_a_report_and_from_answers() -> None:
    limits = MessageLimits()
    assert not limits.known("GetVariables") and limits.of("GetVariables") == Limits()
    report = [
        {
            **_ref("ItemsPerMessage", "GetVariables"),
            "variableAttribute": [{"type": "Target", "value": "9"}, {"value": "4"}],  # no type: Actual
        },
        {
            **_ref("BytesPerMessage", "GetVariables"),
            "variableAttribute": [{"type": "Actual", "value": "8000"}],
        },
        {**_ref("ItemsPerMessage", "SetVariables", "OtherCtrlr"), "variableAttribute": [{"value": "1"}]},
    ]
    limits.learn_report(report)
    assert limits.known("GetVariables") and limits.of("GetVariables") == Limits(4, 8000)
    assert not limits.known("SetVariables")  # another component's variable is not the limit
    assert limits.question("SetVariables")["getVariableData"] == [
        _ref("ItemsPerMessage", "SetVariables"),
        _ref("BytesPerMessage", "SetVariables"),
    ]
    unknown = {"attributeStatus": "UnknownVariable", **_ref("BytesPerMessage", "SetVariables")}
    limits.learn_results([_told("ItemsPerMessage", "SetVariables", "0"), unknown])
    assert not limits.known("SetVariables")  # an unknown variable is not an answer ...
    limits.no_answer("SetVariables")  # ... until the question is given up
    assert limits.known("SetVariables") and limits.of("SetVariables") == Limits(None, None)  # 0: no limit
    monitoring = MessageLimits()
    monitoring.learn_results([_told("ItemsPerMessage", "ClearVariableMonitoring", "3", "MonitoringCtrlr")])
    assert monitoring.of("ClearVariableMonitoring") == Limits(3, None)


class Station:
    """Answers each call from a queue of replies (default: every entry Accepted) and records what it got."""

    def __init__(self, *replies: CommandReply) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, Payload, float]] = []

    async def __call__(self, action: str, payload: Payload, timeout: float) -> CommandReply:
        self.calls.append((action, payload, timeout))
        if self.replies:
            return self.replies.pop(0)
        return CommandReply(
            "result", payload={"getVariableResult": [got(e) for e in payload["getVariableData"]]}
        )


def _limits_answer(items: str, size: str) -> CommandReply:
    told = [_told("ItemsPerMessage", "GetVariables", items), _told("BytesPerMessage", "GetVariables", size)]
    return CommandReply("result", payload={"getVariableResult": told})


TOO_MANY = CommandReply("error", error_code="OccurrenceConstraintViolation", description="too many")


async def test_a_request_goes_whole_until_the_station_refuses_it_then_in_parts_of_its_limits() -> None:
    """TC_B_07: the operator's request reaches a station whose limits are unknown as written, nothing asked
    before it; refused as beyond its limits, they are asked once and the request goes again in parts."""
    fits = Station()
    payload = {"getVariableData": [var(i) for i in range(2)]}
    reply = await call_in_parts(fits, MessageLimits(), "GetVariables", payload, 30, LOG)
    assert reply.outcome == "result" and [c[1] for c in fits.calls] == [payload]

    station = Station(TOO_MANY, _limits_answer("2", "65000"))
    limits = MessageLimits()
    payload = {"getVariableData": [var(i) for i in range(5)]}
    reply = await call_in_parts(station, limits, "GetVariables", payload, 30, LOG)
    assert reply.outcome == "result"
    assert [r["variable"]["name"] for r in reply.payload["getVariableResult"]] == [f"V{i}" for i in range(5)]
    whole, question, *parts = station.calls
    assert whole[1] == payload
    assert [e["variable"] for e in question[1]["getVariableData"]] == [
        {"name": "ItemsPerMessage", "instance": "GetVariables"},
        {"name": "BytesPerMessage", "instance": "GetVariables"},
    ]
    assert [len(p[1]["getVariableData"]) for p in parts] == [2, 2, 1]
    assert all(0 < p[2] <= 30 for p in parts)  # the calls share the request's timeout
    station.calls.clear()
    await call_in_parts(station, limits, "GetVariables", payload, 30, LOG)
    assert len(station.calls) == 3  # not asked again: straight out in parts


async def test_a_single_entry_is_sent_as_is_without_asking() -> None:
    station = Station()
    payload = {"getVariableData": [var(0)]}
    reply = await call_in_parts(station, MessageLimits(), "GetVariables", payload, 5, LOG)
    assert reply.outcome == "result" and station.calls == [("GetVariables", payload, pytest.approx(5, abs=1))]


@pytest.mark.parametrize(
    "told",
    [
        CommandReply("error", error_code="NotSupported", description="no"),
        CommandReply(
            "result",
            payload={
                "getVariableResult": [
                    {"attributeStatus": "UnknownVariable", **_ref("ItemsPerMessage", "GetVariables")}
                ]
            },
        ),
    ],
)
async def test_a_refusal_the_station_will_not_explain_is_the_answer(told: CommandReply) -> None:
    """Refused whole, and no limits told: the refusal is the reply (sending the same again would not
    help), and the station is not asked again on this connection."""
    station = Station(TOO_MANY, told)
    payload = {"getVariableData": [var(i) for i in range(3)]}
    reply = await call_in_parts(station, MessageLimits(), "GetVariables", payload, 5, LOG)
    assert reply == TOO_MANY and len(station.calls) == 2


async def test_other_failures_of_the_whole_request_are_its_reply() -> None:
    for failure in (
        CommandReply("timeout", description="no answer within 5 s"),
        CommandReply("error", error_code="NotSupported", description="no"),
    ):
        station = Station(failure)
        reply = await call_in_parts(
            station, MessageLimits(), "GetVariables", {"getVariableData": [var(0), var(1)]}, 5, LOG
        )
        assert reply == failure and len(station.calls) == 1


async def test_a_failure_after_the_first_part_is_answered_per_entry_and_nothing_more_is_sent() -> None:
    limits = MessageLimits()
    limits.learn_results(_limits_answer("2", "65000").payload["getVariableResult"])
    ok = CommandReply("result", payload={"getVariableResult": [got(var(0)), got(var(1))]})
    station = Station(ok, CommandReply("timeout", description="no answer"))
    payload = {"getVariableData": [var(i) for i in range(6)]}
    reply = await call_in_parts(station, limits, "GetVariables", payload, 5, LOG)
    assert len(station.calls) == 2 and reply.outcome == "result"
    infos = [
        r.get("attributeStatusInfo", {}).get("additionalInfo", "") for r in reply.payload["getVariableResult"]
    ]
    assert infos[:2] == ["", ""] and "may or may not" in infos[2] and infos[3] == infos[2]
    assert infos[4].startswith("not sent") and infos[5] == infos[4]
    first_fails = Station(CommandReply("error", error_code="FormatViolation", description="too big"))
    failed = await call_in_parts(first_fails, limits, "GetVariables", payload, 5, LOG)
    assert failed.outcome == "error" and len(first_fails.calls) == 1  # as for an unsplit call
