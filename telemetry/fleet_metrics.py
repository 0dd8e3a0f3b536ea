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
from telemetry.metrics import FLEET_CHARGERS, FLEET_CONNECTORS, SESSIONS_ACTIVE, SITE_POWER, label
from telemetry.periodic import Periodic

STATES = ("online", "offline", "faulted")
# Every connector status OCPP 1.6 and 2.x know: each has a series, 0 when no connector reports it.
CONNECTOR_STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Occupied",
    "Reserved",
    "Unavailable",
    "Faulted",
)
REGISTERED_SITES = text("SELECT id FROM sites")
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


def zero_series() -> None:
    """The connector statuses at 0 from start-up, before the first refresh has read the database."""
    for status in CONNECTOR_STATUSES:
        FLEET_CONNECTORS.labels(status).set(0)


async def refresh(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Read the fleet state, then replace every gauge's series in one step (no await in between, so a
    scrape never sees a half-updated set). Every site — registered, or named by a charger — has each
    state, its sessions and its power at 0 rather than absent."""
    async with sessions() as session:
        chargers = await chargers_by_state(session)
        registered = (await session.scalars(REGISTERED_SITES)).all()
        connectors = (await session.execute(CONNECTORS_BY_STATUS)).all()
        sessions_active = (await session.execute(ACTIVE_SESSIONS)).all()
        power = (await session.execute(SITE_POWER_NOW, {"since": utcnow() - POWER_WINDOW})).all()
    sites = {label(s) for s in registered} | {label(g.site or "") for g in chargers}
    counts = {(site, state): 0 for site in sites for state in STATES}
    for group in chargers:
        state = "offline" if not group.connected else ("faulted" if group.status == "Faulted" else "online")
        key = (label(group.site or ""), state)
        counts[key] += group.n
    FLEET_CHARGERS.clear()
    for (site, state), n in counts.items():
        FLEET_CHARGERS.labels(site, state).set(n)
    FLEET_CONNECTORS.clear()
    zero_series()
    for status, n in connectors:
        FLEET_CONNECTORS.labels(label(status)).inc(n)
    per_site = {site: 0.0 for site in sites}
    for gauge, rows in ((SESSIONS_ACTIVE, sessions_active), (SITE_POWER, power)):
        gauge.clear()
        values = dict(per_site)
        for site, value in rows:
            values[label(site)] = values.get(label(site), 0.0) + float(value or 0.0)
        for site, value in values.items():
            gauge.labels(site).set(value)


zero_series()


class FleetMetrics(Periodic):
    """Refreshes the fleet gauges every `interval` seconds."""

    name = "fleet_metrics"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = 10.0):
        super().__init__(interval)
        self._sessions = sessions

    async def step(self) -> None:
        await refresh(self._sessions)
