"""The tariff API: tariffs (create, list, get, replace, delete), where they apply (per site, per id-token
group, the default), bad input answered 4xx with a JSON reason, and the cost shown on sessions. Runs on SQLite
and on Postgres (`db_url`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.models import Transaction
from chargeops.tariffs import Tariff

pytest_plugins = ("tests.test_api_support",)

CITY = {
    "name": "city",
    "currency": "EUR",
    "per_kwh": "0.35",
    "per_minute_charging": 0.02,
    "per_minute_idle": "0.10",
    "idle_grace_minutes": 15,
    "session_fee": "1",
    "tax_pct": 19,
}


async def _create(admin: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await admin.post("/api/tariffs", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_tariffs_are_created_listed_read_replaced_and_deleted(admin: httpx.AsyncClient) -> None:
    city = await _create(admin, CITY)
    assert {k: city[k] for k in ("currency", "per_kwh", "per_minute_charging", "session_fee", "tax_pct")} == {
        "currency": "EUR",
        "per_kwh": "0.35",
        "per_minute_charging": "0.02",
        "session_fee": "1",
        "tax_pct": "19",
    }
    assert city["min_cost"] is None and city["display_text"] is None
    assert city["shown_as"] == (
        "0.35 EUR/kWh, 0.02 EUR/min charging, 0.1 EUR/min idle after 15 min, 1.00 EUR per session, "
        "plus 19% tax"
    )
    assert (await admin.get(f"/api/tariffs/{city['id']}")).json() == city
    replaced = {
        "name": "city 2",
        "currency": "CHF",
        "per_kwh": 0.5,
        "display_text": "0.50 CHF/kWh",
        "language": "de-CH",
    }
    r = await admin.put(f"/api/tariffs/{city['id']}", json=replaced)
    assert r.status_code == 200 and r.json()["per_minute_idle"] == "0"  # left out: back to its default
    assert (r.json()["shown_as"], r.json()["language"]) == ("0.50 CHF/kWh", "de-CH")
    assert [t["name"] for t in (await admin.get("/api/tariffs")).json()["items"]] == ["city 2"]
    assert (await admin.delete(f"/api/tariffs/{city['id']}")).status_code == 204
    r = await admin.get(f"/api/tariffs/{city['id']}")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"per_kwh": -0.01}, "per_kwh"),
        ({"session_fee": "-1"}, "session_fee"),
        ({"currency": "XYZ"}, "XYZ is not an ISO 4217 currency"),
        ({"currency": "eur"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"min_cost": 10, "max_cost": 5}, "min_cost 10 is above max_cost 5"),
        ({"per_kwh": "NaN"}, "per_kwh"),
        ({"per_kwh": "0.1234567"}, "per_kwh"),
        ({"tax_pct": 101}, "tax_pct"),
        ({"display_text": "x" * 513}, "display_text"),
        ({"language": "english!"}, "language"),
        ({"price": 1}, "price"),
    ],
)
async def test_bad_tariffs_are_refused_with_the_reason(
    admin: httpx.AsyncClient, change: dict[str, Any], said: str
) -> None:
    r = await admin.post("/api/tariffs", json={**CITY, **change})
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request"), r.text
    assert said in r.json()["detail"], r.text
    assert (await admin.get("/api/tariffs")).json()["items"] == []


async def test_assignments_per_site_group_and_default(admin: httpx.AsyncClient) -> None:
    assert (await admin.put("/api/sites/north", json={"id": "north"})).status_code == 200
    city = (await _create(admin, CITY))["id"]
    fleet = (await _create(admin, {"name": "fleet", "currency": "EUR", "per_kwh": "0.25"}))["id"]
    for body in (
        {"tariff_id": city},
        {"tariff_id": city, "site": "north"},
        {"tariff_id": fleet, "group": "FLEET-7"},
    ):
        r = await admin.put("/api/tariff-assignments", json=body)
        assert r.status_code == 201, r.text
    r = await admin.put("/api/tariff-assignments", json={"tariff_id": fleet, "site": "north"})
    assert r.status_code == 200 and r.json()["tariff_id"] == fleet  # replaced
    listed = [
        (a["site"], a["group"], a["tariff_id"])
        for a in (await admin.get("/api/tariff-assignments")).json()["items"]
    ]
    assert listed == [(None, None, city), (None, "FLEET-7", fleet), ("north", None, fleet)]
    r = await admin.put("/api/tariff-assignments", json={"tariff_id": city, "site": "nowhere"})
    assert (r.status_code, r.json()["detail"]) == (404, "no site nowhere")
    r = await admin.put("/api/tariff-assignments", json={"tariff_id": 999, "site": "north"})
    assert (r.status_code, r.json()["error"]) == (422, "unknown_tariff")
    r = await admin.delete(f"/api/tariffs/{fleet}")
    assert (r.status_code, r.json()["error"]) == (409, "tariff_assigned")
    assert (await admin.delete("/api/tariff-assignments", params={"group": "FLEET-7"})).status_code == 204
    assert (await admin.delete("/api/tariff-assignments", params={"site": "north"})).status_code == 204
    r = await admin.delete("/api/tariff-assignments", params={"site": "north"})
    assert (r.status_code, r.json()["detail"]) == (404, "no tariff assignment for site north and any group")
    assert (await admin.delete(f"/api/tariffs/{fleet}")).status_code == 204


T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


async def test_sessions_show_their_cost_running_and_final(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A running session is priced as of now by the tariff it keeps; an ended one shows its stored final
    cost; one without a tariff shows none. 22.5 kWh, 90 min charging, 40 min idle under CITY: 15.68."""
    city = Tariff.from_json({**CITY, "id": 1, "per_minute_charging": "0.02", "session_fee": "1.00"}).to_json()
    async with api_sessions() as s, s.begin():
        common: dict[str, Any] = {
            "charger_id": "CP-1",
            "started_at": T0,
            "meter_start_wh": 1000.0,
            "tariff": city,
        }
        s.add(
            Transaction(
                transaction_id="running", active=True, meter_good_wh=23_500.0, charging_s=5400.0, **common
            )
        )
        s.add(
            Transaction(
                transaction_id="ended",
                active=False,
                stopped_at=T0 + timedelta(minutes=130),
                meter_stop_wh=23_500.0,
                charging_s=5400.0,
                total_cost=15.68,
                **common,
            )
        )
        s.add(Transaction(charger_id="CP-1", transaction_id="free", started_at=T0, active=True))
    with clock.use(clock.ManualClock(T0 + timedelta(minutes=130))):
        items = {t["transaction_id"]: t for t in (await admin.get("/api/transactions")).json()["items"]}
        detail = (await admin.get("/api/transactions/CP-1/running")).json()
    expected = {
        "tariff_id": 1,
        "tariff_name": "city",
        "currency": "EUR",
        "energy": "7.88",
        "charging_time": "1.80",
        "idle_time": "2.50",
        "session_fee": "1.00",
        "adjustment": "0.00",
        "net": "13.18",
        "tax": "2.50",
        "total": "15.68",
    }
    assert items["running"]["cost"] == {**expected, "final": False} == detail["cost"]
    assert items["ended"]["cost"] == {**expected, "final": True}
    assert items["free"]["cost"] is None
    with clock.use(clock.ManualClock(T0 + timedelta(minutes=140))):  # 10 more idle minutes: + 1.00 net
        assert (await admin.get("/api/transactions/CP-1/running")).json()["cost"]["total"] == "16.87"


async def test_a_region_operator_prices_its_own_sites_only(admin: httpx.AsyncClient) -> None:
    fleet = {"regions": [{"id": "north"}], "sites": [{"id": "n-1", "region": "north"}, {"id": "elsewhere"}]}
    assert (await admin.post("/api/fleet", json=fleet)).status_code == 200
    r = await admin.post("/api/tokens", json={"name": "op", "role": "operator", "region": "north"})
    north = {"Authorization": f"Bearer {r.json()['token']}"}
    tariff = (await _create(admin, CITY))["id"]
    r = await admin.put("/api/tariff-assignments", json={"tariff_id": tariff, "site": "n-1"}, headers=north)
    assert r.status_code == 201, r.text
    r = await admin.put(
        "/api/tariff-assignments", json={"tariff_id": tariff, "site": "elsewhere"}, headers=north
    )
    assert (r.status_code, r.json()["detail"]) == (404, "no site elsewhere")
    for refused in (
        admin.put("/api/tariff-assignments", json={"tariff_id": tariff}, headers=north),
        admin.put("/api/tariff-assignments", json={"tariff_id": tariff, "group": "G"}, headers=north),
        admin.post("/api/tariffs", json=CITY, headers=north),
    ):
        r = await refused
        assert (r.status_code, r.json()["error"]) == (403, "out_of_scope"), r.text
    assert (
        await admin.put("/api/tariff-assignments", json={"tariff_id": tariff, "site": "elsewhere"})
    ).status_code == 201
    seen = (await admin.get("/api/tariff-assignments", headers=north)).json()["items"]
    assert [a["site"] for a in seen] == ["n-1"]
    assert [t["id"] for t in (await admin.get("/api/tariffs", headers=north)).json()["items"]] == [tariff]
