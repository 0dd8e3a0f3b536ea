"""The ops engine (role `ops`): events → fault rules → tickets, periodic scans for what no event reports
(offline chargers, stalled energy), and the operations gauges for Grafana.

It consumes the version-neutral events like ingest does: on MQTT as its own durable consumer group (every
event once, kept by the broker while ops is down); in one process from a bounded queue, so a slow or failing
rule never delays a charger's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, StoredEvent
from chargeops.db.ops_models import Stock, Ticket
from chargeops.events import Booted, Connected, Event, EventKind, StatusChanged, utcnow
from ops import maintenance
from ops.planning import assess_all
from ops.registry import installed_base, seed_catalogue
from ops.rules import Observation, RuleBook, load_rules, observations
from ops.tickets import OPEN_STATES
from telemetry.metrics import STOCK_AVAILABLE, SUPPLY_RISK, TICKETS_OPEN
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.ops")

# Connectors whose energy register did not rise over the window while reporting Charging.
STALLED = text(
    """
    SELECT r.charger_id, r.evse_id, min(r.bucket)
    FROM meter_rollup_1m r
    JOIN connectors c ON c.charger_id = r.charger_id AND c.evse_id = r.evse_id AND c.status = 'Charging'
    WHERE r.measurand = 'Energy.Active.Import.Register' AND r.phase = '' AND r.bucket >= :since
    GROUP BY r.charger_id, r.evse_id
    HAVING sum(coalesce(r.energy_wh, 0)) <= 0 AND count(*) >= :buckets
    """
)


class OpsEngine(Periodic):
    name = "ops-engine"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules_file: Path | None = None,
        interval: float = 10.0,
    ) -> None:
        super().__init__(interval)
        self.sessions = sessions
        self.book: RuleBook = load_rules(rules_file)

    async def prepare(self) -> None:
        """Seeds the parts catalogue into an empty database."""
        if await seed_catalogue(self.sessions):
            log.info("seeded the default spare-parts catalogue and charger models")

    # -- events ---------------------------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Bus handler: at-least-once safe (occurrences are keyed by event id)."""
        for ev in events:
            found = observations(ev)
            body = ev.body
            if isinstance(body, Booted) and await self._boot_loop(ev):
                found.append(self._derived(ev, "boot_loop", f"boot:{ev.event_id}"))
            elif isinstance(body, Connected):
                found.append(self._derived(ev, "offline", ev.event_id, cleared=True))
            elif isinstance(body, StatusChanged) and not body.error_code:
                await self._clear_connector(ev, body)
            for obs in found:
                await self.apply(obs)

    async def apply(self, obs: Observation) -> Ticket | None:
        async with self.sessions() as session, session.begin():
            return await maintenance.observe(session, obs, self.book)

    @staticmethod
    def _derived(ev: Event, kind: str, key: str, *, cleared: bool = False) -> Observation:
        return Observation(
            kind,  # type: ignore[arg-type]
            ev.charger_id,
            key,
            ev.reported_at or ev.received_at,
            code=kind,
            cleared=cleared,
        )

    async def _boot_loop(self, ev: Event) -> bool:
        loop = self.book.settings.boot_loop
        since = utcnow() - timedelta(minutes=loop.minutes)
        async with self.sessions() as session:
            ids = set(
                (
                    await session.scalars(
                        select(StoredEvent.event_id).where(
                            StoredEvent.charger_id == ev.charger_id,
                            StoredEvent.kind == EventKind.BOOTED.value,
                            StoredEvent.received_at >= since,
                        )
                    )
                ).all()
            )
        return len(ids | {ev.event_id}) >= loop.boots

    async def _clear_connector(self, ev: Event, body: StatusChanged) -> None:
        """1.6 clears a connector's error with a status without one: note it on the connector's tickets."""
        async with self.sessions() as session, session.begin():
            rows = await session.scalars(
                select(Ticket).where(
                    Ticket.charger_id == ev.charger_id,
                    Ticket.kind == "maintenance",
                    Ticket.status.in_(OPEN_STATES),
                    Ticket.component == "Connector",
                    Ticket.evse_id == body.evse_id,
                    Ticket.cleared_at.is_(None),
                )
            )
            for ticket in rows.all():
                await maintenance.observe(
                    session,
                    Observation(
                        "fault",
                        ev.charger_id,
                        ev.event_id,
                        ev.reported_at or ev.received_at,
                        code=ticket.fault_code or "",
                        component="Connector",
                        evse_id=body.evse_id,
                        cleared=True,
                    ),
                    self.book,
                )

    # -- scans and gauges -----------------------------------------------------------------------------

    async def step(self) -> None:
        await self.scan()
        await self.refresh_gauges()

    async def scan(self) -> None:
        """Chargers silent beyond the offline threshold; sessions whose energy stalled."""
        now = utcnow()
        cfg = self.book.settings
        async with self.sessions() as session:
            silent = (
                await session.execute(
                    select(Charger.id, Charger.last_seen).where(
                        Charger.admission == "accepted",
                        Charger.last_seen < now - timedelta(minutes=cfg.offline_after_minutes),
                    )
                )
            ).all()
            minutes = cfg.energy_stalled_minutes
            stalled = (
                await session.execute(
                    STALLED,
                    {"since": now - timedelta(minutes=minutes), "buckets": max(2, int(minutes * 0.8))},
                )
            ).all()
        for charger_id, last_seen in silent:
            key = f"offline:{charger_id}:{last_seen}"  # one occurrence per silence
            await self.apply(Observation("offline", charger_id, key, now, code="offline"))
        for charger_id, evse_id, since in stalled:
            key = f"stalled:{charger_id}:{evse_id}:{since.isoformat()}"
            await self.apply(
                Observation("energy_stalled", charger_id, key, now, code="energy_stalled", evse_id=evse_id)
            )

    async def refresh_gauges(self) -> None:
        async with self.sessions() as session:
            open_counts = (
                await session.execute(
                    select(Ticket.kind, Ticket.priority, func.count())
                    .where(Ticket.status.in_(OPEN_STATES))
                    .group_by(Ticket.kind, Ticket.priority)
                )
            ).all()
            stock = (await session.scalars(select(Stock))).all()
            risks = await assess_all(session, await installed_base(session))
        TICKETS_OPEN.clear()
        for kind in ("maintenance", "supply"):
            for priority in ("P1", "P2", "P3", "P4"):
                TICKETS_OPEN.labels(kind, priority).set(0)
        for kind, priority, n in open_counts:
            TICKETS_OPEN.labels(kind, priority).set(n)
        STOCK_AVAILABLE.clear()
        for row in stock:
            STOCK_AVAILABLE.labels(row.depot_id, row.sku).set(row.available)
        SUPPLY_RISK.clear()
        for risk in risks:
            for level in ("watch", "warning", "critical"):
                SUPPLY_RISK.labels(risk.depot, risk.sku, level).set(1 if risk.level == level else 0)
