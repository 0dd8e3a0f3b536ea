"""Fleet gauges for Grafana, summarised per site and status from the database every few seconds.

Run by the `ops` role (one per deployment), so each series has exactly one source. The charger counts are
`telemetry.fleet_state`'s, which the API's fleet summary also serves. Per-charger detail stays
out of Prometheus (10,000 chargers); Grafana's charger dashboard reads Postgres for that.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.events import utcnow
from telemetry.fleet_state import chargers_by_state
from telemetry.metrics import FLEET_CHARGERS, FLEET_CONNECTORS, SESSIONS_ACTIVE, SITE_POWER
from telemetry.periodic import Periodic

CONNECTORS_BY_STATUS = text("SELECT status, count(*) FROM connectors GROUP BY status")
ACTIVE_SESSIONS = text(
    """
    SELECT coalesce(c.site, ''), count(*)
    FROM transactions t LEFT JOIN chargers c ON c.id = t.charger_id
    WHERE t.active GROUP BY 1
    """
)
# Latest total power sample per connector within the window, summed per site.
SITE_POWER_NOW = text(
    """
    SELECT coalesce(c.site, ''), sum(p.value)
    FROM (
        SELECT charger_id, value, row_number() OVER (
                   PARTITION BY charger_id, evse_id, connector_id ORDER BY sampled_at DESC
               ) AS n
        FROM meter_samples
        WHERE measurand = 'Power.Active.Import' AND phase IS NULL AND sampled_at > :since
    ) p JOIN chargers c ON c.id = p.charger_id
    WHERE p.n = 1 GROUP BY 1
    """
).bindparams(bindparam("since", type_=DateTime(timezone=True)))
POWER_WINDOW = timedelta(minutes=2)


async def refresh(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Read the fleet state, then replace every gauge's series in one step (no await in between, so a
    scrape never sees a half-updated set)."""
    async with sessions() as session:
        chargers = await chargers_by_state(session)
        connectors = (await session.execute(CONNECTORS_BY_STATUS)).all()
        sessions_active = (await session.execute(ACTIVE_SESSIONS)).all()
        power = (await session.execute(SITE_POWER_NOW, {"since": utcnow() - POWER_WINDOW})).all()
    counts: dict[tuple[str, str], int] = {}
    for group in chargers:
        state = "offline" if not group.connected else ("faulted" if group.status == "Faulted" else "online")
        key = (group.site or "", state)
        counts[key] = counts.get(key, 0) + group.n
    FLEET_CHARGERS.clear()
    for (site, state), n in counts.items():
        FLEET_CHARGERS.labels(site, state).set(n)
    FLEET_CONNECTORS.clear()
    for status, n in connectors:
        FLEET_CONNECTORS.labels(status).set(n)
    SESSIONS_ACTIVE.clear()
    for site, n in sessions_active:
        SESSIONS_ACTIVE.labels(site).set(n)
    SITE_POWER.clear()
    for site, watts in power:
        SITE_POWER.labels(site).set(float(watts or 0.0))


class FleetMetrics(Periodic):
    """Refreshes the fleet gauges every `interval` seconds."""

    name = "fleet_metrics"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = 10.0):
        super().__init__(interval)
        self._sessions = sessions

    async def step(self) -> None:
        await refresh(self._sessions)
