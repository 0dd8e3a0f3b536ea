"""The fleet at a glance without Grafana (issue 13): for `GET /api/fleet/summary` and `chargeops status`.

Counts only, read with the queries the Prometheus gauges use (`telemetry.fleet_state`, `ops.tickets`,
`ops.supply_warnings`), so the summary, the dashboards and the charger list never disagree. The API narrows
it to a token's region with one condition each on the chargers, the tickets and the warnings. The response
model lives here rather than in `ops.api.schemas` so the CLI prints it without loading the whole API.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from chargeops import clock
from chargeops.db.ops_models import Ticket
from ops.supply_warnings import in_force_by_level
from ops.tickets import PRIORITIES, open_counts
from telemetry.fleet_state import STATUS_RANK, chargers_by_state

NONE_KEY = "(none)"  # counts the chargers without a site, a protocol (not booted yet) or a status


class ConnectionCounts(BaseModel):
    connected: int
    offline: int


class ChargerCounts(BaseModel):
    total: int
    by_connection: ConnectionCounts
    by_site: dict[str, int] = Field(description=f'site id → chargers, by id; "{NONE_KEY}": at no site')
    by_protocol: dict[str, int] = Field(description=f'"{NONE_KEY}": not booted yet')
    by_status: dict[str, int] = Field(
        description=f'the charger-wide status as GET /api/chargers shows it, worst first; "{NONE_KEY}": '
        "no status reported yet"
    )


class MaintenanceCounts(BaseModel):
    open: int = Field(description="maintenance tickets open, assigned or in progress")
    by_priority: dict[str, int] = Field(description="P1 (most urgent) to P4, each present")
    past_sla: int = Field(description="open ones whose SLA due time has passed")
    unassigned: int = Field(description="open ones without an assignee")


class WarningCounts(BaseModel):
    in_force: int = Field(description="depot/SKU pairs with a supply warning above ok")
    by_level: dict[str, int] = Field(description="critical, warning, watch, each present")


class FleetSummary(BaseModel):
    """The fleet at a glance (the token's region's); `chargeops status` prints the same."""

    chargers: ChargerCounts
    maintenance_tickets: MaintenanceCounts
    supply_warnings: WarningCounts


def _ordered(counts: Counter[str | None], rank: Any = None) -> dict[str, int]:
    """By `rank` (else the key), NONE_KEY last: a stable order to read and to diff."""
    keys = sorted((k for k in counts if k is not None), key=rank or (lambda k: k))
    out = {k: counts[k] for k in keys}
    if None in counts:
        out[NONE_KEY] = counts[None]
    return out


async def fleet_summary(
    session: AsyncSession,
    *,
    chargers: ColumnElement[bool] | None = None,
    tickets: ColumnElement[bool] | None = None,
    warnings: ColumnElement[bool] | None = None,
) -> FleetSummary:
    """Each condition (on `Charger`, `Ticket`, `SupplyWarning`) narrows its part; None: the whole fleet."""
    sites: Counter[str | None] = Counter()
    protocols: Counter[str | None] = Counter()
    statuses: Counter[str | None] = Counter()
    connected = offline = 0
    for g in await chargers_by_state(session, chargers if chargers is not None else true()):
        sites[g.site] += g.n
        protocols[g.protocol] += g.n
        statuses[g.status] += g.n
        connected, offline = (connected + g.n, offline) if g.connected else (connected, offline + g.n)
    maintenance = Ticket.kind == "maintenance"
    counts = await open_counts(session, clock.now(), maintenance, tickets if tickets is not None else true())
    by_priority = dict.fromkeys(PRIORITIES, 0) | {c.priority: c.n for c in counts}
    levels = await in_force_by_level(session, warnings if warnings is not None else true())
    doc = {
        "chargers": {
            "total": connected + offline,
            "by_connection": {"connected": connected, "offline": offline},
            "by_site": _ordered(sites),
            "by_protocol": _ordered(protocols),
            "by_status": _ordered(statuses, lambda s: (-STATUS_RANK.get(s, -1), s)),
        },
        "maintenance_tickets": {
            "open": sum(c.n for c in counts),
            "by_priority": by_priority,
            "past_sla": sum(c.past_sla for c in counts),
            "unassigned": sum(c.unassigned for c in counts),
        },
        "supply_warnings": {"in_force": sum(levels.values()), "by_level": levels},
    }
    return FleetSummary.model_validate(doc)
