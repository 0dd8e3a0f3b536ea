"""The operations API: roles and regions, fleet documents, bad input answered with a JSON reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from chargeops.events import utcnow
from ops.rules import Observation
from ops.runtime import Runtime
from tests.conftest import StartRuntime

ADMIN = {"Authorization": "Bearer test-admin-token"}
FLEET_YAML = """
regions: [{id: north}, {id: south}]
depots: [{id: D-N, region: north}, {id: D-S, region: south}]
sites: [{id: n1, region: north, depot: D-N}, {id: s1, region: south, depot: D-S, grid_limit_kw: 250}]
chargers:
  - {id: CP-N, site: n1, vendor: Generic, model: DC150}
  - {id: CP-S, site: s1, vendor: Generic, model: DC150}
stock: [{depot: D-N, sku: CT-250A, on_hand: 0}]
"""


@pytest.fixture
async def api(start_runtime: StartRuntime) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = await start_runtime(ops_interval=3600)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as client:
        r = await client.post("/api/fleet", content=FLEET_YAML, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200 and r.json()["chargers"] == 2, r.text
        yield runtime, client


async def token(client: httpx.AsyncClient, role: str, region: str | None = None) -> dict[str, str]:
    r = await client.post("/api/tokens", json={"name": f"{role}-{region}", "role": role, "region": region})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_crew_sees_and_moves_only_its_region(api: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = api
    assert runtime.ops is not None
    for cp in ("CP-N", "CP-S"):
        obs = Observation("fault", cp, f"ev-{cp}", utcnow() - timedelta(seconds=5), code="PowerSwitchFailure")
        assert await runtime.ops.apply(obs) is not None
    crew = await token(client, "crew", "north")
    me = (await client.get("/api/me", headers=crew)).json()
    assert me == {"name": "crew-north", "role": "crew", "region": "north"}
    seen = (await client.get("/api/tickets", headers=crew)).json()["items"]
    assert [t["charger_id"] for t in seen] == ["CP-N"]  # not CP-S, and no supply tickets
    (mine,) = seen
    r = await client.post(f"/api/tickets/{mine['id']}/transition", json={"to": "assigned"}, headers=crew)
    assert r.status_code == 200 and r.json()["assignee"] == "crew-north"
    # A step from a status the ticket has left (a stale screen) is refused, not applied backwards.
    stale = {"to": "open", "from": "open"}
    r = await client.post(f"/api/tickets/{mine['id']}/transition", json=stale, headers=crew)
    assert r.status_code == 409 and r.json()["error"] == "stale_ticket", r.text
    south = (await client.get("/api/tickets", params={"charger_id": "CP-S"})).json()["items"][0]
    r = await client.post(f"/api/tickets/{south['id']}/transition", json={"to": "assigned"}, headers=crew)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    viewer = await token(client, "viewer")
    r = await client.post(f"/api/tickets/{mine['id']}/transition", json={"to": "in_progress"}, headers=viewer)
    assert r.status_code == 403
    # No contactors in either depot: one purchase order each, visible to operators only (the periodic
    # review may also have ordered the first stock of the depots' other parts).
    supply = (await client.get("/api/tickets", params={"kind": "supply"})).json()["items"]
    contactors = [t for t in supply if t["parts"][0]["sku"] == "CT-250A"]
    assert {t["depot"] for t in contactors} == {"D-N", "D-S"}
    sites = {s["id"]: s for s in (await client.get("/api/sites")).json()["items"]}
    assert (
        sites["s1"]["power_budget"] == {"grid_limit_kw": 250, "grid_export_limit_kw": None}
        and sites["s1"]["chargers"] == 1
    )


async def test_bad_input_gets_a_json_reason(api: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, client = api
    cases = [
        (client.post("/api/fleet", json={"stock": [{"depot": "D-N", "sku": "NOPE", "on_hand": 1}]}), 422),
        (client.post("/api/fleet", json={"sites": [{"id": "x", "kind": "moon"}]}), 422),
        (client.post("/api/fleet", content="a: [", headers={"Content-Type": "application/yaml"}), 422),
        (client.post("/api/stock/receipts", json={"depot": "D-N", "sku": "NOPE", "qty": 1}), 404),
        (client.post("/api/stock/receipts", json={"depot": "D-N", "sku": "CT-250A", "qty": 0}), 422),
        (client.post("/api/tickets/999/transition", json={"to": "resolved"}), 404),
        (client.post("/api/tickets/1/transition", json={"to": "sideways"}), 422),
        (client.get("/api/supply-risk", params={"level": "dire"}), 422),
        (client.put("/api/sites/a", json={"id": "b"}), 422),
    ]
    for request, status in cases:
        r = await request
        assert r.status_code == status, r.text
        assert set(r.json()) >= {"error", "detail"}, r.text
    # Nothing of the refused documents was stored.
    assert "NOPE" not in {s["sku"] for s in (await client.get("/api/stock")).json()["items"]}
