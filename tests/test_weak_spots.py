"""Structural weak spots (README "Weak spots"): single source, lead-time variance, on-time rate, supplier
concentration (HHI) and failures rising within one charger model, with numbers worked by hand; then the API
over a real running chargeops on SQLite and Postgres."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from scipy import stats
from sqlalchemy import update

from chargeops.db.ops_models import Part, Ticket
from chargeops.events import utcnow
from ops import weak_spots
from ops.planning.demand import PRIOR_UNIT_YEARS, TREND_ALPHA, TREND_WINDOWS
from ops.planning.history import Demand, History, Order
from ops.rules import Observation
from ops.runtime import Runtime
from tests.conftest import StartRuntime

NOW = datetime(2026, 11, 25, 8, tzinfo=UTC)
YEAR_AGO = NOW - timedelta(days=365)


def part(sku: str, suppliers: list[str], lead: float, sd: float, rate: float = 0.03) -> Part:
    return Part(sku=sku, name=sku.lower(), category="x", annual_failure_rate=rate, lead_time_days=lead,
                lead_time_sd_days=sd, suppliers=suppliers, service_level_z=2.0, cover_days=10.0)  # fmt: skip


def order(oid: int, sku: str, supplier: str, lead: float, promised: float) -> Order:
    ordered = NOW - timedelta(days=100 - oid)
    return Order(id=oid, depot="D1", sku=sku, supplier=supplier, qty=5, received=5, ordered_at=ordered,
                 promised_at=ordered + timedelta(days=promised), open=False,
                 completed_at=ordered + timedelta(days=lead))  # fmt: skip


def fleet() -> History:
    """PM from A only (56 d) in two depots; CT from A or B; FAN from B or C; DSP from W only (catalogue CV
    0.5). A delivered CT in 30, 34 and 14 days against 16 promised; B delivered FAN in 20 and 20 days."""
    parts = [
        part("PM", ["A"], 56, 14, rate=0.0365),
        part("CT", ["A", "B"], 21, 5),
        part("FAN", ["B", "C"], 10, 2.5),
        part("DSP", ["W"], 14, 7),
    ]
    units = {("D1", "PM"): 10, ("D2", "PM"): 10, ("D1", "CT"): 4, ("D1", "FAN"): 6, ("D1", "DSP"): 1}
    orders = [order(1, "CT", "A", 30, 16), order(2, "CT", "A", 34, 16), order(3, "CT", "A", 14, 16)]
    orders += [order(4, "FAN", "B", 20, 12), order(5, "FAN", "B", 20, 12)]
    return History(
        now=NOW,
        parts={p.sku: p for p in parts},
        stock={},
        installed={pair: [(YEAR_AGO, n)] for pair, n in units.items()},
        demand={},
        orders=orders,
        since=YEAR_AGO,
    )


def only(findings: list[dict[str, Any]], kind: str, **where: str) -> dict[str, Any]:
    (found,) = weak_spots.pick(findings, kind, where.get("sku"), where.get("supplier"))
    return found


def test_supplier_concentration_hhi_by_hand() -> None:
    shares = weak_spots.supplier_shares(fleet())
    # Units, each SKU's split evenly over its suppliers: A 20 + 2, B 2 + 3, C 3, W 1 of 31.
    assert shares["units"] == 31 and shares["skus"] == 4 and shares["suppliers"] == 4
    assert shares["share_units"]["A"] == pytest.approx(22 / 31, abs=1e-4)
    assert shares["hhi_units"] == pytest.approx((22**2 + 5**2 + 3**2 + 1**2) / 31**2, abs=1e-4)  # 0.5401
    # SKUs: A 1 + ½, B ½ + ½, C ½, W 1 of 4.
    assert shares["share_skus"] == {"A": 0.375, "B": 0.25, "C": 0.125, "W": 0.25}
    assert shares["hhi_skus"] == pytest.approx(0.375**2 + 0.25**2 + 0.125**2 + 0.25**2, abs=1e-4)  # 0.28125
    # A carries 71 % of the units (≥ 50 %, < 75 %): medium; nobody else reaches 50 % on either basis.
    (a,) = weak_spots.concentration(fleet())
    assert (a["supplier"], a["severity"]) == ("A", "medium")
    assert a["figures"]["fleet_hhi_units"] == shares["hhi_units"] and "HHI 0.54 by units" in a["text"]


def test_single_source_by_lead_time_and_how_many_depend_on_it() -> None:
    found = weak_spots.find(fleet()).findings
    pm = only(found, "single_source", sku="PM")
    assert pm["severity"] == "high" and pm["supplier"] == "A" and pm["depots"] == ["D1", "D2"]
    assert pm["figures"]["installed_units"] == 20 and pm["figures"]["lead_time_days"] == 56
    # 14 days, one unit in one depot: low; spread over two depots it is medium.
    assert only(found, "single_source", sku="DSP")["severity"] == "low"
    h = fleet()
    h.installed[("D2", "DSP")] = [(YEAR_AGO, 1)]
    assert only(weak_spots.find(h).findings, "single_source", sku="DSP")["severity"] == "medium"
    assert not weak_spots.pick(found, "single_source", sku="CT")  # two suppliers


def test_lead_time_cv_slowness_and_on_time_by_hand() -> None:
    found = weak_spots.find(fleet()).findings
    # A → CT: prior 21 ± 5 as two orders, then 30, 34, 14: mean 120 / 5 = 24, var (2 · (25 + 9) + 36 + 100
    # + 100) / 5 = 60.8, CV √60.8 / 24 = 0.325 (≥ 0.3: medium); only 14 % slower than the catalogue.
    ct = only(found, "lead_time_variance", sku="CT", supplier="A")
    assert ct["severity"] == "medium" and ct["figures"]["cv"] == pytest.approx(math.sqrt(60.8) / 24, abs=1e-3)
    assert ct["figures"]["mean_days"] == 24 and ct["figures"]["orders_measured"] == 3
    # B → FAN: (2 · 10 + 40) / 4 = 15 days, 50 % slower than the catalogue's 10: high.
    fan = only(found, "lead_time_variance", sku="FAN", supplier="B")
    assert fan["severity"] == "high" and fan["figures"]["slower_than_catalogue"] == pytest.approx(0.5)
    assert fan["figures"]["catalogue_mean_days"] == 10 and "+50%" in fan["text"]
    # W → DSP: CV 7 / 14 = 0.5 only as the catalogue says it: one step lower than high.
    dsp = only(found, "lead_time_variance", sku="DSP", supplier="W")
    assert dsp["severity"] == "medium" and dsp["figures"]["basis"] == "catalogue"
    assert not weak_spots.pick(found, "lead_time_variance", sku="PM")  # CV 14 / 56 = 0.25
    # On time: A delivered 1 of 3 CT orders by the promised day (+ 1 day grace): 33 % < 50 %: high. B has
    # only two orders measured: too few to judge.
    late = only(found, "supplier_on_time", sku="CT", supplier="A")
    assert late["severity"] == "high" and late["figures"]["on_time"] == pytest.approx(1 / 3, abs=1e-3)
    assert not weak_spots.pick(found, "supplier_on_time", supplier="B")
    # Most severe first.
    ranks = [weak_spots.SEVERITIES.index(f["severity"]) for f in found]
    assert ranks == sorted(ranks, reverse=True)


def test_failures_rising_within_one_model_use_the_planning_trend_test() -> None:
    h = fleet()
    exposure = [("dc", "D1", "PM", 100, YEAR_AGO), ("ac", "D2", "PM", 100, YEAR_AGO)]
    # Eight PM failures on the DC model in the last 30 days, none on the AC model.
    failures = [("dc", "PM", 1, NOW - timedelta(days=d)) for d in range(1, 30, 4)]
    data = weak_spots.by_model(h, exposure, failures, {"dc": "Generic DC150", "ac": "Generic AC22"})
    assert data.history.demand[("dc", "PM")][0] == Demand(NOW - timedelta(days=1), 1.0)
    (trend,) = weak_spots.failure_trend_by_model(data)
    # The planning's windows all hold the same 8 failures; the shortest has the highest rate. Expected in
    # it: the rate before it, 0.0365 · E₀ / (E₀ + 100 · 335/365) per unit-year (prior E₀ unit-years, 100
    # units exposed for the 335 days before), over 100 units for 30 days.
    e = 0.0365 * PRIOR_UNIT_YEARS / (PRIOR_UNIT_YEARS + 100 * 335 / 365) * 100 * 30 / 365
    f = trend["figures"]
    assert trend["sku"] == "PM" and f["model"] == "dc" and trend["depots"] == ["D1"] and f["count"] == 8
    assert f["window_days"] == min(TREND_WINDOWS) == 30 and f["expected"] == pytest.approx(e, abs=1e-4)
    assert f["p"] == pytest.approx(stats.poisson.sf(7, e)) and f["p"] < TREND_ALPHA / len(TREND_WINDOWS)
    assert trend["severity"] == "high" and "Generic DC150: 8 in 30 days" in trend["text"]
    # Three a model is below TREND_MIN_COUNT: no rise proven within either model.
    few = [("dc", "PM", 1, NOW - timedelta(days=d)) for d in (2, 9, 20)]
    few += [("ac", "PM", 1, NOW - timedelta(days=d)) for d in (3, 10, 21)]
    assert weak_spots.failure_trend_by_model(weak_spots.by_model(h, exposure, few)) == []
    diagnosis = weak_spots.find(h, models=data)
    assert weak_spots.pick(diagnosis.findings, "failure_trend_by_model") == [trend]
    text = weak_spots.report(diagnosis, NOW)
    assert text.startswith("# Spare-parts weak spots — 2026-11-25 08:00 UTC")
    assert "HHI 0.54 by units, 0.28 by SKUs" in text and "| high | failure_trend_by_model | PM |" in text


ADMIN = {"Authorization": "Bearer test-admin-token"}
FLEET_YAML = """
regions: [{id: north}]
depots: [{id: D1, region: north}, {id: D2, region: north}, {id: D3, region: north}]
sites:
  - {id: s1, region: north, depot: D1}
  - {id: s2, region: north, depot: D2}
  - {id: s3, region: north, depot: D3}
chargers:
  - {id: CP-1, site: s1, vendor: Generic, model: DC150}
  - {id: CP-2, site: s2, vendor: Generic, model: DC150}
  - {id: CP-3, site: s3, vendor: Generic, model: DC150}
stock: [{depot: D1, sku: CB-MAIN, on_hand: 10}]
"""


@pytest.fixture
async def api(start_runtime: StartRuntime, db_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = await start_runtime(db_url, ops_interval=3600)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as client:
        r = await client.post("/api/fleet", content=FLEET_YAML, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 200 and r.json()["chargers"] == 3, r.text
        yield runtime, client


async def test_weak_spots_api(api: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = api
    assert runtime.ops is not None
    # The review orders the depots' first stock; the three contactor orders took 40 days, promised in 21.
    assert (await client.post("/api/supply-risk/review")).status_code == 200
    supply = (await client.get("/api/tickets", params={"kind": "supply"})).json()["items"]
    contactors = [t for t in supply if t["parts"][0]["sku"] == "CT-250A"]
    assert len(contactors) == 3 and len({t["order"]["supplier"] for t in contactors}) == 1
    supplier = contactors[0]["order"]["supplier"]
    ids = [t["id"] for t in contactors]
    async with runtime.sessions.begin() as session:
        now = utcnow()
        values = {"ordered_at": now - timedelta(days=40), "promised_at": now - timedelta(days=19)}
        await session.execute(update(Ticket).where(Ticket.id.in_(ids)).values(**values))
    for t in contactors:
        body = {"depot": t["depot"], "sku": "CT-250A", "qty": t["order"]["qty"], "order": t["id"]}
        r = await client.post("/api/stock/receipts", json=body)
        assert r.status_code == 201 and r.json()["closed_orders"] == [t["id"]], r.text
    # Four control boards fitted on CP-1, one ticket after another.
    for i in range(4):
        obs = Observation("fault", "CP-1", f"ev-{i}", utcnow(), code="InternalError")
        ticket = await runtime.ops.apply(obs)
        assert ticket is not None
        for to in ("assigned", "in_progress", "resolved"):
            step: dict[str, Any] = {"to": to}
            if to == "resolved":
                step["parts_used"] = [{"sku": "CB-MAIN", "qty": 1}]
            r = await client.post(f"/api/tickets/{ticket.id}/transition", json=step)
            assert r.status_code == 200, r.text

    r = await client.post("/api/tokens", json={"name": "v", "role": "viewer"})
    viewer = {"Authorization": f"Bearer {r.json()['token']}"}
    r = await client.get("/api/supply-risk/weak-spots", headers=viewer)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    ranks = [weak_spots.SEVERITIES.index(f["severity"]) for f in items]
    assert ranks == sorted(ranks, reverse=True)
    pm = only(items, "single_source", sku="PM-30KW")
    assert pm["severity"] == "high" and pm["supplier"] == "Infypower" and pm["depots"] == ["D1", "D2", "D3"]
    assert pm["figures"]["installed_units"] == 15  # five modules in each DC150
    slow = only(items, "lead_time_variance", sku="CT-250A", supplier=supplier)
    assert slow["severity"] == "high" and slow["figures"]["orders_measured"] == 3
    assert slow["figures"]["mean_days"] == pytest.approx((2 * 21 + 3 * 40) / 5, abs=0.2)  # 32.4: +54 %
    late = only(items, "supplier_on_time", sku="CT-250A", supplier=supplier)
    assert late["severity"] == "high" and late["figures"]["on_time"] == 0
    trend = only(items, "failure_trend_by_model", sku="CB-MAIN")
    assert trend["figures"]["model"] == "dc-150" and trend["figures"]["count"] == 4
    assert trend["figures"]["installed_units"] == 3 and "Generic DC150" in trend["text"]
    # Filters.
    r = await client.get("/api/supply-risk/weak-spots", params={"kind": "supplier_on_time"})
    assert [f["kind"] for f in r.json()["items"]] == ["supplier_on_time"]
    r = await client.get("/api/supply-risk/weak-spots", params={"supplier": "Infypower"})
    assert {(f["kind"], f["sku"]) for f in r.json()["items"]} == {("single_source", "PM-30KW")}
    # The report, and weak spots are no level of the stock-out warnings.
    r = await client.get("/api/supply-risk/weak-spots/report", headers=viewer)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# Spare-parts weak spots" in r.text and "HHI" in r.text and "| failure_trend_by_model |" in r.text
    warnings = (await client.get("/api/supply-risk", params={"include_ok": True})).json()["items"]
    kinds = set(weak_spots.KINDS)
    assert warnings and not any(reason["code"] in kinds for w in warnings for reason in w["reasons"])
    # Bad query input: 422 with a JSON reason.
    for params in ({"kind": "dire"}, {"sku": ""}, {"supplier": "x" * 101}):
        for path in ("/api/supply-risk/weak-spots", "/api/supply-risk/weak-spots/report"):
            r = await client.get(path, params=params)
            assert r.status_code == 422 and set(r.json()) >= {"error", "detail"}, r.text
