"""ISO 15118 smart charging in ops (OCPP 2.x K15–K17): an EV's charging needs → the session's charging
schedule, within the site's limit, sent as `chargeops.SetEvChargingSchedule` (the gateway makes it the
session's TxProfile) and kept in `ev_charging_schedules` with the charger's answer.

The site's limit for the charger is what the site planner last gave it (`charger_limits`, per connector);
at a site with a grid limit the planner has not yet planned for, the site's whole budget; elsewhere none.
A renegotiation the EV starts (K17) is new needs, answered the same way; the new TxProfile replaces the
last (same id). One the CSMS starts (K16): every `site_plan_interval` the planner looks at the sessions it
scheduled in this process; when the site's limit for a charger moved (by more than 5 % or 100 W) from the
one the schedule was made under, the session is planned again from the EV's last needs and the new
TxProfile sent, so a lowered grid limit reaches a session whose TxProfile would otherwise outrank the site
planner's default profile. Sessions scheduled before a restart of ops are renegotiated by the EV only.
The schedule itself is `ops.ev_schedule` (pure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import SET_EV_CHARGING_SCHEDULE
from chargeops.db.engine import insert_for
from chargeops.db.models import Charger, Transaction
from chargeops.db.models import EvChargingSchedule as ScheduleRow
from chargeops.db.ops_models import ChargerLimit, Site, SiteTelemetry
from chargeops.events import EvChargingNeeds, Event
from chargeops.logs import for_charger
from chargeops.settings import Settings
from ops.ev_schedule import ev_schedule
from ops.site_power import latest_report, site_budget
from telemetry.bus import Bus
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.ev_charging")


def cap_moved(before: float | None, now: float | None) -> bool:
    """Whether a site limit moved enough to renegotiate (K16): appeared, went, or changed by more than
    5 % or 100 W, whichever is more."""
    if before is None or now is None:
        return before != now
    return abs(now - before) > max(100.0, 0.05 * before)


class EvChargingPlanner(Periodic):
    """Bus listener (role ops): each EV's needs get a schedule; the charger's answer is awaited off the
    listener, in a task of its own, so a slow charger holds up no one. Its periodic step renegotiates the
    sessions whose site limit moved (K16)."""

    name = "ev_charging"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus, settings: Settings) -> None:
        super().__init__(settings.site_plan_interval)
        self._sessions = sessions
        self._bus = bus
        self._timeout = settings.call_timeout
        self._margin_pct = settings.site_margin_pct
        self._tasks: set[asyncio.Task[str]] = set()
        # (charger, transaction) → the needs' event, the needs, the site limit its schedule was made under
        self._scheduled: dict[tuple[str, str], tuple[Event, EvChargingNeeds, float | None]] = {}

    async def handle(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev.body, EvChargingNeeds):
                task = asyncio.get_running_loop().create_task(self.answer(ev, ev.body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def step(self) -> None:
        """K16: renegotiate the sessions whose site limit moved since their schedule; forget ended ones."""
        if not self._scheduled:
            return
        keys = list(self._scheduled)
        async with self._sessions() as session:
            rows = await session.execute(
                select(Transaction.charger_id, Transaction.transaction_id).where(
                    Transaction.active,
                    Transaction.charger_id.in_({c for c, _ in keys}),
                    Transaction.transaction_id.in_({t for _, t in keys}),
                )
            )
            running = {(charger_id, tx_id) for charger_id, tx_id in rows}
            caps = await self._site_caps_w(session, {c for c, t in keys if (c, t) in running})
        for key in keys:
            if key not in running:
                self._scheduled.pop(key, None)
                continue
            ev, needs, cap_then = self._scheduled[key]
            cap_now = caps[key[0]]
            if cap_moved(cap_then, cap_now):
                for_charger(log, key[0]).info(
                    "site limit for transaction %s moved from %s to %s W: renegotiating (K16)",
                    key[1], cap_then, cap_now,
                )  # fmt: skip
                await self.answer(ev, needs, cap=cap_now)

    async def answer(self, ev: Event, needs: EvChargingNeeds, cap: float | None = None) -> str:
        """Plan, send and keep the schedule for `needs` (within `cap`, or the site's limit read now); the
        charger's answer (or what went wrong)."""
        charger_log = for_charger(log, ev.charger_id)
        try:
            now = clock.now()
            if cap is None:
                cap = await self.site_cap_w(ev.charger_id)
            self._scheduled[(ev.charger_id, needs.transaction_id)] = (ev, needs, cap)
            plan = ev_schedule(
                now=now,
                max_power_w=needs.max_power_w,
                min_power_w=needs.min_power_w,
                energy_wh=needs.energy_wh,
                departure_at=needs.departure_at,
                cap_w=cap,
                max_periods=needs.max_periods,
            )
            periods = [{"start_s": s, "limit_w": w} for s, w in plan.periods]
            command = {
                "evse_id": needs.evse_id,
                "transaction_id": needs.transaction_id,
                "start_at": now.isoformat(),
                "periods": periods,
            }
            if plan.duration_s is not None:
                command["duration_s"] = plan.duration_s
            reply = await self._bus.request(ev.charger_id, SET_EV_CHARGING_SCHEDULE, command, self._timeout)
            status = str(reply.payload.get("status", "?")) if reply.outcome == "result" else reply.outcome
            charger_log.log(
                logging.INFO if status == "Accepted" else logging.WARNING,
                "EV schedule for transaction %s (EVSE %d, site cap %s W): %s %s",
                needs.transaction_id, needs.evse_id, cap, periods, status,
            )  # fmt: skip
            await self._keep(ev, needs, plan.duration_s, periods, status, now)
            return status
        except Exception:
            charger_log.exception("EV schedule for transaction %s failed", needs.transaction_id)
            return "error"

    async def site_cap_w(self, charger_id: str) -> float | None:
        async with self._sessions() as session:
            return (await self._site_caps_w(session, {charger_id}))[charger_id]

    async def _site_caps_w(self, session: AsyncSession, charger_ids: set[str]) -> dict[str, float | None]:
        """Each charger's site limit, read together (K16 looks at every scheduled session at once): the
        planner's last limit, else the budget of its site with a grid limit, else none."""
        caps: dict[str, float | None] = dict.fromkeys(charger_ids)
        if not charger_ids:
            return caps
        limits = await session.execute(
            select(ChargerLimit.charger_id, ChargerLimit.limit_w).where(
                ChargerLimit.charger_id.in_(charger_ids)
            )
        )
        caps.update(limits.tuples().all())
        unplanned = charger_ids - {c for c, cap in caps.items() if cap is not None}
        if not unplanned:
            return caps
        sites = await session.execute(
            select(Charger.id, Site)
            .join(Site, Charger.site == Site.id)
            .where(Charger.id.in_(unplanned), Site.grid_limit_kw.is_not(None))
        )
        reports: dict[str, SiteTelemetry | None] = {}
        now = clock.now()
        for charger_id, site in sites.tuples():
            if site.id not in reports:
                reports[site.id] = await latest_report(session, site.id)
            caps[charger_id] = site_budget(site, reports[site.id], now, margin_pct=self._margin_pct).total_w
        return caps

    async def _keep(
        self,
        ev: Event,
        needs: EvChargingNeeds,
        duration_s: int | None,
        periods: list[dict[str, float]],
        status: str,
        at: datetime,
    ) -> None:
        async with self._sessions() as session, session.begin():
            dialect = (await session.connection()).dialect.name
            row = {
                "event_id": ev.event_id,
                "charger_id": ev.charger_id,
                "transaction_id": needs.transaction_id,
                "evse_id": needs.evse_id,
                "source": "csms",
                "starts_at": at,
                "duration_s": duration_s,
                "rate_unit": "W",
                "periods": [{"start_s": p["start_s"], "limit": p["limit_w"]} for p in periods],
                "status": status[:16],
                "created_at": clock.now(),
            }
            stmt = insert_for(dialect, ScheduleRow).values(**row)
            await session.execute(
                stmt.on_conflict_do_update(index_elements=["event_id"], set_={"status": row["status"]})
            )

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
