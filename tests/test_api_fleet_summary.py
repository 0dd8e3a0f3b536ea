"""GET /api/fleet/summary (issue 13): the fleet at a glance, counted from what is stored, agreeing with the
charger list and the fleet gauges, and narrowed to a region-scoped token's region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.models import Charger, Connector
from chargeops.db.ops_models import SupplyWarning
from ops import maintenance
from ops.fleet_summary import FleetSummary
from ops.rules import Observation, load_rules
from telemetry.fleet_metrics import refresh
from tests.test_api_support import assert_error, bearer

pytest_plugins = ("tests.test_api_support",)

FLEET = {
    "regions": [{"id": "north"}, {"id": "south"}],
    "depots": [{"id": "D-N", "region": "north"}, {"id": "D-S", "region": "south"}],
    "sites": [
        {"id": "north-1", "region": "north", "depot": "D-N"},
        {"id": "north-2", "region": "north", "depot": "D-N"},
        {"id": "south-1", "region": "south", "depot": "D-S"},
    ],
    "chargers": [
        {"id": "N1", "site": "north-1"},
        {"id": "N2", "site": "north-1"},
        {"id": "N3", "site": "north-2"},
        {"id": "S1", "site": "south-1"},
        {"id": "X1"},  # at no site
    ],
}
SEEN = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


async def seed_reports(sessions: async_sessionmaker[AsyncSession]) -> None:
    """What chargers would have reported: who is connected on which protocol, each connector's status."""
    async with sessions() as s, s.begin():
        for cid, protocol in (("N1", "ocpp1.6"), ("N2", "ocpp2.0.1"), ("S1", "ocpp1.6")):
            await s.execute(
                update(Charger)
                .where(Charger.id == cid)
                .values(connected=True, protocol=protocol, last_seen=SEEN)
            )
        await s.execute(update(Charger).where(Charger.id == "N3").values(protocol="ocpp2.0.1"))
        s.add_all(
            [
                Connector(charger_id="N1", evse_id=1, connector_id=1, status="Available"),
                Connector(charger_id="N1", evse_id=2, connector_id=1, status="Faulted"),
                # equally bad: the first connector names the charger's status (Charging, not Occupied)
                Connector(charger_id="N2", evse_id=1, connector_id=1, status="Charging"),
                Connector(charger_id="N2", evse_id=2, connector_id=1, status="Occupied"),
                Connector(charger_id="N3", evse_id=0, connector_id=0, status="Available"),
                Connector(charger_id="S1", evse_id=1, connector_id=1, status="Faulted"),
            ]
        )
        s.add_all(
            [
                SupplyWarning(depot_id="D-N", sku="FAN", level="warning", probability=0.6),
                SupplyWarning(depot_id="D-N", sku="CABLE", level="ok", probability=0.1),  # not in force
                SupplyWarning(depot_id="D-S", sku="FAN", level="critical", probability=0.9),
            ]
        )


async def open_fault(
    sessions: async_sessionmaker[AsyncSession], charger_id: str, code: str, ago: float
) -> int:
    """A fault the rules turn into a maintenance ticket, opened `ago` hours before now."""
    opened = clock.now() - timedelta(hours=ago)
    with clock.use(clock.ManualClock(opened)):
        async with sessions() as s, s.begin():
            ticket = await maintenance.observe(
                s, Observation("fault", charger_id, f"e-{code}", opened, code=code), load_rules()
            )
            assert ticket is not None
            return ticket.id


async def test_the_summary_counts_what_is_stored_and_agrees_with_the_list(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    empty = (await admin.get("/api/fleet/summary")).json()
    assert empty["chargers"]["total"] == 0 and empty["maintenance_tickets"]["open"] == 0
    assert (await admin.post("/api/fleet", json=FLEET)).status_code == 200
    await seed_reports(api_sessions)
    earth = await open_fault(api_sessions, "N1", "GroundFailure", ago=9)  # P1, SLA 8 h: past it
    await open_fault(api_sessions, "N2", "OverVoltage", ago=1)  # P2, within its 24 h
    await open_fault(api_sessions, "S1", "ReaderFailure", ago=100)  # P3, 72 h: past it
    r = await admin.post(f"/api/tickets/{earth}/transition", json={"to": "assigned"})
    assert r.status_code == 200, r.text

    r = await admin.get("/api/fleet/summary")
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary == {
        "chargers": {
            "total": 5,
            "by_connection": {"connected": 3, "offline": 2},
            "by_site": {"north-1": 2, "north-2": 1, "south-1": 1, "(none)": 1},
            "by_protocol": {"ocpp1.6": 2, "ocpp2.0.1": 2, "(none)": 1},
            "by_status": {"Faulted": 2, "Charging": 1, "Available": 1, "(none)": 1},
        },
        "maintenance_tickets": {
            "open": 3,
            "by_priority": {"P1": 1, "P2": 1, "P3": 1, "P4": 0},
            "past_sla": 2,
            "unassigned": 2,
        },
        "supply_warnings": {"in_force": 2, "by_level": {"critical": 1, "warning": 1, "watch": 0}},
    }
    assert FleetSummary.model_validate(summary).model_dump() == summary
    # The same status as the charger list filters on and shows: the counts are the list's lengths.
    for status, n in summary["chargers"]["by_status"].items():
        if status != "(none)":
            listed = (await admin.get("/api/chargers", params={"status": status})).json()["items"]
            assert len(listed) == n and {c["status"] for c in listed} == {status}, (status, listed)
    assert (await admin.get("/api/chargers", params={"status": "Occupied"})).json()["items"] == []
    # ... and as the fleet gauges, which read the same query.
    await refresh(api_sessions)
    faulted = REGISTRY.get_sample_value("chargeops_fleet_chargers", {"site": "north-1", "state": "faulted"})
    assert faulted == 1

    # A ticket resolved and a charger recovering move the counts.
    await admin.post(f"/api/tickets/{earth}/transition", json={"to": "in_progress"})
    r = await admin.post(f"/api/tickets/{earth}/transition", json={"to": "resolved", "parts_used": []})
    assert r.status_code == 200, r.text
    async with api_sessions() as s, s.begin():
        await s.execute(update(Connector).where(Connector.charger_id == "N1").values(status="Available"))
        await s.execute(update(Charger).where(Charger.id == "S1").values(connected=False))
    after = (await admin.get("/api/fleet/summary")).json()
    assert after["chargers"]["by_status"] == {"Faulted": 1, "Charging": 1, "Available": 2, "(none)": 1}
    assert after["chargers"]["by_connection"] == {"connected": 2, "offline": 3}
    tickets = after["maintenance_tickets"]
    assert (tickets["open"], tickets["past_sla"], tickets["unassigned"]) == (2, 1, 2)
    assert tickets["by_priority"] == {"P1": 0, "P2": 1, "P3": 1, "P4": 0}


async def test_a_region_scoped_viewer_sees_its_region_only(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    assert (await admin.post("/api/fleet", json=FLEET)).status_code == 200
    await seed_reports(api_sessions)
    await open_fault(api_sessions, "S1", "ReaderFailure", ago=1)
    await open_fault(api_sessions, "N3", "GroundFailure", ago=1)
    r = await admin.post("/api/tokens", json={"name": "north-viewer", "role": "viewer", "region": "north"})
    assert r.status_code == 201, r.text
    north: dict[str, Any] = (await admin.get("/api/fleet/summary", headers=bearer(r.json()["token"]))).json()
    chargers = north["chargers"]
    assert chargers["total"] == 3 and chargers["by_site"] == {"north-1": 2, "north-2": 1}
    assert chargers["by_status"] == {"Faulted": 1, "Charging": 1, "Available": 1}
    assert north["maintenance_tickets"]["by_priority"] == {"P1": 1, "P2": 0, "P3": 0, "P4": 0}
    assert north["supply_warnings"] == {"in_force": 1, "by_level": {"critical": 0, "warning": 1, "watch": 0}}
    assert_error(await admin.get("/api/fleet/summary", headers=bearer("nope")), 401, "unauthorized")


async def test_the_route_is_documented(anonymous: httpx.AsyncClient) -> None:
    spec = (await anonymous.get("/openapi.json")).json()
    route = spec["paths"]["/api/fleet/summary"]["get"]
    ok = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/FleetSummary"}
    assert {"401", "403"} <= set(route["responses"]) and route["description"]
    fields = spec["components"]["schemas"]["ChargerCounts"]["properties"]
    assert "(none)" in fields["by_site"]["description"]
