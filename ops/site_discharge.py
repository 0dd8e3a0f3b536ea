"""V2X discharge on PV + storage + charging sites: how much the site's bidirectional chargers may feed back,
and the OCPP 2.1 DER control (LimitMaxDischarge) that caps each of them. Part of the site planner's pass.

Allowance for the site's vehicles together (W), from the site controller's latest report:

* PV covers the site's own load and charging → 0: energy taken from vehicles would only be exported or
  stored in the site battery, with the losses of both ways, so discharge is not wanted;
* else, with `grid_export_limit_kw` E: E + load + charging − PV + storage discharge (what the site takes
  itself, which vehicles may cover, plus what it may export); a site without an export limit is not capped;
* a stale report: E − PV peak − storage power (the most the site's own generation could already export).

The allowance is shared equally among the connected V2X chargers with a session (water filling, capped at
each one's rated discharge power, reported as Power.Export.Offered); idle ones get 0 % so a new session
starts capped, and the session's start re-plans. Caps go out as the neutral `chargeops.SetDischargeLimit`
`{"pct"}` (the gateway's SetDERControl), only when changed, lower caps first; an unlimited site gets its
caps cleared (`chargeops.ClearDerControl`). Only OCPP 2.1 chargers get DER control; 1.6 / 2.0.1 chargers
keep to their charging profiles. Answers are kept in `discharge_limits`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.commands import CLEAR_DER_CONTROL, PLANNER_CONTROL_ID, SET_DISCHARGE_LIMIT
from chargeops.db.engine import insert_for, stored_utc
from chargeops.db.ops_models import DischargeLimit, Site, SiteTelemetry
from chargeops.events import utcnow
from chargeops.logs import for_charger
from ops.sharing import water_fill
from telemetry import metrics as m
from telemetry.bus import Bus

log = logging.getLogger("chargeops.site_power")

DER_PROTOCOL = "ocpp2.1"


@dataclass(frozen=True, slots=True)
class Allowance:
    """Discharge the site's vehicles may give together (None: not capped) and why."""

    watts: float | None
    reason: str  # pv_surplus, export_limit, stale_telemetry, unlimited


def discharge_allowance(
    site: Site, report: SiteTelemetry | None, now: datetime, charging_w: float, max_age: timedelta
) -> Allowance:
    """See the module docstring; `charging_w` is what the site's sessions import now."""
    export = site.grid_export_limit_kw * 1000 if site.grid_export_limit_kw is not None else None
    at = stored_utc(report.at) if report is not None else None
    if report is None or at is None or now - at > max_age:
        if export is None:
            return Allowance(None, "unlimited")
        own = ((site.pv_peak_kw or 0.0) + (site.storage_max_kw or 0.0)) * 1000
        return Allowance(max(0.0, export - own), "stale_telemetry")
    pv, load = report.pv_w or 0.0, report.load_w or 0.0
    if pv > 0 and pv >= load + charging_w:
        return Allowance(0.0, "pv_surplus")
    if export is None:
        return Allowance(None, "unlimited")
    taken = load + charging_w - pv + min(0.0, report.storage_w or 0.0)
    return Allowance(max(0.0, export + taken), "export_limit")


@dataclass(slots=True)
class V2xCharger:
    """A bidirectional OCPP 2.1 charger of the site, as the planner sees it."""

    id: str
    connected: bool
    sessions: int
    rated_w: float | None  # rated discharge power (latest Power.Export.Offered, or as last stored)
    limit: DischargeLimit | None = None


@dataclass(slots=True)
class DischargePlan:
    allowance: Allowance
    pct: dict[str, float | None] = field(default_factory=dict)  # charger → cap (None: cleared)


def discharge_caps(allowance: Allowance, chargers: list[V2xCharger]) -> dict[str, float | None]:
    """Cap per reachable charger in whole % of its rating (None: clear the cap); an unreachable one keeps
    its last cap, which stays reserved."""
    if allowance.watts is None:
        return {c.id: None for c in chargers if c.connected and c.limit is not None}
    budget = allowance.watts
    units: dict[str, tuple[int, float]] = {}
    caps: dict[str, float | None] = {}
    for c in chargers:
        if not c.connected:
            if c.limit is not None and c.limit.rated_w:
                budget -= c.limit.pct / 100 * c.limit.rated_w
        elif c.sessions and c.rated_w:
            units[c.id] = (1, c.rated_w)
        elif c.sessions == 0:
            caps[c.id] = 0.0
    for cid, share in water_fill(budget, units).items():
        rated = next(c.rated_w for c in chargers if c.id == cid)
        assert rated
        caps[cid] = float(min(100, math.floor(share / rated * 100)))
    return caps


class DischargeControl:
    """Sends and stores the caps of one planning pass (the planner's lock keeps passes apart)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus, timeout: float) -> None:
        self._sessions = sessions
        self._bus = bus
        self._timeout = timeout

    async def plan(
        self,
        site: Site,
        report: SiteTelemetry | None,
        chargers: list[V2xCharger],
        charging_w: float,
        max_age: timedelta,
    ) -> DischargePlan | None:
        if not chargers:
            m.set_or_withdraw(m.SITE_DISCHARGE_ALLOWANCE, site.id, None)
            return None
        allowance = discharge_allowance(site, report, utcnow(), charging_w, max_age)
        m.set_or_withdraw(m.SITE_DISCHARGE_ALLOWANCE, site.id, allowance.watts)
        plan = DischargePlan(allowance, discharge_caps(allowance, chargers))
        by_id = {c.id: c for c in chargers}
        changed = [(cid, pct) for cid, pct in plan.pct.items() if _changed(by_id[cid].limit, pct)]
        down = [(cid, pct) for cid, pct in changed if pct is not None and _lower(by_id[cid].limit, pct)]
        up = [item for item in changed if item not in down]
        for batch in (down, up):  # lower caps first, so the site never overshoots on the way
            await asyncio.gather(*(self._send(site.id, by_id[cid], pct) for cid, pct in batch))
        return plan

    async def _send(self, site_id: str, c: V2xCharger, pct: float | None) -> None:
        sent_at = utcnow()
        if pct is None:
            reply = await self._bus.request(
                c.id, CLEAR_DER_CONTROL, {"is_default": True, "control_id": PLANNER_CONTROL_ID}, self._timeout
            )
        else:
            reply = await self._bus.request(c.id, SET_DISCHARGE_LIMIT, {"pct": pct}, self._timeout)
        status = str(reply.payload.get("status", "?")) if reply.outcome == "result" else reply.outcome
        for_charger(log, c.id).log(
            logging.INFO if status in ("Accepted", "NotFound") else logging.WARNING,
            "site=%s discharge cap %s: %s %s",
            site_id,
            "cleared" if pct is None else f"{pct:.0f} %",
            status,
            reply.description or "",
        )
        async with self._sessions() as session:
            if pct is None and status in ("Accepted", "NotFound"):
                await session.execute(delete(DischargeLimit).where(DischargeLimit.charger_id == c.id))
            elif pct is not None:
                dialect = (await session.connection()).dialect.name
                values = {
                    "site_id": site_id,
                    "pct": pct,
                    "rated_w": c.rated_w,
                    "status": status[:16],
                    "sent_at": sent_at,
                }
                stmt = insert_for(dialect, DischargeLimit).values(charger_id=c.id, **values)
                await session.execute(stmt.on_conflict_do_update(index_elements=["charger_id"], set_=values))
            await session.commit()


def _changed(last: DischargeLimit | None, pct: float | None) -> bool:
    if pct is None:
        return last is not None
    return last is None or last.status != "Accepted" or last.pct != pct


def _lower(last: DischargeLimit | None, pct: float) -> bool:
    return last is None or last.status != "Accepted" or pct < last.pct
