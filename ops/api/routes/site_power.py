"""Site power (PV + storage + charging): the site controller's telemetry without a broker, and the site's
budget with the limits the planner gave its chargers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy import select

from chargeops.db.engine import stored_iso
from chargeops.db.ops_models import ChargerLimit, DischargeLimit
from chargeops.events import utcnow
from ops.api.auth import Operator, Viewer
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.scope import Scoped
from ops.site_discharge import discharge_allowance
from ops.site_power import TELEMETRY_MAX_AGE, latest_report, site_budget
from telemetry.site_telemetry import SiteReport, UnknownSite, store_report

router = APIRouter(prefix="/api/sites", tags=["site power"], responses=documented(401, 403, 404, 422))

SiteIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


@router.post("/{site_id}/telemetry", dependencies=[Operator], status_code=201)
async def post_telemetry(site_id: SiteIdPath, report: SiteReport, db: Db, scope: Scoped) -> dict[str, bool]:
    """One site controller report, as on MQTT `{root}/v1/sites/{site}/telemetry` (for a deployment without a
    broker). `stored` is false when a report for the same `at` was already stored."""
    await scope.site(db, site_id)
    try:
        return {"stored": await store_report(db, site_id, report)}
    except UnknownSite:
        raise ApiError(404, "not_found", f"no site {site_id}") from None


@router.get("/{site_id}/power", dependencies=[Viewer])
async def site_power(site_id: SiteIdPath, db: Db, ctx: Ctx, scope: Scoped) -> dict[str, Any]:
    """The latest telemetry, the charging budget computed from it and the limit each charger was given; the
    discharge its bidirectional (OCPP 2.1) chargers may give and the cap each one was given."""
    site = await scope.site(db, site_id)
    report = await latest_report(db, site_id)
    limits = await db.scalars(
        select(ChargerLimit).where(ChargerLimit.site_id == site_id).order_by(ChargerLimit.charger_id)
    )
    caps = await db.scalars(
        select(DischargeLimit).where(DischargeLimit.site_id == site_id).order_by(DischargeLimit.charger_id)
    )
    now = utcnow()
    margin = ctx.settings.site_margin_pct
    budget = site_budget(site, report, now, margin_pct=margin) if site.grid_limit_kw is not None else None
    charging = (report.charging_w or 0.0) if report is not None else 0.0
    allowance = discharge_allowance(site, report, now, charging, TELEMETRY_MAX_AGE)
    return {
        "site": site_id,
        "grid_limit_kw": site.grid_limit_kw,
        "telemetry": None
        if report is None
        else {
            "at": stored_iso(report.at),
            "pv_w": report.pv_w,
            "storage_soc": report.storage_soc,
            "storage_w": report.storage_w,
            "grid_w": report.grid_w,
            "load_w": report.load_w,
            "charging_w": report.charging_w,
        },
        "budget": None
        if budget is None
        else {
            "charging_w": budget.total_w,
            "grid_limit_w": budget.grid_limit_w,
            "margin_w": budget.margin_w,
            "pv_w": budget.pv_w,
            "load_w": budget.load_w,
            "storage_discharge_w": budget.storage_w,
            "telemetry_fresh": budget.fresh,
        },
        "allocations": [
            {
                "charger_id": lim.charger_id,
                "limit_w": lim.limit_w,
                "status": lim.status,
                "sent_at": stored_iso(lim.sent_at),
            }
            for lim in limits
        ],
        "discharge": {
            "grid_export_limit_kw": site.grid_export_limit_kw,
            "allowance_w": allowance.watts,
            "reason": allowance.reason,
            "caps": [
                {
                    "charger_id": cap.charger_id,
                    "pct": cap.pct,
                    "rated_w": cap.rated_w,
                    "status": cap.status,
                    "sent_at": stored_iso(cap.sent_at),
                }
                for cap in caps
            ],
        },
    }
