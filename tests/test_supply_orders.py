"""Purchase orders over the API on SQLite and Postgres: the review orders on the inventory position, partial
receipts against a named order, over-deliveries, several open orders, and bad receipts refused with nothing
changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from chargeops import clock
from ops.rules import Observation
from ops.runtime import Runtime
from tests.conftest import StartRuntime

ADMIN = {"Authorization": "Bearer test-admin-token"}
FLEET = {
    "regions": [{"id": "north"}],
    "depots": [{"id": "D1", "region": "north"}],
    "sites": [{"id": "s1", "region": "north", "depot": "D1"}],
    "chargers": [{"id": f"CP{i}", "site": "s1", "vendor": "Generic", "model": "DC150"} for i in range(20)],
    "stock": [{"depot": "D1", "sku": "PM-30KW", "on_hand": 0}],
}


@pytest.fixture
async def runtime(db_url: str, start_runtime: StartRuntime) -> Runtime:
    return await start_runtime(db_url, ops_interval=3600)


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as client:
        assert (await client.post("/api/fleet", json=FLEET)).status_code == 200
        yield client


async def orders(api: httpx.AsyncClient, sku: str) -> list[dict[str, Any]]:
    items = (await api.get("/api/tickets", params={"kind": "supply", "depot": "D1"})).json()["items"]
    return [t for t in items if t["parts"][0]["sku"] == sku]


async def stock(api: httpx.AsyncClient, sku: str) -> dict[str, Any]:
    return dict((await api.get("/api/stock", params={"depot": "D1", "sku": sku})).json()["items"][0])


async def test_partial_receipts_several_orders_and_bad_receipts(api: httpx.AsyncClient) -> None:
    # 100 modules installed, none on the shelf: the review orders up to the order-up-to level.
    assert (await api.post("/api/supply-risk/review")).status_code == 200
    [po] = await orders(api, "PM-30KW")
    assert po["status"] == "open" and po["order"]["supplier"] == "Infypower" and po["order"]["received"] == 0
    qty = po["order"]["qty"]
    assert qty >= 2 and (await stock(api, "PM-30KW"))["on_order"] == qty
    # Promised after the supplier's (so far catalogue) lead time of 56 days.
    assert po["order"]["promised_at"][:10] > po["order"]["ordered_at"][:10]

    before = await stock(api, "PM-30KW")
    bad = [
        ({"depot": "D1", "sku": "PM-30KW", "qty": 0}, 422, "invalid_request"),
        ({"depot": "D1", "sku": "PM-30KW", "qty": -3}, 422, "invalid_request"),
        ({"depot": "D1", "sku": "PM-30KW", "qty": 1, "order": 999999}, 404, "not_found"),
        ({"depot": "D1", "sku": "FAN-120", "qty": 1, "order": po["id"]}, 422, "order_mismatch"),
        ({"depot": "D1", "sku": "NO-SUCH", "qty": 1}, 404, "not_found"),
    ]
    for body, status, code in bad:
        r = await api.post("/api/stock/receipts", json=body)
        assert r.status_code == status and r.json()["error"] == code, (body, r.text)
    assert await stock(api, "PM-30KW") == before
    # A lead time of 0 days is no lead time: refused, the catalogue unchanged.
    part = next(p for p in (await api.get("/api/parts")).json()["items"] if p["sku"] == "PM-30KW")
    r = await api.put("/api/parts/PM-30KW", json={**part, "lead_time_days": 0})
    assert r.status_code == 422 and "lead_time_days" in r.json()["detail"], r.text
    assert next(p for p in (await api.get("/api/parts")).json()["items"] if p["sku"] == "PM-30KW") == part

    # A partial delivery against the order: the rest stays on order, the order stays open.
    r = await api.post(
        "/api/stock/receipts", json={"depot": "D1", "sku": "PM-30KW", "qty": qty - 1, "order": po["id"]}
    )
    assert r.status_code == 201 and r.json()["closed_orders"] == [], r.text
    s = r.json()["stock"]
    assert (s["on_hand"], s["on_order"]) == (qty - 1, 1)
    [po] = await orders(api, "PM-30KW")
    assert po["status"] == "open" and po["order"]["received"] == qty - 1

    # The last unit plus two more than ordered: the order closes, the extra is booked beyond any order.
    r = await api.post("/api/stock/receipts", json={"depot": "D1", "sku": "PM-30KW", "qty": 3})
    assert r.status_code == 201 and r.json()["closed_orders"] == [po["id"]] == [r.json()["closed_ticket"]]
    assert (r.json()["stock"]["on_hand"], r.json()["stock"]["on_order"]) == (qty + 2, 0)
    moves = (await api.get("/api/stock/movements", params={"depot": "D1", "sku": "PM-30KW"})).json()["items"]
    assert [m["kind"] for m in moves[:2]] == ["receipt_extra", "receipt"] and moves[0]["qty"] == 2
    # A closed order takes no more deliveries.
    r = await api.post(
        "/api/stock/receipts", json={"depot": "D1", "sku": "PM-30KW", "qty": 1, "order": po["id"]}
    )
    assert r.status_code == 409 and r.json()["error"] == "order_closed"
    # The supplier delivered at once: its measured lead time moves from the catalogue's 56 days toward 0
    # (the catalogue weighs as two orders), and it was on time.
    [infy] = (await api.get("/api/suppliers", params={"sku": "PM-30KW"})).json()["items"]
    assert infy["supplier"] == "Infypower" and infy["orders_measured"] == 1 and infy["on_time_share"] == 1.0
    assert infy["lead_time_days"] == pytest.approx(2 * 56 / 3, abs=0.1) and infy["open_orders"] == []

    # Closing an order that is still owed cancels the rest: no longer on order.
    fans = await orders(api, "FAN-120")
    assert len(fans) == 1 and fans[0]["status"] == "open"
    r = await api.post(
        "/api/stock/receipts",
        json={"depot": "D1", "sku": "FAN-120", "qty": 1, "order": fans[0]["id"], "note": "first box"},
    )
    assert r.status_code == 201
    closing = await api.post(f"/api/tickets/{fans[0]['id']}/transition", json={"to": "closed"})
    assert closing.status_code == 200, closing.text  # cancelled: what it still owed is no longer on order
    assert (await stock(api, "FAN-120"))["on_order"] == 0


async def test_a_second_order_while_the_first_is_in_transit(api: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await api.post("/api/supply-risk/review")).status_code == 200
    [first] = await orders(api, "PM-30KW")
    assert runtime.ops is not None
    # Module failures reserve what is on order; once the position is at the reorder point again, another
    # order goes out although the first has not arrived (one open order per part kept stock below it).
    for n in range(first["order"]["qty"] + 1):
        obs = Observation("fault", f"CP{n}", f"pm-{n}", clock.now(), code="OverVoltage", evse_id=1)
        assert await runtime.ops.apply(obs) is not None
    pm = await orders(api, "PM-30KW")
    assert len(pm) >= 2 and all(o["status"] == "open" for o in pm), pm
    s = await stock(api, "PM-30KW")
    assert s["on_order"] == sum(o["order"]["qty"] for o in pm)
    # A buyer takes both orders in hand: open purchase orders of one part never collide.
    for o in pm:
        r = await api.post(f"/api/tickets/{o['id']}/transition", json={"to": "assigned"})
        assert r.status_code == 200 and r.json()["status"] == "assigned", r.text
    assert s["on_hand"] - s["reserved"] + s["on_order"] > 0
