"""Block B cases the OCTT port (issue 11) found failing. TC_B_08: the station told its
`ItemsPerMessage` for GetVariables (4) in a NotifyReport on an earlier connection and takes all five
variables of the operator's GetVariables at once; the CSMS must still send them as 4 + 1. A station's
message limits are kept per charger (`chargers.message_limits`, `ocpp_gateway.message_limits`) until it
boots with other firmware: here over a real WebSocket against a whole chargeops process, and the store part
on SQLite, on Postgres and in the in-memory double the handler tests use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chargeops.events import Booted, utcnow
from ocpp_gateway.message_limits import MessageLimits, StationLimits
from ocpp_gateway.store import GatewayStore, Store
from tests.conftest import StartRuntime, migrated_sessions
from tests.gateway_memory import MemoryStore
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger

HEADERS = {"Authorization": "Bearer test-admin-token"}

Payload = dict[str, Any]
CP = "OCTT-B08"


def variable(component: str, name: str, instance: str | None, value: str) -> Payload:
    """A NotifyReport reportData entry: one variable of the station's device model, its Actual value."""
    return {
        "component": {"name": component},
        "variable": {"name": name, **({"instance": instance} if instance else {})},
        "variableAttribute": [{"type": "Actual", "value": value, "mutability": "ReadOnly"}],
    }


def device_model(items: str, size: str) -> list[Payload]:
    """The five variables of the OCTT's TC_B_08, with the GetVariables limits given."""
    return [
        variable("DeviceDataCtrlr", "ItemsPerMessage", "GetReport", "4"),
        variable("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables", items),
        variable("DeviceDataCtrlr", "BytesPerMessage", "GetReport", "4096"),
        variable("DeviceDataCtrlr", "BytesPerMessage", "GetVariables", size),
        variable("AuthCtrlr", "AuthorizeRemoteStart", None, "true"),
    ]


FIVE = [{"component": v["component"], "variable": v["variable"]} for v in device_model("4", "4096")]


async def boot(cp: RawCharger, firmware: str) -> None:
    station = {"vendorName": "OCTT", "model": "Virtual", "firmwareVersion": firmware}
    answer = await cp.result("BootNotification", {"reason": "PowerUp", "chargingStation": station})
    assert answer["status"] == "Accepted"


async def serve(cp: RawCharger, calls: int, model: list[Payload]) -> list[list[Payload]]:
    """The station answers the central system's next `calls` GetVariables from its device model (every
    variable asked is one of it); returns what each call asked."""
    values = {json.dumps([v["component"], v["variable"]]): v["variableAttribute"][0]["value"] for v in model}
    got = []
    for _ in range(calls):
        frame = json.loads(await asyncio.wait_for(cp.ws.recv(), 10))  # a missing call fails here
        assert frame[0] == 2 and frame[2] == "GetVariables", frame
        asked = frame[3]["getVariableData"]
        results = [
            {
                "attributeStatus": "Accepted",
                "attributeValue": values[json.dumps([e["component"], e["variable"]])],
                **e,
            }
            for e in asked
        ]
        await cp.ws.send(json.dumps([3, frame[1], {"getVariableResult": results}]))
        got.append(asked)
    return got


async def get_five(api: httpx.AsyncClient, cp: RawCharger, calls: int, model: list[Payload]) -> list[int]:
    """The operator's GetVariables of the five through the API, answered by the station in `calls` calls:
    the number of variables in each. The API answers once, every variable's result in request order."""
    asked = asyncio.create_task(
        api.post(f"/api/chargers/{CP}/ocpp/GetVariables", json={"getVariableData": FIVE})
    )
    got = await serve(cp, calls, model)
    r = await asked
    assert r.status_code == 200, r.text
    assert [v for part in got for v in part] == FIVE  # each variable asked once, in request order
    results = r.json()["response"]["getVariableResult"]
    assert [(x["component"], x["variable"], x["attributeValue"]) for x in results] == [
        (v["component"], v["variable"], v["variableAttribute"][0]["value"]) for v in model
    ]
    assert_strictly_valid("ocpp2.0.1", "GetVariables", r.json()["response"], response=True)
    assert (await cp.call("Heartbeat", {}))[0] == 3  # nothing more was sent
    return [len(part) for part in got]


async def test_tc_b_08_get_variables_split_to_the_items_per_message_reported_on_an_earlier_connection(
    start_runtime: StartRuntime,
) -> None:
    """Connection 1 reports ItemsPerMessage 4 (NotifyReport of a base report); connection 2, same firmware:
    the five variables reach the station as 4 + 1 although it would take them at once. A boot with new
    firmware forgets them, on the same connection or a new one: the five go whole. What the new firmware
    answers (ItemsPerMessage 2, one of the five) is what counts from then on."""
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    old, new = device_model("4", "4096"), device_model("2", "4096")
    report = {"requestId": 0, "generatedAt": utcnow().isoformat(), "seqNo": 0, "reportData": old}
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=HEADERS, timeout=20)
    async with api:
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "1.0")
            assert await cp.result("NotifyReport", report) == {}
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "1.0")
            assert await get_five(api, cp, 2, old) == [4, 1]
            await boot(cp, "2.0")
            assert await get_five(api, cp, 1, new) == [5]
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "2.0")
            assert await get_five(api, cp, 3, new) == [2, 2, 1]
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "3.0")
            assert await get_five(api, cp, 1, new) == [5]


async def test_tc_b_08_limits_a_station_told_when_asked_are_kept_for_its_next_connection(
    start_runtime: StartRuntime,
) -> None:
    """A station that never reported its limits refuses the five whole; it is asked them (ItemsPerMessage 3,
    BytesPerMessage 0: no limit) and gets 3 + 2. On its next connection the 3 + 2 go without asking."""
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    model = device_model("3", "0")
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=HEADERS, timeout=20)
    async with api:
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "3.1")
            asked = asyncio.create_task(
                api.post(f"/api/chargers/{CP}/ocpp/GetVariables", json={"getVariableData": FIVE})
            )
            whole = json.loads(await asyncio.wait_for(cp.ws.recv(), 10))
            assert whole[3] == {"getVariableData": FIVE}
            await cp.ws.send(json.dumps([4, whole[1], "OccurrenceConstraintViolation", "at most 3", {}]))
            question = await serve(cp, 1, model)
            assert [e["variable"] for e in question[0]] == [
                {"name": "ItemsPerMessage", "instance": "GetVariables"},
                {"name": "BytesPerMessage", "instance": "GetVariables"},
            ]
            assert [len(part) for part in await serve(cp, 2, model)] == [3, 2]
            assert (await asked).status_code == 200
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "3.1")
            assert await get_five(api, cp, 2, model) == [3, 2]


async def test_tc_b_08_items_per_message_read_alone_binds_though_bytes_per_message_is_unknown(
    start_runtime: StartRuntime,
) -> None:
    """The OCTT's configuration state of TC_B_08 as the independent port runs it: the CSMS read
    DeviceDataCtrlr.ItemsPerMessage[GetVariables] = 4 with a GetVariables (BytesPerMessage never told). On
    the next connection the five go as 4 + 1 (B06.FR.05), not whole first; a request within the 4 still goes
    whole."""
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    model = device_model("4", "4096")
    items = [
        {
            "component": {"name": "DeviceDataCtrlr"},
            "variable": {"name": "ItemsPerMessage", "instance": "GetVariables"},
        }
    ]
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=HEADERS, timeout=20)
    async with api:
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "1.0")
            asked = asyncio.create_task(
                api.post(f"/api/chargers/{CP}/ocpp/GetVariables", json={"getVariableData": items})
            )
            assert await serve(cp, 1, model) == [items]
            assert (await asked).status_code == 200
        async with raw_charger(port, CP, "ocpp2.0.1") as cp:
            await boot(cp, "1.0")
            assert await get_five(api, cp, 2, model) == [4, 1]
            two = FIVE[:2]
            asked = asyncio.create_task(
                api.post(f"/api/chargers/{CP}/ocpp/GetVariables", json={"getVariableData": two})
            )
            assert await serve(cp, 1, model) == [two]
            assert (await asked).status_code == 200


# -- the store part ----------------------------------------------------------------------------------------

KEPT: StationLimits = {"GetVariables": {"BytesPerMessage": 4096, "ItemsPerMessage": 4}}


def booted(firmware: str | None) -> Booted:
    return Booted(vendor="OCTT", model="Virtual", firmware_version=firmware)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    url = sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    async with migrated_sessions(url) as sessions:
        s = GatewayStore(sessions)
        for cid in (CP, "OTHER"):
            await s.admit_unknown(cid, "accepted")
        yield s


async def test_tc_b_08_store_keeps_a_stations_limits_until_it_boots_with_other_firmware(store: Store) -> None:
    assert await store.message_limits(CP) is None
    await store.record_boot(CP, booted("1.0"), utcnow())
    await store.keep_message_limits(CP, KEPT)
    assert await store.message_limits(CP) == KEPT
    await store.record_boot(CP, booted("1.0"), utcnow())
    assert await store.message_limits(CP) == KEPT  # the same firmware: kept

    # Boots of the moment share one statement: each row compares its own firmware.
    await store.record_boot("OTHER", booted("7"), utcnow())
    await store.keep_message_limits("OTHER", KEPT)
    await asyncio.gather(
        store.record_boot(CP, booted("1.0"), utcnow()), store.record_boot("OTHER", booted("8"), utcnow())
    )
    assert await store.message_limits(CP) == KEPT
    assert await store.message_limits("OTHER") is None

    await store.record_boot(CP, booted(None), utcnow())  # no firmware said is other firmware too
    assert await store.message_limits(CP) is None
    await store.keep_message_limits(CP, KEPT)
    await store.record_boot(CP, booted(None), utcnow())
    assert await store.message_limits(CP) == KEPT


async def test_limits_of_earlier_connections_count_and_new_ones_are_added() -> None:
    """What a connection hears wins over what was kept and is kept beside it; nothing heard, nothing
    written; a store that fails leaves the limits unknown, nothing more."""
    store = MemoryStore(limits={CP: {**KEPT, "SetVariables": {"ItemsPerMessage": 9, "BytesPerMessage": 900}}})
    first = MessageLimits(store, CP)
    first.learn_report([variable("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables", "2")])
    await first.keep()
    assert store.limits[CP] == {**KEPT, "SetVariables": {"ItemsPerMessage": 2, "BytesPerMessage": 900}}
    kept = store.limits[CP]
    await first.keep()
    assert store.limits[CP] is kept  # nothing new: not written again

    second = MessageLimits(store, CP)
    assert not second.known("GetVariables")
    await second.load()
    assert second.known("GetVariables") and second.known("SetVariables")
    assert (second.of("GetVariables").items, second.of("SetVariables").items) == (4, 2)

    class Failing(MemoryStore):
        async def message_limits(self, charger_id: str) -> StationLimits | None:
            raise ConnectionError("database down")

    failing = MessageLimits(Failing(limits={CP: KEPT}), CP)
    await failing.load()
    assert not failing.known("GetVariables")


async def test_limits_read_while_the_station_boots_are_not_used() -> None:
    """A read begun before a boot may hold the former firmware's limits: it is dropped, read again later."""
    release = asyncio.Event()

    class Slow(MemoryStore):
        async def message_limits(self, charger_id: str) -> StationLimits | None:
            await release.wait()
            return await super().message_limits(charger_id)

    limits = MessageLimits(Slow(limits={CP: KEPT}), CP)
    reading = asyncio.create_task(limits.load())
    await asyncio.sleep(0)
    limits.forget()
    release.set()
    await reading
    assert not limits.known("GetVariables")
    await limits.load()
    assert limits.known("GetVariables")
