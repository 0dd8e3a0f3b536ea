"""A 2.0.1 station's DeviceDataCtrlr `ItemsPerMessage` / `BytesPerMessage` over a real WebSocket (issue 11):
an operator's GetVariables / SetVariables through the API reaches the station in calls that fit what it
said it takes, and the API answers once, with every entry's result in request order (B05/B06)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger

Payload = dict[str, Any]
HEADERS = {"Authorization": "Bearer test-admin-token"}
T = "2026-11-25T10:00:00Z"


def entry(name: str, component: str = "SampledDataCtrlr", **variable: str) -> Payload:
    return {"component": {"name": component}, "variable": {"name": name, **variable}}


def same_entry(data: Payload) -> Payload:
    """The component and variable of a request entry, as its result repeats them."""
    return {"component": data["component"], "variable": data["variable"]}


def limit(kind: str, action: str, value: str) -> Payload:
    """A NotifyReport reportData entry giving one of the station's message limits."""
    return {
        **entry(kind, "DeviceDataCtrlr", instance=action),
        "variableAttribute": [{"type": "Actual", "value": value, "mutability": "ReadOnly"}],
    }


async def serve(cp: RawCharger, action: str, calls: int) -> list[tuple[int, Payload]]:
    """Answer the central system's next `calls` calls of `action` (each entry Accepted, value = its name);
    returns each call's size in bytes, as received, and its payload."""
    got = []
    for _ in range(calls):
        raw = await asyncio.wait_for(cp.ws.recv(), 10)  # a missing call fails the test, not the timeout
        frame = json.loads(raw)
        assert frame[0] == 2 and frame[2] == action, frame
        assert_strictly_valid(cp.protocol, action, frame[3], response=False)
        got.append((len(raw if isinstance(raw, bytes) else raw.encode()), frame[3]))
        if action == "GetVariables":
            results = [
                {"attributeStatus": "Accepted", "attributeValue": e["variable"]["name"], **e}
                for e in frame[3]["getVariableData"]
            ]
            answer = {"getVariableResult": results}
        else:
            entries = frame[3]["setVariableData"]
            answer = {
                "setVariableResult": [{"attributeStatus": "Accepted", **same_entry(e)} for e in entries]
            }
        await cp.ws.send(json.dumps([3, frame[1], answer]))
    return got


async def test_tc_b_06_get_variables_are_split_to_the_items_per_message_reported(
    start_runtime: StartRuntime,
) -> None:
    """The station's NotifyReport says 2 GetVariables entries and 1 SetVariables entry per message: five
    variables asked at once reach it as 2 + 2 + 1, two set at once as 1 + 1; each API answer holds every
    result in request order."""
    runtime = await start_runtime(accept_unknown=True)
    report = {
        "requestId": 1,
        "generatedAt": T,
        "seqNo": 0,
        "reportData": [
            limit("ItemsPerMessage", "GetVariables", "2"),
            limit("BytesPerMessage", "GetVariables", "65000"),
            limit("ItemsPerMessage", "SetVariables", "1"),
            limit("BytesPerMessage", "SetVariables", "65000"),
        ],
    }
    names = ["TxUpdatedInterval", "TxUpdatedMeasurands", "TxEndedInterval", "TxEndedMeasurands", "Enabled"]
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=HEADERS, timeout=20)
    async with api, raw_charger(runtime.gateway.port, "IPM-ITEMS", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        assert await cp.result("NotifyReport", report) == {}
        asked = asyncio.create_task(
            api.post(
                "/api/chargers/IPM-ITEMS/ocpp/GetVariables",
                json={"getVariableData": [entry(n) for n in names]},
            )
        )
        calls = await serve(cp, "GetVariables", 3)
        r = await asked
        assert r.status_code == 200, r.text
        assert [len(p["getVariableData"]) for _, p in calls] == [2, 2, 1]
        results = r.json()["response"]["getVariableResult"]
        assert [(x["variable"]["name"], x["attributeValue"]) for x in results] == [(n, n) for n in names]
        assert_strictly_valid("ocpp2.0.1", "GetVariables", r.json()["response"], response=True)

        values = [{**entry(n), "attributeValue": "60"} for n in ("TxUpdatedInterval", "TxEndedInterval")]
        setting = asyncio.create_task(
            api.post("/api/chargers/IPM-ITEMS/ocpp/SetVariables", json={"setVariableData": values})
        )
        calls = await serve(cp, "SetVariables", 2)
        r = await setting
        assert r.status_code == 200, r.text
        assert [p["setVariableData"] for _, p in calls] == [[values[0]], [values[1]]]
        results = r.json()["response"]["setVariableResult"]
        assert [(x["variable"]["name"], x["attributeStatus"]) for x in results] == [
            ("TxUpdatedInterval", "Accepted"),
            ("TxEndedInterval", "Accepted"),
        ]
        assert (await cp.call("Heartbeat", {}))[0] == 3  # nothing more was sent


async def test_tc_b_07_get_variables_go_whole_then_split_to_the_bytes_per_message_asked_for(
    start_runtime: StartRuntime,
) -> None:
    """A station that never reported its limits gets the operator's GetVariables as written (TC_B_07: the
    first GetVariables it sees holds the variables asked for). It refuses it as too large
    (FormatViolation), so it is asked its limits, once; with a BytesPerMessage that two small entries fill,
    six entries reach it in calls of at most that many bytes, and the one entry too large for any message is
    not sent but answered Rejected / TooLargeElement in its place."""
    runtime = await start_runtime(accept_unknown=True)
    names = ("TxUpdatedInterval", "TxUpdatedMeasurands", "TxEndedInterval", "TxEndedMeasurands", "Interval")
    small = [entry(n) for n in names]
    big = entry("V" * 50, "C" * 50, instance="I" * 50)
    asked_for = [*small[:2], big, *small[2:]]
    # the station takes a frame as large as the one carrying two small entries (with a 36-character id)
    two = json.dumps([2, "x" * 36, "GetVariables", {"getVariableData": small[:2]}], separators=(",", ":"))
    size_limit = len(two.encode())
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=HEADERS, timeout=20)
    async with api, raw_charger(runtime.gateway.port, "IPM-BYTES", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        asked = asyncio.create_task(
            api.post("/api/chargers/IPM-BYTES/ocpp/GetVariables", json={"getVariableData": asked_for})
        )
        whole = json.loads(await asyncio.wait_for(cp.ws.recv(), 10))
        assert whole[2] == "GetVariables" and whole[3] == {"getVariableData": asked_for}
        await cp.ws.send(json.dumps([4, whole[1], "FormatViolation", "message too large", {}]))
        question = json.loads(await asyncio.wait_for(cp.ws.recv(), 10))
        assert question[2] == "GetVariables" and [e["variable"] for e in question[3]["getVariableData"]] == [
            {"name": "ItemsPerMessage", "instance": "GetVariables"},
            {"name": "BytesPerMessage", "instance": "GetVariables"},
        ]
        told = [
            {"attributeStatus": "Accepted", "attributeValue": v, **e}
            for v, e in zip(("50", str(size_limit)), question[3]["getVariableData"], strict=True)
        ]
        await cp.ws.send(json.dumps([3, question[1], {"getVariableResult": told}]))
        calls = await serve(cp, "GetVariables", 3)
        r = await asked
        assert r.status_code == 200, r.text
        assert all(size <= size_limit for size, _ in calls), [size for size, _ in calls]
        assert [[e["variable"]["name"] for e in p["getVariableData"]] for _, p in calls] == [
            ["TxUpdatedInterval", "TxUpdatedMeasurands"],
            ["TxEndedInterval", "TxEndedMeasurands"],
            ["Interval"],
        ]
        results = r.json()["response"]["getVariableResult"]
        assert [x["variable"]["name"] for x in results] == [e["variable"]["name"] for e in asked_for]
        assert [x["attributeStatus"] for x in results] == ["Accepted"] * 2 + ["Rejected"] + ["Accepted"] * 3
        assert results[2]["attributeStatusInfo"]["reasonCode"] == "TooLargeElement"
        assert_strictly_valid("ocpp2.0.1", "GetVariables", r.json()["response"], response=True)
        # asked once per connection: the next request goes straight out, in parts
        again = asyncio.create_task(
            api.post("/api/chargers/IPM-BYTES/ocpp/GetVariables", json={"getVariableData": small[:3]})
        )
        assert [len(p["getVariableData"]) for _, p in await serve(cp, "GetVariables", 2)] == [2, 1]
        assert (await again).status_code == 200
