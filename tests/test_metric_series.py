"""Issue 13, metric size: fleet gauges are 0 rather than absent, label values hold no whitespace, and stock /
supply-risk series exist only for the (depot, SKU) pairs that need attention, bounded. A real /metrics."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from chargeops.db.ops_models import Stock, SupplyWarning
from ops.fleet import add_charger
from ops.gauges import MAX_DEPOTS, MAX_SKUS, Pair, bounded
from ops.registry import FleetDoc, apply_fleet
from ops.runtime import Runtime
from telemetry.fleet_metrics import CONNECTOR_STATUSES, refresh
from telemetry.metrics import label
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger

FLEET = FleetDoc.model_validate(
    {
        "regions": [{"id": "north"}],
        "depots": [{"id": "D1", "region": "north"}, {"id": "D2", "region": "north"}],
        "sites": [{"id": "quiet", "depot": "D1"}],  # registered, no chargers
        "parts": [
            {"sku": "PLENTY", "name": "fuse", "category": "fuse"},
            {"sku": "EMPTY", "name": "relay", "category": "relay"},
            {"sku": "RISKY", "name": "power module", "category": "power_module"},
        ],
        "stock": [
            {"depot": "D1", "sku": "PLENTY", "on_hand": 40},
            {"depot": "D1", "sku": "EMPTY", "on_hand": 0},
            {"depot": "D1", "sku": "RISKY", "on_hand": 3},
        ],
    }
)


async def scrape(runtime: Runtime) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics over HTTP, as name → {sorted labels → value}."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}") as client:
        text = (await client.get("/metrics")).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def series(scraped: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> dict[str, float]:
    """The series of `name` keyed by their label values joined with `/` (in label-name order)."""
    return {"/".join(v for _, v in labels): value for labels, value in scraped.get(name, {}).items()}


async def test_fleet_gauges_are_zero_not_absent_and_no_label_value_holds_a_space(
    start_runtime: StartRuntime,
) -> None:
    runtime = await start_runtime(fleet_metrics_interval=3600, ops_interval=3600)
    before = await scrape(runtime)  # start-up, before the ops role's first refresh counted anything
    assert set(series(before, "chargeops_fleet_connectors")) >= set(CONNECTOR_STATUSES)
    assert series(before, "chargeops_tickets_open")["maintenance/P1"] == 0
    async with runtime.sessions() as session, session.begin():
        await apply_fleet(session, FLEET)
        await add_charger(session, "H1", site="north harbour")  # a site id typed with a space
        await add_charger(session, "H2", site="north harbour")
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "H1") as h1:
        await h1.boot()
        await h1.result(
            "StatusNotification",
            {
                "connectorId": 1,
                "errorCode": "OtherError",
                "vendorErrorCode": "relay stuck",
                "status": "Faulted",
            },
        )
        await refresh(runtime.sessions)
        assert runtime.ops is not None
        await runtime.ops.refresh_gauges()
        scraped = await scrape(runtime)
    chargers = series(scraped, "chargeops_fleet_chargers")
    assert chargers["north_harbour/faulted"] == 1 and chargers["north_harbour/offline"] == 1
    assert chargers["north_harbour/online"] == 0  # present at 0, not absent
    assert chargers["quiet/online"] == chargers["quiet/offline"] == chargers["quiet/faulted"] == 0
    assert series(scraped, "chargeops_sessions_active") == {"north_harbour": 0, "quiet": 0}
    assert series(scraped, "chargeops_site_power_watts") == {"north_harbour": 0, "quiet": 0}
    connectors = series(scraped, "chargeops_fleet_connectors")
    assert connectors["Faulted"] == 1 and connectors["Charging"] == 0
    assert series(scraped, "chargeops_batteries_by_soh")["below_70"] == 0
    spaced = [
        f"{name}{dict(labels)}"
        for name, by_labels in scraped.items()
        for labels in by_labels
        if any(re.search(r"\s", value) for _, value in labels)
    ]
    assert spaced == []


async def test_stock_and_supply_risk_series_only_for_pairs_that_need_attention(
    start_runtime: StartRuntime,
) -> None:
    runtime = await start_runtime(fleet_metrics_interval=3600, ops_interval=3600, supply_interval=3600)
    assert runtime.ops is not None
    async with runtime.sessions() as session, session.begin():
        await apply_fleet(session, FLEET)
        session.add_all(
            [  # what the last supply review stored: PLENTY calm above its reorder point, RISKY critical
                SupplyWarning(depot_id="D1", sku="PLENTY", level="ok", figures={"reorder_point": 5.0}),
                SupplyWarning(
                    depot_id="D1",
                    sku="RISKY",
                    level="critical",
                    probability=0.8,
                    figures={"reorder_point": 2},
                ),
            ]
        )
    await runtime.ops.refresh_gauges()
    scraped = await scrape(runtime)
    assert series(scraped, "chargeops_stock_available") == {"D1/EMPTY": 0, "D1/RISKY": 3}
    assert series(scraped, "chargeops_supply_risk") == {
        "D1/watch/RISKY": 0,
        "D1/warning/RISKY": 0,
        "D1/critical/RISKY": 1,
    }
    # (the ops role's own supply review may have re-assessed the probability meanwhile; the level holds)
    assert set(series(scraped, "chargeops_supply_stockout_probability")) == {"D1/RISKY"}
    assert series(scraped, "chargeops_supply_attention_pairs") == {"": 2}
    assert series(scraped, "chargeops_depot_parts_attention") == {"D1": 2, "D2": 0}

    async with runtime.sessions() as session, session.begin():  # both clear: their series go
        await session.execute(update(Stock).where(Stock.sku == "EMPTY").values(on_hand=10))
        await session.execute(update(SupplyWarning).where(SupplyWarning.sku == "RISKY").values(level="ok"))
    await runtime.ops.refresh_gauges()
    scraped = await scrape(runtime)
    assert series(scraped, "chargeops_stock_available") == {}
    assert series(scraped, "chargeops_supply_risk") == {}
    assert series(scraped, "chargeops_supply_stockout_probability") == {}
    assert series(scraped, "chargeops_depot_parts_attention") == {"D1": 0, "D2": 0}


def test_attention_series_are_bounded_most_urgent_first() -> None:
    pairs = [Pair(f"D{d:03}", f"S{s:03}", 0, "ok", 0.0) for d in range(MAX_DEPOTS + 10) for s in range(2)]
    pairs += [Pair("D-LAST", f"X{s:03}", None, "critical", 0.9) for s in range(MAX_SKUS - 2)]
    kept = bounded(sorted(pairs, key=Pair.urgency))
    assert len({p.depot for p in kept}) == MAX_DEPOTS and len({p.sku for p in kept}) == MAX_SKUS
    assert kept[0].level == "critical"  # the urgent ones are in, whatever their ids


def test_label_values_lose_their_whitespace() -> None:
    assert label("north harbour") == "north_harbour"
    assert label("  Ground \t Failure ") == "Ground_Failure"
    assert label("D-1") == "D-1"
