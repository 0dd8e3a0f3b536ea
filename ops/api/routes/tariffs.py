"""Tariffs (OCPP 2.0.1 block I) and where they apply: per site, per id-token group, or the default.

Tariffs are a catalogue every token reads; changing one, or the default and group-wide assignments that
apply at every region's sites, is for an unscoped token. A region's operator assigns tariffs to the
region's own sites (another region's site is answered like one that does not exist). A change reaches the
gateways within `--tariff-refresh` seconds and prices the sessions that start afterwards: a session keeps
the tariff it was priced by (`chargeops.db.tariff_models`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import func, or_, select

from chargeops.db.ops_models import Site
from chargeops.db.tariff_models import ANY, TariffAssignment, TariffRow
from chargeops.events import utcnow
from chargeops.tariffs import describe
from ops.api.auth import Operator, Viewer
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import Items
from ops.api.scope import Scope, Scoped
from ops.api.tariff_schemas import GROUP_PATTERN, AssignmentIn, AssignmentOut, TariffIn, TariffOut

router = APIRouter(tags=["tariffs"], responses=documented(401, 403, 422))

TariffId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_AMOUNTS = ("per_kwh", "per_minute_charging", "per_minute_idle", "session_fee", "min_cost", "max_cost")


def _out(row: TariffRow) -> TariffOut:
    amounts = {k: None if getattr(row, k) is None else f"{getattr(row, k).normalize():f}" for k in _AMOUNTS}
    return TariffOut.model_validate(
        {
            "id": row.id,
            "name": row.name,
            "currency": row.currency,
            "idle_grace_minutes": row.idle_grace_minutes,
            "tax_pct": f"{row.tax_pct.normalize():f}",
            "display_text": row.display_text,
            "language": row.language,
            "shown_as": describe(row.tariff()),
            "updated_at": row.updated_at,
            **amounts,
        }
    )


async def _tariff(db: Db, tariff_id: int) -> TariffRow:
    row = await db.get(TariffRow, tariff_id)
    if row is None:
        raise ApiError(404, "not_found", f"no tariff {tariff_id}")
    return row


@router.get("/api/tariffs", dependencies=[Viewer])
async def list_tariffs(db: Db) -> Items[TariffOut]:
    rows = (await db.scalars(select(TariffRow).order_by(TariffRow.id))).all()
    return Items(items=[_out(r) for r in rows])


@router.post("/api/tariffs", dependencies=[Operator], status_code=201)
async def create_tariff(body: TariffIn, db: Db, scope: Scoped) -> TariffOut:
    """A new tariff (201); it prices nothing until it is assigned."""
    scope.fleet_wide("the tariff catalogue")
    row = TariffRow(**body.model_dump())
    db.add(row)
    await db.flush()
    out = _out(row)
    await db.commit()
    return out


@router.get("/api/tariffs/{tariff_id}", dependencies=[Viewer], responses=documented(404))
async def get_tariff(tariff_id: TariffId, db: Db) -> TariffOut:
    return _out(await _tariff(db, tariff_id))


@router.put("/api/tariffs/{tariff_id}", dependencies=[Operator], responses=documented(404))
async def update_tariff(tariff_id: TariffId, body: TariffIn, db: Db, scope: Scoped) -> TariffOut:
    """Replace a tariff's prices and text (fields left out go back to their defaults); sessions already
    priced by it keep the prices they started with."""
    scope.fleet_wide("the tariff catalogue")
    row = await _tariff(db, tariff_id)
    for key, value in body.model_dump().items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    await db.flush()
    out = _out(row)
    await db.commit()
    return out


@router.delete(
    "/api/tariffs/{tariff_id}", status_code=204, dependencies=[Operator], responses=documented(404, 409)
)
async def delete_tariff(tariff_id: TariffId, db: Db, scope: Scoped) -> None:
    """Remove a tariff that is assigned nowhere (409 `tariff_assigned` otherwise)."""
    scope.fleet_wide("the tariff catalogue")
    row = await _tariff(db, tariff_id)
    uses = await db.scalar(select(func.count()).where(TariffAssignment.tariff_id == tariff_id))
    if uses:
        raise ApiError(
            409, "tariff_assigned", f"tariff {tariff_id} is assigned {uses} time(s); unassign it first"
        )
    await db.delete(row)
    await db.commit()


def _assignment(a: TariffAssignment) -> AssignmentOut:
    return AssignmentOut(
        site=a.site or None, group=a.group_id or None, tariff_id=a.tariff_id, updated_at=a.updated_at
    )


async def _where(db: Db, scope: Scope, site: str | None) -> None:
    """An assignment at `site` must name a registered site of the token's region (404 like one that does not
    exist); one for every site (no `site`) is for an unscoped token."""
    if site is None:
        scope.fleet_wide("a tariff for every site")
        return
    await scope.one(db, Site, Site.id == site, scope.sites(Site.id), what=f"site {site}")


@router.get("/api/tariff-assignments", dependencies=[Viewer])
async def list_assignments(db: Db, scope: Scoped) -> Items[AssignmentOut]:
    """Which tariff prices sessions where: per site (and group), per group anywhere, the default. A region's
    token sees its sites' and the fleet-wide ones (they apply at its sites too)."""
    query = select(TariffAssignment).where(
        or_(TariffAssignment.site == ANY, scope.sites(TariffAssignment.site))
    )
    rows = (await db.scalars(query.order_by(TariffAssignment.site, TariffAssignment.group_id))).all()
    return Items(items=[_assignment(a) for a in rows])


@router.put(
    "/api/tariff-assignments",
    dependencies=[Operator],
    responses={201: {"model": AssignmentOut}, **documented(404)},
)
async def put_assignment(body: AssignmentIn, db: Db, scope: Scoped, response: Response) -> AssignmentOut:
    """Set (201) or replace (200) the tariff of a site, a group, a site and group, or the default (neither).
    An unknown site is 404, an unknown tariff 422 `unknown_tariff`."""
    await _where(db, scope, body.site)
    if await db.get(TariffRow, body.tariff_id) is None:
        raise ApiError(422, "unknown_tariff", f"no tariff {body.tariff_id}")
    key = {"site": body.site or ANY, "group_id": body.group or ANY}
    row = await db.get(TariffAssignment, key)
    created = row is None
    if row is None:
        row = TariffAssignment(**key)
        db.add(row)
    row.tariff_id, row.updated_at = body.tariff_id, utcnow()
    await db.flush()
    out = _assignment(row)
    await db.commit()
    response.status_code = 201 if created else 200
    return out


@router.delete("/api/tariff-assignments", status_code=204, dependencies=[Operator], responses=documented(404))
async def delete_assignment(
    db: Db,
    scope: Scoped,
    site: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    group: Annotated[str | None, Query(pattern=GROUP_PATTERN)] = None,
) -> None:
    """Remove the assignment of `site` and / or `group` (neither: the default); sessions there are then
    priced by the next one that applies, or not at all."""
    await _where(db, scope, site)
    row = await db.get(TariffAssignment, {"site": site or ANY, "group_id": group or ANY})
    if row is None:
        where: list[Any] = [
            f"site {site}" if site else "every site",
            f"group {group}" if group else "any group",
        ]
        raise ApiError(404, "not_found", f"no tariff assignment for {' and '.join(where)}")
    await db.delete(row)
    await db.commit()
