"""The simulated swap station (strict: every message checked against the OCPP 2.1 schemas both ways) against a
whole chargeops on Postgres: a locally authorized swap, one requested by the operator, a BatteryOutTimeout
orphan, an unknown pack and a worn pack raising tickets."""

from __future__ import annotations

from typing import Any

import httpx

from firmware_stubs import SimEnvironment
from firmware_stubs.swap_station import SwapStation
from tests.conftest import StartRuntime
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}


async def test_swap_station_end_to_end(pg_url: str, start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(pg_url, ops_interval=3600)
    assert runtime.gateway is not None
    env = SimEnvironment(strict=True, tick=0.05, time_scale=30.0, backoff_base=0.2, backoff_cap=1.0)
    # Four charged packs docked, three free slots: enough for the five swaps below (an orphan keeps a slot).
    st = SwapStation("SWAP-E2E", f"ws://127.0.0.1:{runtime.gateway.port}/ocpp", slots=7, docked=4, env=env)
    for slot in range(1, 5):
        docked = st.pack(slot)
        assert docked is not None
        docked.soc = 96.0  # charged and ready to hand out
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
        fleet = {
            "sites": [{"id": "yard", "kind": "battery_swap"}],
            "chargers": [{"id": st.id, "site": "yard", "kind": "swap_station"}],
            "batteries": [{"serial": serial} for serial in st.serials],
        }
        assert (await api.post("/api/fleet", json=fleet)).status_code == 200
        assert (await api.put("/api/id-tokens/DRIVER-1", json={"status": "Accepted"})).status_code == 201

        async def swaps() -> dict[int, dict[str, Any]]:
            items = (await api.get("/api/swaps", params={"station_id": st.id})).json()["items"]
            return {s["request_id"]: s for s in items}

        await st.start()
        try:
            await st.wait_until_accepted(10)
            local = await st.swap("DRIVER-1", st.vehicle_packs[0].serial)
            assert local is not None
            await until(lambda: _status(swaps, local, "completed"), 15)

            r = await api.post("/api/swaps/request", json={"station_id": st.id, "id_token": "DRIVER-1"})
            assert r.status_code == 201 and r.json()["response"] == {"status": "Accepted"}, r.text
            remote = r.json()["request_id"]
            await until(lambda: _status(swaps, remote, "completed"), 15)
            assert (await swaps())[remote]["requested"] is True

            orphan = await st.swap("DRIVER-1", st.vehicle_packs[0].serial, take=False)
            assert orphan is not None
            await until(lambda: _status(swaps, orphan, "out_timeout"), 20)

            assert await st.swap("DRIVER-1", "FOREIGN-PACK-1") is not None
            worn = st.vehicle_packs[0].serial
            assert await st.swap("DRIVER-1", worn, soh=61.0) is not None

            async def rules() -> bool:
                items = (await api.get("/api/tickets", params={"charger_id": st.id})).json()["items"]
                return {"battery-unknown", "battery-worn"} <= {t["rule"] for t in items}

            await until(rules, 15)
        finally:
            await st.stop()
        tickets = (await api.get("/api/tickets", params={"charger_id": st.id})).json()["items"]
        by_rule = {t["rule"]: t for t in tickets}
        assert by_rule["battery-unknown"]["subject"] == "FOREIGN-PACK-1"
        assert by_rule["battery-worn"]["subject"] == worn
        pack = (await api.get(f"/api/batteries/{worn}")).json()
        assert pack["soh"] == 61.0 and pack["registered"] and pack["location"] == "slot"
    assert st.schema_violations == [], st.schema_violations


async def _status(swaps: Any, request_id: int, status: str) -> bool:
    record = (await swaps()).get(request_id)
    return record is not None and record["status"] == status
