"""The fleet at a glance (issue 13): what Grafana's fleet dashboard shows, for an operator without Grafana.

A region-scoped token gets its region's: the chargers at its sites, the tickets recorded for it and its
depots' supply warnings (`ops.api.scope`).
"""

from __future__ import annotations

from fastapi import APIRouter

from chargeops.db.models import Charger
from chargeops.db.ops_models import SupplyWarning, Ticket
from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.scope import Scoped
from ops.fleet_summary import FleetSummary, fleet_summary

router = APIRouter(tags=["fleet"], responses=documented(401, 403, 422))


@router.get("/api/fleet/summary", dependencies=[Viewer])
async def get_fleet_summary(db: Db, scope: Scoped) -> FleetSummary:
    """Chargers by connection, site, protocol and status; open maintenance tickets by priority, past their
    SLA and unassigned; supply warnings in force by level. `chargeops status` prints the same."""
    return await fleet_summary(
        db,
        chargers=scope.sites(Charger.site),
        tickets=scope.regions(Ticket.region),
        warnings=scope.depots(SupplyWarning.depot_id),
    )
