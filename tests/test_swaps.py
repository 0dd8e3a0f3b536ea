"""Battery swaps over real OCPP 2.1 (and the DataTransfer fallback on 2.0.1), on Postgres: swap records paired
by requestId, BatteryOutTimeout orphans, the pack fleet, pack rules raising tickets, operator-requested swaps,
and the `ocpp` 2.1.0 spelling bug (`SoC` / `soh`) refused where the schema says `soC` / `soH`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import httpx
import pytest
from ocpp.charge_point import remove_nones, snake_to_camel_case
from ocpp.v21 import call
from ocpp.v21.datatypes import BatteryDataType, IdTokenType

from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import assert_strictly_valid, raw_charger
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}
FLEET = {
    "regions": [{"id": "east"}],
    "depots": [{"id": "D-EAST", "region": "east"}],
    "sites": [{"id": "swap-1", "kind": "battery_swap", "region": "east", "depot": "D-EAST"}],
    "chargers": [
        {
            "id": "SWAP-21",
            "site": "swap-1",
            "kind": "swap_station",
            "vendor": "ChargeOps",
            "model": "SimSwapStation",
        },
        {"id": "SWAP-201", "site": "swap-1", "kind": "swap_station"},
    ],
    "batteries": [{"serial": f"PACK-{n}"} for n in range(1, 6)],
    "stock": [{"depot": "D-EAST", "sku": "PACK-LFP-60", "on_hand": 4}],
}
VENDOR_INFO = {
    "cycles": 412,
    "cellTempMin": 24.0,
    "cellTempMax": 27.5,
    "cellVoltMin": 3.28,
    "cellVoltMax": 3.31,
}


def pack(serial: str, slot: int, soc: float, soh: float, **info: float) -> dict[str, Any]:
    return {
        "evseId": slot,
        "serialNumber": serial,
        "soC": soc,
        "soH": soh,
        "vendorInfo": json.dumps(VENDOR_INFO | info),
    }


def swap(event: str, request_id: int, *packs: dict[str, Any], token: str = "DRIVER-9") -> dict[str, Any]:
    return {
        "eventType": event,
        "requestId": request_id,
        "idToken": {"idToken": token, "type": "ISO14443"},
        "batteryData": list(packs),
    }


@pytest.fixture
async def stack(pg_url: str, start_runtime: StartRuntime) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = await start_runtime(pg_url, ops_interval=3600)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        assert (await api.post("/api/fleet", json=FLEET)).status_code == 200
        yield runtime, api


async def station(runtime: Runtime, cp_id: str, protocol: str) -> Any:
    assert runtime.gateway is not None
    return raw_charger(runtime.gateway.port, cp_id, protocol)


async def test_swap_over_ocpp_21_pairs_in_and_out_and_tracks_packs(
    stack: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, api = stack
    async with await station(runtime, "SWAP-21", "ocpp2.1") as cp:
        await cp.boot()
        # Local authorization, then the depleted pack goes in and a charged one comes out.
        assert await cp.result("Authorize", {"idToken": {"idToken": "DRIVER-9", "type": "ISO14443"}})
        assert await cp.result("BatterySwap", swap("BatteryIn", 7, pack("PACK-1", 3, 12.0, 91.0))) == {}
        assert await cp.result("BatterySwap", swap("BatteryOut", 7, pack("PACK-2", 5, 96.0, 93.0))) == {}
        # A re-sent BatteryIn (same message content) changes nothing.
        await cp.result("BatterySwap", swap("BatteryIn", 7, pack("PACK-1", 3, 12.0, 91.0)))
        # The next driver never takes the charged pack: an orphan.
        await cp.result("BatterySwap", swap("BatteryIn", 8, pack("PACK-3", 1, 20.0, 90.0)))
        await cp.result("BatterySwap", swap("BatteryOutTimeout", 8, pack("PACK-4", 2, 97.0, 92.0)))

    swaps = (await api.get("/api/swaps", params={"station_id": "SWAP-21"})).json()["items"]
    by_request = {s["request_id"]: s for s in swaps}
    assert by_request[7]["status"] == "completed" and by_request[7]["id_token"] == "DRIVER-9"
    assert [b["serial"] for b in by_request[7]["batteries_in"]] == ["PACK-1"]
    assert by_request[7]["batteries_in"][0]["cycles"] == 412
    assert [b["serial"] for b in by_request[7]["batteries_out"]] == ["PACK-2"]
    assert by_request[8]["status"] == "out_timeout"
    orphans = (await api.get("/api/swaps", params={"status": "out_timeout"})).json()["items"]
    assert [o["request_id"] for o in orphans] == [8]

    p1 = (await api.get("/api/batteries/PACK-1")).json()
    assert (p1["location"], p1["station_id"], p1["slot"], p1["swaps"], p1["soh"]) == (
        "slot",
        "SWAP-21",
        3,
        1,
        91.0,
    )
    assert len(p1["history"]) == 1 and p1["history"][0]["cell_temp_max"] == 27.5
    assert [s["request_id"] for s in p1["swap_records"]] == [7]
    p2 = (await api.get("/api/batteries/PACK-2")).json()
    assert (p2["location"], p2["station_id"]) == ("vehicle", None)
    p4 = (await api.get("/api/batteries/PACK-4")).json()
    assert (p4["location"], p4["slot"]) == ("slot", 2)  # left behind in its slot
    assert (await api.get("/api/batteries/NOPE")).status_code == 404

    # The pack's swap stays in its record however many swaps the fleet makes after it.
    async with await station(runtime, "SWAP-21", "ocpp2.1") as cp:
        await cp.boot()
        for n in range(20, 26):
            await cp.result("BatterySwap", swap("BatteryIn", n, pack(f"PACK-{n}", 4, 15.0, 90.0)))
    p1 = (await api.get("/api/batteries/PACK-1", params={"limit": 1})).json()
    assert [s["request_id"] for s in p1["swap_records"]] == [7]

    assert runtime.ops is not None
    await runtime.ops.refresh_gauges()
    metrics = (await api.get("/metrics")).text
    assert "chargeops_swap_orphans 1.0" in metrics
    assert 'chargeops_batteries{location="vehicle"} 1.0' in metrics
    assert 'chargeops_batteries_by_soh{band="90-100"}' in metrics
    assert 'chargeops_battery_swap_events_total{event_type="BatteryOutTimeout"}' in metrics


async def test_pack_rules_raise_tickets_with_pack_demand(stack: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, api = stack
    async with await station(runtime, "SWAP-21", "ocpp2.1") as cp:
        await cp.boot()
        await cp.result("BatterySwap", swap("BatteryIn", 21, pack("PACK-5", 1, 15.0, 64.0)))  # worn
        await cp.result("BatterySwap", swap("BatteryIn", 22, pack("STOLEN-1", 2, 30.0, 95.0)))  # not ours
        await cp.result("BatterySwap", swap("BatteryIn", 23, pack("PACK-1", 3, 30.0, 95.0, cellTempMax=41.0)))

    async def tickets() -> list[dict[str, Any]]:
        return list((await api.get("/api/tickets", params={"kind": "maintenance"})).json()["items"])

    async def three() -> bool:
        return len(await tickets()) >= 3

    await until(three)
    by_rule = {t["rule"]: t for t in await tickets()}
    assert set(by_rule) == {"battery-worn", "battery-unknown", "battery-cells"}
    worn = by_rule["battery-worn"]
    assert worn["subject"] == "PACK-5" and worn["charger_id"] == "SWAP-21" and worn["depot"] == "D-EAST"
    assert worn["parts"] == [{"sku": "PACK-LFP-60", "qty": 1}] and "64" in worn["fault"]["description"]
    assert by_rule["battery-unknown"]["subject"] == "STOLEN-1"
    # Packs wanted by tickets count as demand: two reserved out of four.
    stock = (await api.get("/api/stock", params={"depot": "D-EAST", "sku": "PACK-LFP-60"})).json()["items"][0]
    assert (stock["on_hand"], stock["reserved"]) == (4, 2)


async def test_data_transfer_fallback_on_201_makes_the_same_record(
    stack: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, api = stack
    async with await station(runtime, "SWAP-201", "ocpp2.0.1") as cp:
        await cp.boot()
        for event, p in (
            ("BatteryIn", pack("PACK-3", 1, 10.0, 90.0)),
            ("BatteryOut", pack("PACK-4", 2, 99.0, 92.0)),
        ):
            data = json.dumps(swap(event, 31, p))
            answer = await cp.result(
                "DataTransfer", {"vendorId": "org.chargeops.swap", "messageId": "BatterySwap", "data": data}
            )
            assert answer == {"status": "Accepted"}
        bad = json.dumps(swap("BatteryIn", 32, {"evseId": 1, "serialNumber": "X", "SoC": 1, "soh": 1}))
        assert (
            await cp.result(
                "DataTransfer", {"vendorId": "org.chargeops.swap", "messageId": "BatterySwap", "data": bad}
            )
        ) == {"status": "Rejected"}
        assert (await cp.result("DataTransfer", {"vendorId": "com.other", "messageId": "x"})) == {
            "status": "UnknownVendorId"
        }
    [record] = (await api.get("/api/swaps", params={"station_id": "SWAP-201"})).json()["items"]
    assert record["status"] == "completed" and record["request_id"] == 31


async def test_operator_requested_swap_and_the_library_spelling_bug(
    stack: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, api = stack
    async with await station(runtime, "SWAP-21", "ocpp2.1") as cp:
        await cp.boot()

        async def answer_request() -> list[Any]:
            frame = await cp.recv()
            assert frame[2] == "RequestBatterySwap"
            assert_strictly_valid("ocpp2.1", "RequestBatterySwap", frame[3], response=False)
            await cp.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            return list(frame)

        station_side = asyncio.create_task(answer_request())
        r = await api.post("/api/swaps/request", json={"station_id": "SWAP-21", "id_token": "FLEET-CARD-1"})
        assert r.status_code == 201, r.text
        sent = await station_side
        request_id = r.json()["request_id"]
        assert sent[3]["requestId"] == request_id and sent[3]["idToken"]["idToken"] == "FLEET-CARD-1"
        await cp.result(
            "BatterySwap", swap("BatteryIn", request_id, pack("PACK-1", 1, 10.0, 90.0), token="FLEET-CARD-1")
        )
        await cp.result(
            "BatterySwap", swap("BatteryOut", request_id, pack("PACK-2", 2, 95.0, 90.0), token="FLEET-CARD-1")
        )

        # What the `ocpp` 2.1.0 dataclasses put on the wire breaks the schema: refused, not stored.
        library = call.BatterySwap(
            battery_data=[BatteryDataType(evse_id=1, serial_number="PACK-9", soc=50.0, soh=90.0)],
            event_type="BatteryIn",
            request_id=99,
            id_token=IdTokenType(id_token="X", type="ISO14443"),
        )
        wire = remove_nones(snake_to_camel_case(asdict(library)))
        assert {"SoC", "soh"} <= set(wire["batteryData"][0]), wire  # the bug, as of ocpp 2.1.0
        frame = await cp.call("BatterySwap", wire)
        assert frame[0] == 4 and frame[2] in ("OccurrenceConstraintViolation", "FormatViolation"), frame
    [record] = (await api.get("/api/swaps", params={"station_id": "SWAP-21"})).json()["items"]
    assert record["requested"] and record["status"] == "completed" and record["request_id"] == request_id
