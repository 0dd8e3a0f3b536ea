"""Operations end to end over real OCPP on Postgres: a simulated fault becomes one maintenance ticket with the
right parts, resolving it consumes stock, a shortage raises one supply ticket, receipts close it, and rising
failures of a long-lead-time part raise an early warning."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from firmware_stubs import SimEnvironment, SimulatedCharger
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.test_webhooks import Receiver, verify
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}
FLEET = {
    "regions": [{"id": "north", "name": "North"}],
    "depots": [{"id": "D-NORTH", "name": "North depot", "region": "north"}],
    "sites": [{"id": "north-1", "name": "Harbour road", "region": "north", "depot": "D-NORTH"}],
    "stock": [
        {"depot": "D-NORTH", "sku": "RCD-B-40A", "on_hand": 1},
        {"depot": "D-NORTH", "sku": "CBL-CCS2-200A", "on_hand": 9},
        {"depot": "D-NORTH", "sku": "PM-30KW", "on_hand": 8},
    ],
}


class Ops:
    def __init__(self, runtime: Runtime, api: httpx.AsyncClient) -> None:
        self.runtime, self.api = runtime, api
        self.env = SimEnvironment(strict=True, time_scale=60.0, backoff_base=0.2, backoff_cap=1.0)
        self.chargers: list[SimulatedCharger] = []

    async def charger(self, cp_id: str, protocol: str) -> SimulatedCharger:
        body = {"id": cp_id, "password": "sim-password-1234", "site": "north-1"}
        assert (await self.api.post("/api/chargers", json=body)).status_code == 201
        port = self.runtime.gateway.port  # type: ignore[union-attr]
        cp = SimulatedCharger(
            cp_id, f"ws://127.0.0.1:{port}/ocpp", protocol=protocol, password=body["password"], env=self.env
        )
        self.chargers.append(cp)
        await cp.start()
        await cp.wait_until_accepted(10)
        return cp

    async def tickets(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.api.get("/api/tickets", params=params)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def stock(self, sku: str) -> dict[str, Any]:
        items = (await self.api.get("/api/stock", params={"depot": "D-NORTH", "sku": sku})).json()["items"]
        return dict(items[0])

    async def wait_tickets(self, n: int, **params: Any) -> list[dict[str, Any]]:
        async def enough() -> bool:
            return len(await self.tickets(**params)) >= n

        await until(enough)
        return await self.tickets(**params)


@pytest.fixture
async def ops(pg_url: str, start_runtime: StartRuntime) -> AsyncIterator[Ops]:
    # Scans run when the test asks; webhooks go to a receiver on this machine.
    runtime = await start_runtime(pg_url, ops_interval=3600, allow_private_urls=True)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        r = await api.post("/api/fleet", json=FLEET)
        assert r.status_code == 200, r.text
        o = Ops(runtime, api)
        yield o
        for cp in o.chargers:
            await cp.stop()
        for cp in o.chargers:
            assert cp.schema_violations == [], cp.schema_violations


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_fault_to_ticket_to_parts_to_supply(ops: Ops, protocol: str) -> None:
    receiver = Receiver()  # down until the end of the test
    hook = await ops.api.post("/api/webhooks", json={"url": receiver.url})
    assert hook.status_code == 201, hook.text
    cp = await ops.charger("OPS-GF-" + protocol[-3:].replace(".", ""), protocol)
    cp.inject_fault(1, "GroundFailure", vendor_code="GF-17")
    [ticket] = await ops.wait_tickets(1, kind="maintenance", charger_id=cp.id)
    assert ticket["rule"] == "earth-fault" and ticket["priority"] == "P1" and ticket["status"] == "open"
    assert ticket["site"] == "north-1" and ticket["depot"] == "D-NORTH" and ticket["region"] == "north"
    assert {(p["sku"], p["qty"]) for p in ticket["parts"]} == {("RCD-B-40A", 1), ("CBL-CCS2-200A", 1)}
    assert ticket["sla_due_at"] and ticket["fault"]["code"]

    # The fault clears and comes back: still one ticket, counted twice.
    cp.clear_fault(1)
    await until(lambda: cp.queued == 0)
    cp.inject_fault(1, "GroundFailure", vendor_code="GF-17")

    async def counted_twice() -> bool:
        return bool((await ops.tickets(kind="maintenance", charger_id=cp.id))[0]["occurrences"] == 2)

    await until(counted_twice)
    tickets = await ops.tickets(kind="maintenance", charger_id=cp.id)
    assert len(tickets) == 1 and tickets[0]["occurrences"] == 2

    # The only RCD is reserved: available 0 is below the reorder point → exactly one supply ticket.
    rcd = await ops.stock("RCD-B-40A")
    assert (rcd["on_hand"], rcd["reserved"], rcd["available"]) == (1, 1, 0)
    [supply] = await ops.tickets(kind="supply", depot="D-NORTH", open=True)
    assert supply["parts"][0]["sku"] == "RCD-B-40A" and supply["parts"][0]["qty"] >= 1
    assert (await ops.stock("RCD-B-40A"))["on_order"] == supply["parts"][0]["qty"]

    # Back after clearing is a new failure: one more cable reserved (the charger has two; one RCD only).
    cables = await ops.stock("CBL-CCS2-200A")
    assert (cables["on_hand"], cables["reserved"]) == (9, 2)

    # The crew walks the ticket; resolving consumes the parts it says it used, the rest goes back.
    used = [{"sku": "RCD-B-40A", "qty": 1}, {"sku": "CBL-CCS2-200A", "qty": 1}]
    for to in ("assigned", "in_progress", "resolved"):
        body: dict[str, Any] = {"to": to, "note": to}
        if to == "resolved":
            body["parts_used"] = used
        r = await ops.api.post(f"/api/tickets/{ticket['id']}/transition", json=body)
        assert r.status_code == 200 and r.json()["status"] == to, r.text
    assert r.json()["parts_used"] == used
    illegal = await ops.api.post(f"/api/tickets/{ticket['id']}/transition", json={"to": "assigned"})
    assert illegal.status_code == 409 and illegal.json()["error"] == "illegal_transition"
    rcd = await ops.stock("RCD-B-40A")
    assert (rcd["on_hand"], rcd["reserved"]) == (0, 0)
    cables = await ops.stock("CBL-CCS2-200A")
    assert (cables["on_hand"], cables["reserved"]) == (8, 0)
    detail = (await ops.api.get(f"/api/tickets/{ticket['id']}")).json()
    assert [e["action"] for e in detail["log"]] == [
        "created",
        "cleared",
        "repeated",
        "assigned",
        "in_progress",
        "resolved",
    ]
    assert all(e["actor"] for e in detail["log"])

    # Goods received close the supply ticket; no second one while stock is back above the reorder point.
    qty = supply["parts"][0]["qty"]
    r = await ops.api.post("/api/stock/receipts", json={"depot": "D-NORTH", "sku": "RCD-B-40A", "qty": qty})
    assert r.status_code == 201 and r.json()["closed_ticket"] == supply["id"], r.text
    assert r.json()["stock"]["on_hand"] == qty and r.json()["stock"]["on_order"] == 0
    assert await ops.tickets(kind="supply", depot="D-NORTH", open=True) == []

    # The webhook receiver comes up: every ticket event arrives, signed, in order.
    await receiver.start()
    try:
        expected = ["created", "cleared", "repeated", "assigned", "in_progress", "resolved"]

        def about(ticket_id: int) -> list[str]:
            docs = [json.loads(body) for _, body in receiver.delivered()]
            return [d["type"].split(".", 1)[1] for d in docs if d["data"]["ticket"]["id"] == ticket_id]

        await until(lambda: about(ticket["id"]) == expected and about(supply["id"])[-1:] == ["closed"], 20)
        assert about(ticket["id"]) == expected
        assert about(supply["id"]) == ["created", "closed"]
        assert all(verify(hook.json()["secret"], h, body) for h, body in receiver.delivered())
    finally:
        await receiver.stop()


async def test_rising_failures_of_a_long_lead_time_part_raise_an_early_warning(ops: Ops) -> None:
    chargers = [await ops.charger(f"OPS-PM-{i}", ("ocpp1.6", "ocpp2.0.1")[i % 2]) for i in range(4)]
    review = await ops.api.post("/api/supply-risk/review")
    assert review.status_code == 200, review.text
    before = (await ops.api.get("/api/supply-risk", params={"depot": "D-NORTH", "include_ok": True})).json()
    [pm] = [r for r in before["items"] if r["sku"] == "PM-30KW"]
    assert pm["level"] == "ok" and pm["figures"]["installed_base"] == 16, pm
    # Two module failures are not yet a trend (a ratio of tiny counts warned before): no warning.
    for cp in chargers[:2]:
        cp.inject_fault(1, "OverVoltage")
    await ops.wait_tickets(2, kind="maintenance", depot="D-NORTH")
    assert (await ops.api.post("/api/supply-risk/review")).status_code == 200
    risks = (await ops.api.get("/api/supply-risk", params={"depot": "D-NORTH", "include_ok": True})).json()
    [pm] = [r for r in risks["items"] if r["sku"] == "PM-30KW"]
    assert pm["level"] == "ok" and pm["figures"]["trend"] is None, pm
    # Four of 16 modules within minutes is: a significant rise, a stock-out coming within the lead time.
    for cp in chargers[2:]:
        cp.inject_fault(1, "OverVoltage")
    await ops.wait_tickets(4, kind="maintenance", depot="D-NORTH")
    changes = (await ops.api.post("/api/supply-risk/review")).json()["items"]
    assert [(c["sku"], c["change"]) for c in changes if c["depot"] == "D-NORTH"] == [("PM-30KW", "opened")]
    risks = (await ops.api.get("/api/supply-risk", params={"depot": "D-NORTH"})).json()["items"]
    [pm] = [r for r in risks if r["sku"] == "PM-30KW"]
    assert pm["level"] in ("warning", "critical") and pm["probability"] >= 0.5, pm
    codes = {reason["code"] for reason in pm["reasons"]}
    assert {"failures_rising", "stockout_risk"} <= codes, pm["reasons"]
    figures = pm["figures"]
    assert figures["trend"]["count"] == 4 and figures["trend"]["p"] < 0.001
    assert figures["installed_base"] == 16 and figures["lead_time_days"] == 56
    assert figures["on_order"] > 0 and pm["actions"], pm  # the review ordered; what else to do is proposed
    history = (await ops.api.get("/api/supply-risk/history", params={"sku": "PM-30KW"})).json()["items"]
    assert [h["change"] for h in history] == ["opened"] and history[0]["to"] == pm["level"]
    report = (await ops.api.get("/api/supply-risk/report")).text
    assert "PM-30KW" in report and "D-NORTH" in report and "failures rising" in report

    assert ops.runtime.ops is not None
    await ops.runtime.ops.refresh_gauges()
    metrics = (await ops.api.get("/metrics")).text
    level = pm["level"]
    assert f'chargeops_supply_risk{{depot="D-NORTH",level="{level}",sku="PM-30KW"}} 1.0' in metrics
    gauge = 'chargeops_supply_stockout_probability{depot="D-NORTH",sku="PM-30KW"}'
    assert f"{gauge} {pm['probability']}" in metrics
    assert 'chargeops_tickets_open{kind="maintenance",priority="P2"} 4.0' in metrics
