"""Fleet registry (SPEC §5): sites, regions, depots, charger models with their bill of parts, and loading a
whole fleet document (the format of `chargeops fleet load`).

A region-scoped token lists its own region, depots and sites; charger models are a catalogue every token
reads. Changing the registry changes the fleet's shape, so only an unscoped token may."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select

from chargeops.db.models import Charger
from chargeops.db.ops_models import ChargerModel, Depot, ModelPart, Region, Site
from ops.api.auth import Operator, Viewer
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import Items
from ops.api.scope import Scope, Scoped
from ops.registry import DepotDoc, FleetDoc, ModelDoc, RegionDoc, SiteDoc, UnknownReference, apply_fleet

router = APIRouter(tags=["fleet registry"], responses=documented(401, 403, 422))


def _site(s: Site, chargers: int) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "kind": s.kind,
        "region": s.region_id,
        "depot": s.depot_id,
        "address": s.address,
        "latitude": s.latitude,
        "longitude": s.longitude,
        "power_budget": {"grid_limit_kw": s.grid_limit_kw, "grid_export_limit_kw": s.grid_export_limit_kw},
        "chargers": chargers,
    }


@router.get("/api/sites", dependencies=[Viewer])
async def list_sites(db: Db, scope: Scoped, region: str | None = None) -> Items[dict[str, Any]]:
    """Sites with their power budget and how many chargers they have."""
    rows = (await db.execute(select(Charger.site, func.count()).group_by(Charger.site))).all()
    counts: dict[str | None, int] = {site: n for site, n in rows}
    stmt = select(Site).where(scope.sites(Site.id)).order_by(Site.id)
    if region is not None:
        stmt = stmt.where(Site.region_id == region)
    return Items(items=[_site(s, counts.get(s.id, 0)) for s in (await db.scalars(stmt)).all()])


async def _apply(db: Db, scope: Scope, doc: FleetDoc) -> dict[str, int]:
    scope.fleet_wide("changing the fleet registry")
    try:
        counts = await apply_fleet(db, doc, actor="api")
    except UnknownReference as exc:
        raise ApiError(422, "unknown_reference", str(exc)) from None
    await db.commit()
    return counts


@router.put("/api/sites/{site_id}", dependencies=[Operator])
async def put_site(site_id: str, body: SiteDoc, db: Db, scope: Scoped) -> dict[str, int]:
    _same_id(site_id, body.id)
    return await _apply(db, scope, FleetDoc(sites=[body]))


@router.get("/api/regions", dependencies=[Viewer])
async def list_regions(db: Db, scope: Scoped) -> Items[RegionDoc]:
    rows = (await db.scalars(select(Region).where(scope.regions(Region.id)).order_by(Region.id))).all()
    return Items(items=[RegionDoc(id=r.id, name=r.name) for r in rows])


@router.put("/api/regions/{region_id}", dependencies=[Operator])
async def put_region(region_id: str, body: RegionDoc, db: Db, scope: Scoped) -> dict[str, int]:
    _same_id(region_id, body.id)
    return await _apply(db, scope, FleetDoc(regions=[body]))


@router.get("/api/depots", dependencies=[Viewer])
async def list_depots(db: Db, scope: Scoped) -> Items[DepotDoc]:
    rows = (await db.scalars(select(Depot).where(scope.depots(Depot.id)).order_by(Depot.id))).all()
    return Items(
        items=[
            DepotDoc(id=d.id, name=d.name, region=d.region_id, latitude=d.latitude, longitude=d.longitude)
            for d in rows
        ]
    )


@router.put("/api/depots/{depot_id}", dependencies=[Operator])
async def put_depot(depot_id: str, body: DepotDoc, db: Db, scope: Scoped) -> dict[str, int]:
    _same_id(depot_id, body.id)
    return await _apply(db, scope, FleetDoc(depots=[body]))


@router.get("/api/models", dependencies=[Viewer])
async def list_models(db: Db) -> Items[ModelDoc]:
    """Charger models, their rated power and their bill of spare parts (SKU → quantity per unit)."""
    bom: dict[str, dict[str, int]] = {}
    for mp in (await db.scalars(select(ModelPart))).all():
        bom.setdefault(mp.model_id, {})[mp.sku] = mp.qty
    rows = (await db.scalars(select(ChargerModel).order_by(ChargerModel.id))).all()
    return Items(
        items=[
            ModelDoc(
                id=m.id,
                vendor=m.vendor,
                model=m.model,
                kind=m.kind,  # type: ignore[arg-type]
                max_power_kw=m.max_power_kw,
                parts=bom.get(m.id, {}),
            )
            for m in rows
        ]
    )


@router.put("/api/models/{model_id}", dependencies=[Operator])
async def put_model(model_id: str, body: ModelDoc, db: Db, scope: Scoped) -> dict[str, int]:
    _same_id(model_id, body.id)
    return await _apply(db, scope, FleetDoc(models=[body]))


@router.post("/api/fleet", dependencies=[Operator])
async def load_fleet(request: Request, db: Db, scope: Scoped) -> dict[str, int]:
    """Upserts a fleet document — JSON, or YAML with `Content-Type: application/yaml` — holding any of
    regions, depots, sites, parts, models, chargers and stock. Returns how many of each it held."""
    scope.fleet_wide("changing the fleet registry")
    raw = await request.body()
    try:
        data = yaml.safe_load(raw) if "yaml" in request.headers.get("content-type", "") else None
        doc = FleetDoc.model_validate_json(raw) if data is None else FleetDoc.model_validate(data)
    except yaml.YAMLError as exc:
        raise ApiError(422, "invalid_yaml", str(exc)) from None
    except ValidationError as exc:
        raise ApiError(
            422, "invalid_fleet", str(exc.errors(include_url=False, include_input=False))
        ) from None
    return await _apply(db, scope, doc)


def _same_id(path_id: str, body_id: str) -> None:
    if path_id != body_id:
        raise ApiError(422, "id_mismatch", f"body id {body_id} differs from the path {path_id}")
