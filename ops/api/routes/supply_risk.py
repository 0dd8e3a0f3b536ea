"""Supply-risk early warnings (SPEC §5): the stored warnings, their history, a report, a review on demand.

Warnings are records the ops engine keeps (`ops.supply_warnings`): these routes read them, so the API, the
report, webhooks and the Prometheus gauge always agree on what is in force and since when. A region-scoped
token sees its region's depots' warnings; the review and the weak spots span the fleet, so it cannot run or
read them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from chargeops import clock
from chargeops.db.ops_models import SupplyWarning, SupplyWarningLog
from ops import supply_warnings, weak_spots
from ops.api.auth import Operator, Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import MAX_PAGE, Items, RiskOut, WarningChangeOut, WeakSpotOut
from ops.api.scope import Scope, Scoped
from ops.planning import LEVELS
from ops.report import supply_report
from ops.supply_warnings import log_view, warning_view

router = APIRouter(tags=["supply risk"], responses=documented(401, 403, 422))
Level = Literal["ok", "watch", "warning", "critical"]


async def _current(db: Db, scope: Scope, depot: str | None, sku: str | None) -> list[SupplyWarning]:
    stmt = select(SupplyWarning).where(scope.depots(SupplyWarning.depot_id))
    if depot is not None:
        stmt = stmt.where(SupplyWarning.depot_id == depot)
    if sku is not None:
        stmt = stmt.where(SupplyWarning.sku == sku)
    rows = list((await db.scalars(stmt)).all())
    rows.sort(key=lambda w: (-LEVELS.index(w.level), -w.probability, w.depot_id, w.sku))
    return rows


@router.get("/api/supply-risk", dependencies=[Viewer])
async def supply_risk(
    db: Db,
    scope: Scoped,
    depot: str | None = None,
    sku: str | None = None,
    level: Level | None = None,
    include_ok: bool = Query(False, description="also list depot/SKU pairs without any warning"),
) -> Items[RiskOut]:
    """Warnings in force per depot and SKU, most urgent first: level, stock-out probability, since when,
    the reasons and figures behind it and the actions proposed."""
    rows = await _current(db, scope, depot, sku)
    picked = [
        w
        for w in rows
        if (level is None or w.level == level) and (include_ok or level == "ok" or w.level != "ok")
    ]
    return Items(items=[RiskOut.model_validate(warning_view(w)) for w in picked])


@router.get("/api/supply-risk/history", dependencies=[Viewer])
async def supply_risk_history(
    db: Db,
    scope: Scoped,
    depot: str | None = None,
    sku: str | None = None,
    since: Annotated[datetime | None, Query(description="changes at or after this time (ISO 8601)")] = None,
    limit: int = Query(500, ge=1, le=MAX_PAGE),
) -> Items[WarningChangeOut]:
    """Every level change (opened, escalated, deescalated, cleared), newest first, with the probability,
    reasons, figures and proposed actions of that moment."""
    stmt = select(SupplyWarningLog).where(scope.depots(SupplyWarningLog.depot_id))
    stmt = stmt.order_by(SupplyWarningLog.id.desc()).limit(limit)
    if depot is not None:
        stmt = stmt.where(SupplyWarningLog.depot_id == depot)
    if sku is not None:
        stmt = stmt.where(SupplyWarningLog.sku == sku)
    if since is not None:
        stmt = stmt.where(SupplyWarningLog.at >= since)
    rows = (await db.scalars(stmt)).all()
    return Items(items=[WarningChangeOut.model_validate(log_view(e)) for e in rows])


@router.get("/api/supply-risk/report", dependencies=[Viewer], response_class=PlainTextResponse)
async def supply_risk_report(db: Db, scope: Scoped, depot: str | None = None) -> str:
    """The warnings in force as a plain-text (Markdown) report for a supply manager."""
    return supply_report([warning_view(w) for w in await _current(db, scope, depot, None)], clock.now())


@router.post("/api/supply-risk/review", dependencies=[Operator])
async def review_now(db: Db, scope: Scoped) -> Items[WarningChangeOut]:
    """Runs the supply review now (reorders, probabilities, warnings) instead of at the next interval;
    returns the level changes it made."""
    scope.fleet_wide("the supply review")
    changes = await supply_warnings.cycle(db, "api")
    out = Items(items=[WarningChangeOut.model_validate(log_view(e)) for e in changes])
    await db.commit()
    return out


WeakSpotKind = Literal[
    "single_source", "lead_time_variance", "supplier_on_time", "concentration", "failure_trend_by_model"
]
SkuQuery = Annotated[str | None, Query(min_length=1, max_length=64)]
SupplierQuery = Annotated[str | None, Query(min_length=1, max_length=100)]


@router.get("/api/supply-risk/weak-spots", dependencies=[Viewer])
async def weak_spots_list(
    db: Db,
    scope: Scoped,
    kind: WeakSpotKind | None = None,
    sku: SkuQuery = None,
    supplier: SupplierQuery = None,
) -> Items[WeakSpotOut]:
    """Structural weak spots (single source, lead-time variance, on-time rate, supplier concentration,
    failures rising within a charger model), most severe first: a diagnosis apart from the warnings."""
    scope.fleet_wide("the weak-spot diagnosis")
    found = weak_spots.pick((await weak_spots.diagnose(db)).findings, kind, sku, supplier)
    return Items(items=[WeakSpotOut.model_validate(f) for f in found])


@router.get("/api/supply-risk/weak-spots/report", dependencies=[Viewer], response_class=PlainTextResponse)
async def weak_spots_report(
    db: Db,
    scope: Scoped,
    kind: WeakSpotKind | None = None,
    sku: SkuQuery = None,
    supplier: SupplierQuery = None,
) -> str:
    """The weak spots as a plain-text (Markdown) report, with the fleet's supplier concentration (HHI)."""
    scope.fleet_wide("the weak-spot diagnosis")
    now = clock.now()
    diagnosis = await weak_spots.diagnose(db, now)
    diagnosis.findings = weak_spots.pick(diagnosis.findings, kind, sku, supplier)
    return weak_spots.report(diagnosis, now)
