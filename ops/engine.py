"""The ops engine (role `ops`): events → fault rules → tickets, periodic scans for what no event reports
(offline chargers, stalled energy), and the operations gauges for Grafana.

It consumes the version-neutral events like ingest does: on MQTT as its own durable consumer group (every
event once, kept by the broker while ops is down); in one process from a bounded queue, so a slow or failing
rule never delays a charger's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.models import Charger
from chargeops.db.ops_models import (
    Battery,
    BatteryReading,
    BatterySwap,
    Ticket,
)
from chargeops.events import BatterySwapped, Booted, Connected, Event, SecurityEvent, StatusChanged
from ops import boot_loop, gauges, maintenance, progress, security_events, supply_warnings, tickets
from ops.registry import seed_catalogue
from ops.rules import Observation, ObservationKind, RuleBook, load_rules, observations, observed
from ops.tickets import OPEN_STATES
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.ops")
# (energy registered, mean power drawn, mean power offered, mean SoC) over a window → what is wrong, or None
WindowCheck = Callable[[float | None, float | None, float | None, float | None], str | None]

# Charging connectors over the last window, from the 1-minute rollups: how many minutes had data, the energy
# registered, and the mean power drawn and offered and the SoC (NULL where the charger does not report them).
CHARGING_WINDOW = text(
    """
    SELECT r.charger_id, r.evse_id, count(DISTINCT r.bucket),
           sum(CASE WHEN r.measurand = 'Energy.Active.Import.Register' THEN coalesce(r.energy_wh, 0) END),
           count(CASE WHEN r.measurand = 'Energy.Active.Import.Register' THEN 1 END),
           avg(CASE WHEN r.measurand = 'Power.Active.Import' THEN r.avg END),
           avg(CASE WHEN r.measurand = 'Power.Offered' THEN r.avg END),
           avg(CASE WHEN r.measurand = 'SoC' THEN r.avg END)
    FROM meter_rollup_1m r
    JOIN connectors c ON c.charger_id = r.charger_id AND c.evse_id = r.evse_id AND c.status = 'Charging'
    WHERE r.phase = '' AND r.bucket >= :since
      AND r.measurand IN ('Energy.Active.Import.Register', 'Power.Active.Import', 'Power.Offered', 'SoC')
    GROUP BY r.charger_id, r.evse_id
    """
).bindparams(bindparam("since", type_=DateTime(timezone=True)))


# A connector fault ticket a status without an error would clear.
_OPEN_CONNECTOR_FAULT = (
    Ticket.kind == "maintenance",
    Ticket.status.in_(OPEN_STATES),
    Ticket.component == "Connector",
    Ticket.cleared_at.is_(None),
)


class OpsEngine(Periodic):
    name = "ops-engine"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules_file: Path | None = None,
        interval: float = 10.0,
        supply_interval: float = 900.0,
    ) -> None:
        super().__init__(interval)
        self.sessions = sessions
        self.book: RuleBook = load_rules(rules_file)
        self.supply_interval = timedelta(seconds=supply_interval)
        self._supply_due: datetime | None = None  # on the ops clock; None: at the first step
        # Tickets (which reorder) and the periodic review take turns: on SQLite, which has no row locks,
        # two of them could otherwise read the same position and both order.
        self._stock_lock = asyncio.Lock()

    async def prepare(self) -> None:
        """Seeds the parts catalogue into an empty database."""
        if await seed_catalogue(self.sessions):
            progress.log.info("seeded the default spare-parts catalogue and charger models")

    # -- events ---------------------------------------------------------------------------------------

    async def handle(self, events: Sequence[Event]) -> None:
        """Bus handler: at-least-once safe (occurrences are keyed by event id).

        What a batch needs from the database is read once per batch, not per event, so a fleet reconnecting
        costs ops a few queries instead of a transaction per charger: the connectors with a fault ticket an
        error-free StatusNotification may clear, the open tickets a clearing observation (a charger back
        online, a fault cleared) may close (almost none: the rest are no-ops and skipped), and the recent
        boots of the chargers that booted. Both sets are kept up to date as this batch opens tickets."""
        faulted = await self._faulted_connectors(events)
        found_by_event = [self._static_observations(ev) for ev in events]
        clear_keys = {o: self._key(o) for found in found_by_event for o in found if o.cleared}
        open_keys = await self._open_keys(clear_keys.values())
        boots = await boot_loop.recent_boots(self.sessions, events, self.book.settings.boot_loop.minutes)
        for ev, found in zip(events, found_by_event, strict=True):
            body = ev.body
            history = boots.get(ev.charger_id, [])
            if isinstance(body, Booted) and boot_loop.is_loop(ev, history, self.book.settings.boot_loop):
                found.append(observed(ev, "boot_loop", f"boot:{ev.event_id}", code="boot_loop"))
            elif isinstance(body, StatusChanged) and not body.error_code:
                if (ev.charger_id, body.evse_id) in faulted:
                    faulted.discard((ev.charger_id, body.evse_id))
                    await self._clear_connector(ev, body)
            elif isinstance(body, BatterySwapped):
                found += await self._battery_checks(ev, body)
            elif isinstance(body, SecurityEvent) and await self._expected(ev, body):
                found = [replace(obs, expected=True) for obs in found]
            for obs in found:
                key = (clear_keys[obs] if obs in clear_keys else self._key(obs)) if obs.cleared else None
                if obs.cleared and key not in open_keys:
                    continue  # nothing open to clear
                ticket = await self.apply(obs)
                if ticket is not None and ticket.open_key:
                    open_keys.add(ticket.open_key)
                if ticket is not None and ticket.component == "Connector" and ticket.evse_id is not None:
                    faulted.add((obs.charger_id, ticket.evse_id))

    @staticmethod
    def _static_observations(ev: Event) -> list[Observation]:
        """What the rules see in the event alone (no database): `observations` plus a charger coming back."""
        found = observations(ev)
        if isinstance(ev.body, Connected):
            found.append(observed(ev, "offline", code="offline", cleared=True))
        return found

    def _key(self, obs: Observation) -> str | None:
        rule = self.book.match(obs)
        return None if rule is None else tickets.maintenance_key(obs.charger_id, rule.id, obs.subject)

    async def _open_keys(self, candidates: Iterable[str | None]) -> set[str | None]:
        """The keys among `candidates` (clearing observations' keys) that an open ticket holds (one query for
        the batch)."""
        keys = {k for k in candidates if k is not None}
        if not keys:
            return set()
        async with self.sessions() as session:
            return set(await session.scalars(select(Ticket.open_key).where(Ticket.open_key.in_(keys))))

    async def apply(self, obs: Observation) -> Ticket | None:
        async with self._stock_lock, self.sessions() as session, session.begin():
            return await maintenance.observe(session, obs, self.book)

    async def _faulted_connectors(self, events: Sequence[Event]) -> set[tuple[str, int]]:
        """(charger, EVSE) with an open, not yet cleared connector ticket, among the chargers that sent an
        error-free status in `events`."""
        chargers = {
            ev.charger_id for ev in events if isinstance(ev.body, StatusChanged) and not ev.body.error_code
        }
        if not chargers:
            return set()
        async with self.sessions() as session:
            rows = await session.execute(
                select(Ticket.charger_id, Ticket.evse_id).where(
                    Ticket.charger_id.in_(chargers), *_OPEN_CONNECTOR_FAULT
                )
            )
            return {(cid, evse) for cid, evse in rows if cid is not None and evse is not None}

    async def _battery_checks(self, ev: Event, body: BatterySwapped) -> list[Observation]:
        """Packs handed in (unknown, worn, fading, cell spread); repeated pack-left-behind timeouts."""
        cfg = self.book.settings
        at = ev.reported_at or ev.received_at
        found: list[Observation] = []

        def pack_obs(code: str, serial: str, slot: int, text: str) -> None:
            found.append(
                observed(
                    ev,
                    "battery",
                    f"{ev.event_id}:{serial}:{code}",
                    code=code,
                    component="BatteryPack",
                    evse_id=slot,
                    description=f"pack {serial}: {text}",
                    subject=serial,
                )
            )

        async with self.sessions() as session:
            if body.event_type == "BatteryOutTimeout":
                since = clock.now() - timedelta(hours=cfg.swap_timeouts.hours)
                n = await session.scalar(
                    select(func.count())
                    .select_from(BatterySwap)
                    .where(
                        BatterySwap.station_id == ev.charger_id,
                        BatterySwap.status == "out_timeout",
                        BatterySwap.updated_at >= since,
                    )
                )
                # This event's own record may not be stored yet (MQTT: ops and ingest run apart).
                left = max(n or 0, 1)
                if left >= cfg.swap_timeouts.count:
                    text = f"{left} packs left behind in {cfg.swap_timeouts.hours:g} h"
                    found.append(observed(ev, "swap_timeouts", code="BatteryOutTimeout", description=text))
                return found
            if body.event_type != "BatteryIn":
                return found
            any_registered = await session.scalar(select(Battery.serial).where(Battery.registered).limit(1))
            limits = cfg.battery
            for pack in body.batteries:
                serial, slot = pack["serial"], pack.get("slot", 0)
                known = await session.get(Battery, serial)
                if any_registered and (known is None or not known.registered):
                    pack_obs("unknown_pack", serial, slot, "serial not in the registered fleet")
                soh = pack.get("soh")
                if soh is not None and soh < limits.soh_min:
                    pack_obs("soh_low", serial, slot, f"SoH {soh:g} % under {limits.soh_min:g} %")
                elif soh is not None:
                    earlier = await session.scalar(
                        select(func.max(BatteryReading.soh)).where(
                            BatteryReading.serial == serial,
                            BatteryReading.at >= at - timedelta(days=limits.fade_days),
                        )
                    )
                    if earlier is not None and earlier - soh >= limits.fade_points:
                        pack_obs(
                            "soh_fading", serial, slot,
                            f"SoH fell from {earlier:g} to {soh:g} % within {limits.fade_days:g} days",
                        )  # fmt: skip
                for code, low, high, limit, unit in (
                    ("cell_temp_spread", "cell_temp_min", "cell_temp_max", limits.temp_spread_c, "°C"),
                    ("cell_volt_spread", "cell_volt_min", "cell_volt_max", limits.volt_spread_v, "V"),
                ):
                    if pack.get(low) is not None and pack.get(high) is not None:
                        spread = pack[high] - pack[low]
                        if spread >= limit:
                            pack_obs(code, serial, slot, f"cell spread {spread:.3g} {unit} (limit {limit:g})")
        return found

    async def _expected(self, ev: Event, body: SecurityEvent) -> bool:
        """Whether the central system asked for what a security event reports, or a crew explains it."""
        async with self.sessions() as session:
            return await security_events.expected(
                session, ev, body, self.book.settings.security.expected_hours
            )

    async def _clear_connector(self, ev: Event, body: StatusChanged) -> None:
        """1.6 clears a connector's error with a status without one: note it on the connector's tickets."""
        async with self.sessions() as session, session.begin():
            rows = await session.scalars(
                select(Ticket).where(
                    Ticket.charger_id == ev.charger_id, Ticket.evse_id == body.evse_id, *_OPEN_CONNECTOR_FAULT
                )
            )
            for ticket in rows.all():
                code = ticket.fault_code or ""
                cleared = observed(
                    ev, "fault", code=code, component="Connector", evse_id=body.evse_id, cleared=True
                )
                await maintenance.observe(session, cleared, self.book)

    # -- scans and gauges -----------------------------------------------------------------------------

    async def step(self) -> None:
        await self.scan()
        await self.supply_review()
        await self.refresh_gauges()

    async def supply_review(self, force: bool = False) -> None:
        """Every `supply_interval` on the ops clock: reorders, stock-out probabilities, stored warnings."""
        now = clock.now()
        if not force and self._supply_due is not None and now < self._supply_due:
            return
        async with self._stock_lock, self.sessions() as session, session.begin():
            await supply_warnings.cycle(session)
        self._supply_due = now + self.supply_interval

    async def scan(self) -> None:
        """Chargers silent beyond the offline threshold; charging sessions whose energy stalled or that draw
        far less than the power offered."""
        now = clock.now()
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
        for charger_id, last_seen in silent:
            key = f"offline:{charger_id}:{last_seen}"  # one occurrence per silence
            await self.apply(Observation("offline", charger_id, key, now, code="offline"))
        await self._scan_charging("energy_stalled", cfg.energy_stalled_minutes, self._stalled)
        await self._scan_charging("power_low", cfg.power_low.minutes, self._power_low)

    async def _scan_charging(self, kind: ObservationKind, minutes: float, check: WindowCheck) -> None:
        """Charging connectors whose last `minutes` (at least 80 % of them with data) fail `check`; one
        occurrence per window length, however often the scan runs."""
        now = clock.now()
        async with self.sessions() as session:
            rows = (await session.execute(CHARGING_WINDOW, {"since": now - timedelta(minutes=minutes)})).all()
        window = int(now.timestamp() // (minutes * 60))
        for charger_id, evse_id, buckets, energy, energy_n, drawn, offered, soc in rows:
            if buckets < max(2, int(minutes * 0.8)):
                continue
            found = check(energy if energy_n else None, drawn, offered, soc)
            if found is not None:
                key = f"{kind}:{charger_id}:{evse_id}:{window}"
                await self.apply(
                    Observation(kind, charger_id, key, now, code=kind, evse_id=evse_id, description=found)
                )

    @staticmethod
    def _stalled(
        energy: float | None, drawn: float | None, offered: float | None, soc: float | None
    ) -> str | None:
        return None if energy is None or energy > 0 else "energy register flat while Charging"

    def _power_low(
        self, energy: float | None, drawn: float | None, offered: float | None, soc: float | None
    ) -> str | None:
        cfg = self.book.settings.power_low
        if drawn is None or offered is None or offered < cfg.min_offered_kw * 1000:
            return None
        if (soc is not None and soc >= cfg.max_soc) or drawn >= cfg.ratio * offered:
            return None
        return f"drawing {drawn / 1000:.1f} kW of {offered / 1000:.1f} kW offered"

    async def refresh_gauges(self) -> None:
        await gauges.refresh(self.sessions)
