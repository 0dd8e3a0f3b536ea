"""Region scope: the one place that decides which rows an API token may see and change.

A token bound to a region (`POST /api/tokens {"region"}`, any role but admin) sees that region's sites (by
`ops.registry.site_region`), the chargers at them and everything reported by or about those chargers, its
depots with their stock, orders and warnings, and the tickets recorded for the region. Routes apply the
filters below to their own columns; an id outside the scope is answered exactly like one that does not
exist (404), so a scoped token cannot even learn which ids other regions use. Actions that act on the whole
fleet (catalogue and registry writes, the authorization list, the supply review, fleet-wide diagnoses) are
refused (403 `out_of_scope`). An unscoped token, and the admin, see everything: every filter is then `true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

from fastapi import Depends, Request
from sqlalchemy import select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from chargeops.db.models import Charger
from chargeops.db.ops_models import Depot, Site
from ops.api import audit
from ops.api.auth import Caller, Principal, Role
from ops.api.errors import ApiError
from ops.registry import site_region

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scope:
    """The region a request is confined to; `region` None: the whole fleet."""

    region: str | None
    principal: Principal
    request: Request

    @property
    def whole_fleet(self) -> bool:
        return self.region is None

    # -- filters: a condition on the caller's column, `true` for the whole fleet -----------------------

    def regions(self, column: Any) -> ColumnElement[bool]:
        return true() if self.region is None else column == self.region

    def sites(self, column: Any) -> ColumnElement[bool]:
        """`column` holds a site id."""
        if self.region is None:
            return true()
        return column.in_(select(Site.id).where(site_region() == self.region))

    def depots(self, column: Any) -> ColumnElement[bool]:
        """`column` holds a depot id."""
        if self.region is None:
            return true()
        return column.in_(select(Depot.id).where(Depot.region_id == self.region))

    def chargers(self, column: Any) -> ColumnElement[bool]:
        """`column` holds a charger (or swap station) id."""
        if self.region is None:
            return true()
        return column.in_(select(Charger.id).where(self.sites(Charger.site)))

    # -- checks ----------------------------------------------------------------------------------------

    async def one(self, db: AsyncSession, entity: type[T], *where: ColumnElement[bool], what: str) -> T:
        """The row of `entity` matching `where` (which includes the scope's filter), else 404 `no {what}`:
        the same answer whether it exists in another region or nowhere."""
        row: T | None = await db.scalar(select(entity).where(*where))
        if row is None:
            raise ApiError(404, "not_found", f"no {what}")
        return row

    async def charger(self, db: AsyncSession, charger_id: str, what: str = "charger") -> Charger:
        where = (Charger.id == charger_id, self.sites(Charger.site))
        return await self.one(db, Charger, *where, what=f"{what} {charger_id}")

    async def site(self, db: AsyncSession, site_id: str) -> Site:
        return await self.one(db, Site, Site.id == site_id, self.sites(Site.id), what=f"site {site_id}")

    async def place(self, db: AsyncSession, site_id: str | None) -> None:
        """A site a write puts a charger at: any (even one not registered yet) for the whole fleet; for a
        region, one of its sites (no site at all would take the charger out of the region)."""
        if self.region is None:
            return
        if site_id is None:
            self.refuse("a region-scoped token keeps chargers at its region's sites; give `site`")
        await self.site(db, site_id)

    async def depot(self, db: AsyncSession, depot_id: str) -> None:
        """A depot a write names: any for the whole fleet, else one of the region's (404 otherwise)."""
        if self.region is not None:
            where = (Depot.id == depot_id, self.depots(Depot.id))
            await self.one(db, Depot, *where, what=f"depot {depot_id}")

    async def depot_ids(self, db: AsyncSession) -> set[str] | None:
        """The region's depots, for filtering rows already in memory; None for the whole fleet."""
        if self.region is None:
            return None
        return set((await db.scalars(select(Depot.id).where(self.depots(Depot.id)))).all())

    def fleet_wide(self, action: str) -> None:
        """Refuses `action` to a region-scoped token: it reads or changes more than one region."""
        if self.region is not None:
            self.refuse(f"{action} concerns the whole fleet; a token scoped to {self.region} cannot do it")

    def refuse(self, detail: str) -> NoReturn:
        p = self.principal
        audit.refused(self.request, 403, f"out of scope {self.region}", p.token_id, p.name)
        raise ApiError(403, "out_of_scope", detail)


async def region_scope(request: Request, caller: Caller) -> Scope:
    return Scope(None if caller.role == Role.ADMIN else caller.region, caller, request)


Scoped = Annotated[Scope, Depends(region_scope)]
