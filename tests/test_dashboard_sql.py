"""The dashboards' PostgreSQL panels outside charger detail, on a migrated database with a little known data,
run as Grafana's read-only role (with exactly the grants of docker/postgres/grants.sql) and with the
template variables and SQL macros substituted as Grafana does (tests/test_monitoring.py: `grafana_sql`):

- Fleet overview, "Offline and faulted chargers": exactly the chargers the fleet gauges count offline or
  faulted (`telemetry.fleet_state`'s status rule mirrored in SQL), filtered by `$site`, linked to charger
  detail.
- Operations: open maintenance / supply tickets, by priority and over time, filtered by `$depot`; the
  counts agree with `ops.tickets.open_counts` (what the `chargeops_tickets_open` gauge exports).
- Battery swaps, "Open battery tickets by priority": pack tickets only.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.models import Charger, Connector
from chargeops.db.ops_models import Ticket
from ops import tickets
from telemetry.fleet_metrics import refresh
from telemetry.fleet_state import STATUS_RANK, charger_states
from tests.conftest import PG_ADMIN_DSN, migrated_sessions
from tests.grafana_dashboards import (
    ALL,
    DOCKER,
    POSTGRES_UID,
    Dashboard,
    Selection,
    grafana_sql,
    iter_panels,
    load_dashboards,
)

FLEET = ("chargeops-fleet-overview", "Offline and faulted chargers")
OPEN_MAINTENANCE = ("chargeops-operations", "Open maintenance tickets")
OPEN_SUPPLY = ("chargeops-operations", "Open supply tickets")
OPEN_OVER_TIME = ("chargeops-operations", "Open tickets by kind and priority")
MAINTENANCE_BY_PRIORITY = ("chargeops-operations", "Open maintenance tickets by priority")
BATTERY = ("chargeops-swaps", "Open battery tickets by priority")
PRIORITIES = ("P1", "P2", "P3", "P4")


def boards() -> dict[str, Dashboard]:
    return {b.uid: b for b in load_dashboards()}


def panel_sql(uid: str, title: str) -> str:
    (sql,) = [q.text for q in boards()[uid].queries if q.panel == title]
    return sql


def test_every_postgres_panel_outside_charger_detail_is_tested_here() -> None:
    found = {
        (b.uid, q.panel)
        for b in load_dashboards()
        if b.uid != "chargeops-charger-detail"
        for q in b.queries
        if q.datasource == POSTGRES_UID
    }
    assert found == {FLEET, OPEN_MAINTENANCE, OPEN_SUPPLY, OPEN_OVER_TIME, MAINTENANCE_BY_PRIORITY, BATTERY}


# -- a migrated database and Grafana's role on it ---------------------------------------------------------


@dataclass
class Db:
    sessions: async_sessionmaker[AsyncSession]
    reader_dsn: str

    async def panel(
        self,
        panel: tuple[str, str],
        start: datetime | None = None,
        end: datetime | None = None,
        interval_ms: int = 60_000,
        **variables: Selection,
    ) -> list[asyncpg.Record]:
        """The panel's rows as Grafana's role sees them; variables not given are at All."""
        board = boards()[panel[0]]
        selection: dict[str, Selection] = {v["name"]: ALL for v in board.doc["templating"]["list"]}
        selection.update(variables)
        end = end or datetime.now(UTC)
        start = start or end - timedelta(hours=6)
        sql = grafana_sql(board.doc, panel_sql(*panel), selection, start, end, interval_ms)
        conn = await asyncpg.connect(self.reader_dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Db]:
    """A fresh, migrated Postgres database and a read-only login role with docker/postgres/grants.sql run on
    it, as the compose stack sets Grafana's role up (postgres/10-grafana-reader.sh, then `db-grants`)."""
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    name = dsn.rsplit("/", 1)[1]
    reader = f"{name}_reader"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(
            f'CREATE ROLE "{reader}" LOGIN; ALTER ROLE "{reader}" SET default_transaction_read_only = on; '
            f"ALTER ROLE \"{reader}\" SET statement_timeout = '15s'"
        )
    finally:
        await admin.close()
    try:
        async with migrated_sessions(pg_url) as sessions:
            psql = shutil.which("psql")
            assert psql, "psql not found (postgresql-client)"
            grants = DOCKER / "postgres" / "grants.sql"
            proc = await asyncio.create_subprocess_exec(
                psql, dsn, "-v", "ON_ERROR_STOP=1", "-v", f"reader={reader}", "-f", str(grants),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode == 0, out.decode()
            base, rest = dsn.split("://", 1)
            yield Db(sessions, f"{base}://{reader}@{rest.split('@', 1)[-1]}")
    finally:
        conn = await asyncpg.connect(dsn)  # the role's grants live in this database: revoke them first
        try:
            await conn.execute(f'DROP OWNED BY "{reader}"')
        finally:
            await conn.close()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP ROLE IF EXISTS "{reader}"')
        finally:
            await admin.close()


# -- fleet overview: offline and faulted chargers ----------------------------------------------------------

# id: site, connected, connectors [(evse, connector, status, error code)]
CHARGERS: dict[str, tuple[str | None, bool, list[tuple[int, int, str, str | None]]]] = {
    "AVAIL1": ("north", True, [(0, 0, "Available", None), (1, 1, "Available", None)]),
    "FAULT1": ("north", True, [(1, 1, "Charging", None), (2, 1, "Faulted", "GroundFailure")]),
    # equally bad: the first by (evse, connector) names it
    "FAULT2": ("harbour", True, [(1, 1, "Faulted", "OtherError"), (0, 0, "Faulted", "InternalError")]),
    "OFF1": ("south", False, [(1, 1, "Charging", None)]),
    "OFF2": (None, False, []),  # never reported a status, no site
    "OFFFAULT": ("south", False, [(1, 1, "Faulted", "PowerMeterFailure")]),  # offline wins
    "UNAV1": ("north", True, [(1, 1, "Unavailable", None), (2, 1, "Charging", None)]),
    "VENDOR1": ("north", True, [(1, 1, "SomeVendorStatus", None)]),  # unknown status: online
    "DOT1": ("n.rth", False, []),  # a regex metacharacter in a site id
}


async def seed_fleet(sessions: async_sessionmaker[AsyncSession]) -> None:
    seen = datetime(2030, 1, 1, tzinfo=UTC)
    async with sessions() as session, session.begin():
        for cid, (site, connected, connectors) in CHARGERS.items():
            session.add(Charger(id=cid, site=site, connected=connected, protocol="ocpp1.6", last_seen=seen))
            for evse, connector, status, error in connectors:
                session.add(
                    Connector(
                        charger_id=cid,
                        evse_id=evse,
                        connector_id=connector,
                        status=status,
                        error_code=error,
                        reported_at=seen,
                    )
                )


def test_the_status_rank_in_sql_mirrors_fleet_state() -> None:
    """The panel ranks connector statuses with telemetry.fleet_state.STATUS_RANK, unknown ones lowest."""
    sql = panel_sql(*FLEET)
    ranks = {status: int(rank) for status, rank in re.findall(r"WHEN '(\w+)' THEN (\d+)", sql)}
    assert ranks == STATUS_RANK
    assert re.search(r"ELSE -1\s+END DESC", sql)


def test_each_listed_charger_links_to_charger_detail() -> None:
    board = boards()["chargeops-fleet-overview"]
    (panel,) = [p for p in iter_panels(board.doc["panels"]) if p["title"] == FLEET[1]]
    (override,) = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "charger"]
    (links,) = [p["value"] for p in override["properties"] if p["id"] == "links"]
    url = links[0]["url"]
    detail = boards()["chargeops-charger-detail"]
    assert url.startswith(f"/d/{detail.uid}?"), url
    var = detail.doc["templating"]["list"][0]["name"]
    assert f"var-{var}=${{__value.raw:percentencode}}" in url and "${__url_time_range}" in url


async def test_offline_and_faulted_chargers_are_the_ones_the_gauges_count(db: Db) -> None:
    await seed_fleet(db.sessions)
    rows = await db.panel(FLEET)
    listed = {r["charger"]: r for r in rows}

    # What the fleet gauges (and so the stats above the table and the offline alert) call each charger.
    async with db.sessions() as session:
        states = await charger_states(session)
    expected = {}
    for s in states:
        state = "offline" if not s.connected else ("faulted" if s.status == "Faulted" else "online")
        if state != "online":
            expected[s.id] = (state, s.status)
    assert {cid: (r["state"], r["status"]) for cid, r in listed.items()} == expected
    assert expected == {
        "FAULT1": ("faulted", "Faulted"),
        "FAULT2": ("faulted", "Faulted"),
        "OFF1": ("offline", "Charging"),
        "OFF2": ("offline", None),
        "OFFFAULT": ("offline", "Faulted"),
        "DOT1": ("offline", None),
    }
    # The worst connector names the status, its evse and error code; ties go to the first.
    assert (listed["FAULT1"]["evse"], listed["FAULT1"]["error_code"]) == (2, "GroundFailure")
    assert (listed["FAULT2"]["evse"], listed["FAULT2"]["error_code"]) == (0, "InternalError")
    assert listed["OFF1"]["last_seen"] == datetime(2030, 1, 1, tzinfo=UTC)
    # Offline first (the alert's concern), then faulted.
    states_in_order = [r["state"] for r in rows]
    assert states_in_order == sorted(states_in_order, key=lambda s: s != "offline")

    # Per site and state, the rows are the gauge's numbers.
    await refresh(db.sessions)
    for site in {r["site"] or "" for r in rows}:
        for state in ("offline", "faulted"):
            n = sum(1 for r in rows if (r["site"] or "") == site and r["state"] == state)
            gauge = REGISTRY.get_sample_value("chargeops_fleet_chargers", {"site": site, "state": state})
            assert (gauge or 0) == n, (site, state)


async def test_offline_and_faulted_chargers_follow_the_site_variable(db: Db) -> None:
    await seed_fleet(db.sessions)

    async def chargers(*sites: str) -> set[str]:
        return {r["charger"] for r in await db.panel(FLEET, site=list(sites))}

    assert await chargers("north") == {"FAULT1"}
    assert await chargers("south", "harbour") == {"OFF1", "OFFFAULT", "FAULT2"}
    assert await chargers("n.rth") == {"DOT1"}  # escaped: the dot matches only a dot
    assert await chargers("nowhere") == set()


# -- operations and battery swaps: tickets -----------------------------------------------------------------


@dataclass
class Plan:
    """A ticket and its life: created at minute `at` after t0 (three hours ago), then (minute, status)
    steps."""

    kind: str
    priority: str
    depot: str | None
    at: int
    steps: tuple[tuple[int, str], ...] = ()
    component: str | None = None


PLANS: dict[str, Plan] = {
    "M1": Plan("maintenance", "P1", "D-north", 0, component="Connector"),
    "M2": Plan("maintenance", "P2", "D-south", 10, ((20, "assigned"),), "Connector"),
    # resolved, reopened, resolved again: open [0, 60) and [90, 120)
    "M3": Plan(
        "maintenance",
        "P1",
        "D-north",
        0,
        ((30, "in_progress"), (60, "resolved"), (90, "in_progress"), (120, "resolved")),
        "Connector",
    ),
    "M4": Plan("maintenance", "P3", None, 40, ((50, "in_progress"),), "Connector"),  # a site without depot
    "M5": Plan("maintenance", "P4", "D-north", -60, ((-30, "closed"),)),  # over before the time range
    "M6": Plan("maintenance", "P4", "D-north", -60),  # open since before the time range
    "S1": Plan("supply", "P3", "D-north", 5),
    "S2": Plan("supply", "P3", "D-south", 0, ((30, "closed"),)),
    "B1": Plan("maintenance", "P2", "D-1.a", 15, component="BatteryPack"),
    "X1": Plan("maintenance", "P2", "D-1xa", 15, component="SlotLock"),  # a swap station's slot, no pack
    "B2": Plan("maintenance", "P3", "D-south", 20, component="BatteryPack"),
    "B3": Plan("maintenance", "P3", "D-south", 0, ((25, "closed"),), "BatteryPack"),
}


async def seed_tickets(sessions: async_sessionmaker[AsyncSession]) -> datetime:
    """Each ticket created and moved through the real lifecycle (ops.tickets) on the ops clock, so
    ticket_log holds the history the over-time panel reads; returns t0."""
    t0 = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
    moments: list[tuple[int, str, str | None]] = []
    for name, plan in PLANS.items():
        moments.append((plan.at, name, None))
        moments += [(minute, name, status) for minute, status in plan.steps]
    ids: dict[str, int] = {}
    now = clock.ManualClock(t0)
    with clock.use(now):
        for minute, name, status in sorted(moments, key=lambda m: m[0]):
            now.set(t0 + timedelta(minutes=minute))
            async with sessions() as session, session.begin():
                plan = PLANS[name]
                if status is None:
                    ticket = Ticket(
                        kind=plan.kind,
                        status="open",
                        priority=plan.priority,
                        depot=plan.depot,
                        component=plan.component,
                        charger_id=None if plan.kind == "supply" else f"CP-{name}",
                        subject=f"PACK-{name}" if plan.component == "BatteryPack" else None,
                        rule="test",
                    )
                    await tickets.create(session, ticket, "test")
                    ids[name] = ticket.id
                else:
                    found = await session.get(Ticket, ids[name])
                    assert found is not None
                    await tickets.step(session, found, status, "crew")
    return t0


async def open_by_kind(db: Db, depots: list[str] | None) -> dict[tuple[str, str], int]:
    """What `ops.tickets.open_counts` (the chargeops_tickets_open gauge) counts, for these depots."""
    where = () if depots is None else (Ticket.depot.in_(depots),)
    async with db.sessions() as session:
        counts = await tickets.open_counts(session, datetime.now(UTC), *where)
    return {(c.kind, c.priority): c.n for c in counts}


def one(rows: list[asyncpg.Record]) -> dict[str, Any]:
    assert len(rows) == 1, rows
    return dict(rows[0])


@pytest.mark.parametrize(
    ("depots", "maintenance", "supply"),
    [
        (None, {"P1": 1, "P2": 3, "P3": 2, "P4": 1}, 1),  # All: tickets without a depot too
        (["D-north"], {"P1": 1, "P2": 0, "P3": 0, "P4": 1}, 1),
        (["D-north", "D-south"], {"P1": 1, "P2": 1, "P3": 1, "P4": 1}, 1),
        (["D-1.a"], {"P1": 0, "P2": 1, "P3": 0, "P4": 0}, 0),  # escaped: not D-1xa
    ],
)
async def test_open_ticket_panels_follow_the_depot_variable(
    db: Db, depots: list[str] | None, maintenance: dict[str, int], supply: int
) -> None:
    await seed_tickets(db.sessions)
    assert one(await db.panel(OPEN_MAINTENANCE, depot=depots)) == {"open_tickets": sum(maintenance.values())}
    assert one(await db.panel(OPEN_SUPPLY, depot=depots)) == {"open_tickets": supply}
    assert one(await db.panel(MAINTENANCE_BY_PRIORITY, depot=depots)) == maintenance
    # The same numbers as the gauge's source, restricted to the depots.
    gauge = await open_by_kind(db, depots)
    assert {p: gauge.get(("maintenance", p), 0) for p in PRIORITIES} == maintenance
    assert sum(n for (kind, _), n in gauge.items() if kind == "supply") == supply


async def test_open_tickets_over_time_from_their_history(db: Db) -> None:
    t0 = await seed_tickets(db.sessions)
    end = datetime.now(UTC)
    start = t0 - timedelta(minutes=10)

    async def series(depots: list[str] | None) -> dict[str, dict[datetime, int]]:
        rows = await db.panel(OPEN_OVER_TIME, start, end, interval_ms=10 * 60_000, depot=depots)
        out: dict[str, dict[datetime, int]] = {}
        for r in rows:
            out.setdefault(r["metric"], {})[r["time"]] = r["value"]
        return out

    def at(minute: int) -> datetime:
        return t0 + timedelta(minutes=minute)

    every = await series(None)
    assert set(every) == {"maintenance P1", "maintenance P2", "maintenance P3", "maintenance P4", "supply P3"}
    steps = [start + timedelta(minutes=10 * n) for n in range(100)]
    times = sorted({*(t for t in steps if t <= end), end})
    for points in every.values():  # every series has every point, 0 where nothing was open
        assert sorted(points) == times
    p1 = every["maintenance P1"]  # M1 throughout; M3 open [0, 60) and [90, 120)
    assert [p1[at(m)] for m in (-10, 0, 50, 60, 80, 90, 110, 120, 170)] == [0, 2, 2, 1, 1, 2, 2, 1, 1]
    assert {every["maintenance P4"][at(m)] for m in range(-10, 180, 10)} == {1}  # M6, never M5
    assert [every["supply P3"][at(m)] for m in (-10, 0, 10, 30)] == [0, 1, 2, 1]
    assert [every["maintenance P3"][at(m)] for m in (0, 20, 30, 40, 170)] == [1, 2, 1, 2, 2]
    assert every["maintenance P2"][at(20)] == 3
    # The last point is now: the open tickets as the gauge counts them.
    assert {tuple(k.split()): v[end] for k, v in every.items() if v[end]} == await open_by_kind(db, None)

    south = await series(["D-south"])
    assert set(south) == {"maintenance P2", "maintenance P3", "supply P3"}
    assert [south["maintenance P3"][at(m)] for m in (0, 20, 30)] == [1, 2, 1]  # B3 until 25, B2 from 20
    assert [south["supply P3"][at(m)] for m in (0, 30)] == [1, 0]
    assert {tuple(k.split()): v[end] for k, v in south.items() if v[end]} == await open_by_kind(
        db, ["D-south"]
    )


async def test_battery_tickets_count_only_open_pack_tickets(db: Db) -> None:
    """B1 and B2: open pack tickets. Not the slot-lock ticket of a station (X1), not the closed pack ticket
    (B3), not connector or supply tickets."""
    await seed_tickets(db.sessions)
    assert one(await db.panel(BATTERY)) == {"P1": 0, "P2": 1, "P3": 1, "P4": 0}
