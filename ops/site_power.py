"""Site power planning: keeps a PV + storage + charging site within its grid connection limit.

Budget for charging = grid limit − margin + PV − other site load + storage discharge (the storage's maximum
power while its SoC is above a reserve), from the site controller's latest report. The margin
(`site_margin_pct` of the grid limit, default 5 %) absorbs metering lag and EVs ramping between re-plans. A
report older than a few minutes is not trusted for PV or storage, which change fast, and the plan counts on
neither; the last known other load still counts (forgetting it would hand the chargers power the site
uses). The budget is shared by water filling: every running session gets the same share, except that a
session whose EV takes clearly less than it may (or a charger that offers less) is capped near what it takes
and the rest goes to the others (what it may: our limit, or an operator's cap on its ISO 15118 session,
`ev_operator_caps`, if less: a session held at that cap is not holding back); an idle charger keeps a small
floor so a new session starts safely before the re-plan its start triggers.

Limits go out as the neutral bus action `chargeops.SetPowerLimit` (the gateway turns it into the charger's
SetChargingProfile; a TxDefaultProfile limits each connector, so a charger's share is divided by its
sessions). Only changed limits are sent, decreases before increases so the sum never overshoots on the way,
and each answer is kept in `charger_limits`. Re-planned on TransactionStarted / TransactionEnded events, on
new site telemetry (checked every `interval` seconds) and every `full_interval` seconds regardless. The same
pass caps what bidirectional OCPP 2.1 chargers feed back (`ops.site_discharge`, DER control).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Float, Integer, String, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.commands import SET_POWER_LIMIT
from chargeops.db.engine import insert_for, stored_utc
from chargeops.db.models import TZ, Charger, EvOperatorCap, Transaction
from chargeops.db.ops_models import ChargerLimit, DischargeLimit, Site, SiteTelemetry
from chargeops.events import Booted, Event, TransactionEnded, TransactionStarted, utcnow
from chargeops.logs import for_charger
from chargeops.settings import Settings
from ops.sharing import water_fill
from ops.site_discharge import DER_PROTOCOL, DischargeControl, DischargePlan, V2xCharger
from telemetry import metrics as m
from telemetry.bus import Bus
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.site_power")

RESERVE_SOC = 20.0  # % the storage keeps for the site; below it the plan counts on no discharge
TELEMETRY_MAX_AGE = timedelta(minutes=3)
SAMPLE_WINDOW = timedelta(minutes=2)
IDLE_FLOOR_W = 1380.0  # 6 A on one phase, the least an EV may start charging with (IEC 61851-1)
STEP_W = 100.0  # limits are planned in steps, so a little metering noise does not resend every limit
EV_LIMITED = 0.9  # a session drawing under 90 % of what it may is held back by its EV, not by us
EVENT_MEMORY = 120.0  # s a transaction event counts before ingest has stored it (the bus may be faster)

LATEST_POWER = (
    text(
        """
    SELECT charger_id, connector_id, transaction_id, measurand, value, sampled_at FROM (
        SELECT charger_id, evse_id, connector_id, transaction_id, measurand, value, sampled_at,
               row_number() OVER (
                   PARTITION BY charger_id, evse_id, connector_id, measurand ORDER BY sampled_at DESC
               ) AS n
        FROM meter_samples
        WHERE charger_id IN :ids AND sampled_at > :since AND phase IS NULL AND transaction_id IS NOT NULL
          AND measurand IN ('Power.Active.Import', 'Power.Offered', 'Power.Export.Offered')
    ) s WHERE n = 1
    """
    )
    .bindparams(bindparam("ids", expanding=True), bindparam("since", type_=TZ))
    .columns(
        charger_id=String,
        connector_id=Integer,
        transaction_id=String,
        measurand=String,
        value=Float,
        sampled_at=TZ,  # typed, or SQLite hands back text
    )
)
# Latest report per site through the (site_id, at) key: one index probe per site, no table scan.
LATEST_TELEMETRY = text(
    "SELECT s.id, (SELECT max(t.at) FROM site_telemetry t WHERE t.site_id = s.id) AS at FROM sites s"
).columns(id=String, at=TZ)


@dataclass(frozen=True, slots=True)
class Budget:
    """What the site can give its chargers now, and the figures it came from (W)."""

    grid_limit_w: float
    margin_w: float = 0.0  # of the grid limit, kept unused
    pv_w: float = 0.0
    load_w: float = 0.0
    storage_w: float = 0.0  # discharge counted on
    telemetry_at: datetime | None = None
    fresh: bool = False

    @property
    def total_w(self) -> float:
        return max(0.0, self.grid_limit_w - self.margin_w + self.pv_w - self.load_w + self.storage_w)


async def latest_report(session: AsyncSession, site_id: str) -> SiteTelemetry | None:
    """The site controller's newest report (the (site_id, at) key serves it)."""
    return await session.scalar(
        select(SiteTelemetry)
        .where(SiteTelemetry.site_id == site_id)
        .order_by(SiteTelemetry.at.desc())
        .limit(1)
    )


def site_budget(
    site: Site,
    report: SiteTelemetry | None,
    now: datetime,
    *,
    margin_pct: float,
    max_age: timedelta = TELEMETRY_MAX_AGE,
    reserve_soc: float = RESERVE_SOC,
) -> Budget:
    """The charging budget of a site with a grid limit (see the module docstring for the formula)."""
    grid = (site.grid_limit_kw or 0.0) * 1000
    margin = grid * margin_pct / 100
    at = stored_utc(report.at) if report is not None else None
    if report is None or at is None or now - at > max_age:
        load = (report.load_w or 0.0) if report is not None else 0.0
        return Budget(grid, margin, load_w=load, telemetry_at=at)
    discharge = 0.0
    if site.storage_max_kw and report.storage_soc is not None and report.storage_soc > reserve_soc:
        discharge = site.storage_max_kw * 1000
    return Budget(grid, margin, report.pv_w or 0.0, report.load_w or 0.0, discharge, at, fresh=True)


@dataclass(slots=True)
class ChargerState:
    id: str
    connected: bool
    protocol: str | None = None
    sessions: int = 0
    draw_w: float | None = None  # highest latest import of its sessions, sampled since its limit was set
    offered_w: float | None = None
    charging_w: float = 0.0  # its sessions' latest import, however old the limit
    limit: ChargerLimit | None = None
    rated_discharge_w: float | None = None  # V2X: latest Power.Export.Offered of its sessions
    discharge: DischargeLimit | None = None
    operator_cap_w: float | None = None  # every session here held by an operator's cap: the highest

    def v2x(self) -> V2xCharger | None:
        """This charger for discharge planning, if it is a bidirectional OCPP 2.1 one (it reports a rated
        discharge power, or has a cap from us)."""
        stored = self.discharge.rated_w if self.discharge is not None else None
        if self.protocol != DER_PROTOCOL or not (self.rated_discharge_w or self.discharge is not None):
            return None
        return V2xCharger(
            self.id, self.connected, self.sessions, self.rated_discharge_w or stored, self.discharge
        )


@dataclass(slots=True)
class SitePlan:
    site_id: str
    budget: Budget
    limits: dict[str, float] = field(default_factory=dict)  # charger → planned limit per connector (W)
    charging_w: float = 0.0
    discharge: DischargePlan | None = None  # V2X chargers' discharge caps (OCPP 2.1 DER control)


class SitePlanner(Periodic):
    """Plans every site with a grid limit (role ops, one per deployment); `handle` is its bus listener and
    wakes it."""

    name = "site_planner"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        settings: Settings,
        *,
        interval: float = 5.0,
        full_interval: float = 60.0,
        reserve_soc: float = RESERVE_SOC,
        idle_floor_w: float = IDLE_FLOOR_W,
    ) -> None:
        super().__init__(interval)
        self._sessions = sessions
        self._bus = bus
        self._timeout = settings.call_timeout
        self._margin_pct = settings.site_margin_pct
        self._full_interval = full_interval
        self._next_full = 0.0
        self._reserve_soc = reserve_soc
        self._floor = idle_floor_w
        self._lock = asyncio.Lock()
        self._due: set[str] = set()
        self._seen_telemetry: dict[str, datetime | None] = {}
        self._max_w: dict[str, float] = {}  # what a charger offers without our limit, once seen
        self._tx_events: dict[tuple[str, str], tuple[bool, float]] = {}  # (charger, tx) → (active, when)
        self._discharge = DischargeControl(sessions, bus, settings.call_timeout)
        # called with (charger, new limit W) before the limit is sent: the EV planner renegotiates the
        # ISO 15118 sessions there first (K16), as their TxProfile, not the default profile, holds the EV
        self.before_limit: Callable[[str, float], Awaitable[None]] | None = None

    async def handle(self, events: Sequence[Event]) -> None:
        """Sessions starting or ending re-plan their site at once (the planner loop does the work). A charger
        that booted may have lost what it was told (many do not keep charging profiles or DER controls over a
        reboot): its limit and discharge cap are marked `Rebooted`, so the re-plan sends them again."""
        chargers: set[str] = set()
        booted: set[str] = set()
        for ev in events:
            if isinstance(ev.body, TransactionStarted | TransactionEnded):
                active = isinstance(ev.body, TransactionStarted)
                self._tx_events[(ev.charger_id, ev.body.transaction_id)] = (active, time.monotonic())
                chargers.add(ev.charger_id)
            elif isinstance(ev.body, Booted):
                booted.add(ev.charger_id)
        if not chargers | booted:
            return
        async with self._sessions() as session:
            if booted:
                for table in (ChargerLimit, DischargeLimit):
                    await session.execute(
                        update(table).where(table.charger_id.in_(booted)).values(status="Rebooted")
                    )
                await session.commit()
            sites = await session.scalars(
                select(Charger.site)
                .where(Charger.id.in_(chargers | booted), Charger.site.is_not(None))
                .distinct()
            )
            self._due.update(s for s in sites if s)
        self.wake()

    async def step(self) -> None:
        """Every site each `full_interval`; in between the sites due (sessions, boots) and those with new
        telemetry."""
        due, self._due = self._due, set()
        if time.monotonic() >= self._next_full:
            self._next_full = time.monotonic() + self._full_interval
            await self.plan()
        else:
            await self.plan_many(due | await self._new_telemetry())

    async def _new_telemetry(self) -> set[str]:
        async with self._sessions() as session:
            latest = (await session.execute(LATEST_TELEMETRY)).all()
        return {site for site, at in latest if at is not None and self._seen_telemetry.get(site) != at}

    async def plan(self, site_id: str | None = None) -> dict[str, SitePlan]:
        """Re-plan one site, or every site; returns the plans of sites with a grid limit."""
        if site_id is not None:
            return await self.plan_many({site_id})
        async with self._sessions() as session:
            site_ids = set(await session.scalars(select(Site.id)))
        return await self.plan_many(site_ids)

    async def plan_many(self, site_ids: set[str]) -> dict[str, SitePlan]:
        plans: dict[str, SitePlan] = {}
        async with self._lock:  # one plan at a time: two must not send crossing limits
            now = time.monotonic()
            self._tx_events = {k: v for k, v in self._tx_events.items() if now - v[1] < EVENT_MEMORY}
            for site_id in sorted(site_ids):
                plan = await self._plan_site(site_id)
                if plan is not None:
                    plans[site_id] = plan
        return plans

    async def _plan_site(self, site_id: str) -> SitePlan | None:
        async with self._sessions() as session:
            site = await session.get(Site, site_id)
            if site is None:
                return None
            report = await latest_report(session, site_id)
            chargers = await self._chargers(session, site_id)
        self._seen_telemetry[site_id] = report.at if report is not None else None
        budget = site_budget(
            site, report, utcnow(), margin_pct=self._margin_pct, reserve_soc=self._reserve_soc
        )
        charging = sum(c.charging_w for c in chargers)
        _export_metrics(site_id, report if budget.fresh else None, charging, site.grid_limit_kw, budget)
        v2x = [v for v in (c.v2x() for c in chargers) if v is not None]
        discharge = await self._discharge.plan(site, report, v2x, charging, TELEMETRY_MAX_AGE)
        if site.grid_limit_kw is None:
            return None
        plan = SitePlan(site_id, budget, self._allocate(budget.total_w, chargers), charging, discharge)
        await self._send(site_id, plan.limits, {c.id: c.limit for c in chargers})
        return plan

    async def _chargers(self, session: AsyncSession, site_id: str) -> list[ChargerState]:
        rows = (
            await session.execute(
                select(Charger.id, Charger.connected, Charger.protocol).where(Charger.site == site_id)
            )
        ).all()
        chargers = {cid: ChargerState(cid, bool(connected), protocol) for cid, connected, protocol in rows}
        if not chargers:
            return []
        ids = list(chargers)
        active = {
            (cid, tx)
            for cid, tx in await session.execute(
                select(Transaction.charger_id, Transaction.transaction_id).where(
                    Transaction.active, Transaction.charger_id.in_(ids)
                )
            )
        }
        for key, (is_active, _) in self._tx_events.items():
            if key[0] in chargers:
                (active.add if is_active else active.discard)(key)
        for cid, _ in active:
            chargers[cid].sessions += 1
        held: dict[str, list[float]] = {}
        caps = select(EvOperatorCap.charger_id, EvOperatorCap.transaction_id, EvOperatorCap.limit_w)
        for cid, tx, cap_w in await session.execute(caps.where(EvOperatorCap.charger_id.in_(ids))):
            if (cid, tx) in active:
                held.setdefault(cid, []).append(cap_w)
        for cid, held_w in held.items():
            if len(held_w) == chargers[cid].sessions:
                chargers[cid].operator_cap_w = max(held_w)
        for limit in await session.scalars(select(ChargerLimit).where(ChargerLimit.charger_id.in_(ids))):
            chargers[limit.charger_id].limit = limit
        for cap in await session.scalars(select(DischargeLimit).where(DischargeLimit.charger_id.in_(ids))):
            chargers[cap.charger_id].discharge = cap
        samples = await session.execute(LATEST_POWER, {"ids": ids, "since": utcnow() - SAMPLE_WINDOW})
        for cid, _connector, tx, measurand, value, sampled_at in samples:
            c = chargers[cid]
            if (cid, tx) not in active:
                continue
            if measurand == "Power.Export.Offered":
                c.rated_discharge_w = max(c.rated_discharge_w or 0.0, value)
                continue
            if measurand == "Power.Active.Import":
                c.charging_w += value
            since_limit = c.limit is None or stored_utc(sampled_at) >= stored_utc(c.limit.sent_at)
            if not since_limit:
                continue
            if measurand == "Power.Active.Import":
                c.draw_w = max(c.draw_w or 0.0, value)
            else:
                c.offered_w = max(c.offered_w or 0.0, value)
        return list(chargers.values())

    def _allocate(self, budget_w: float, chargers: list[ChargerState]) -> dict[str, float]:
        """Limit per connector for every reachable charger. One we cannot reach keeps its last limit, so
        that stays reserved."""
        units: dict[str, tuple[int, float]] = {}
        for c in chargers:
            last = c.limit.limit_w if c.limit is not None else None
            if not c.connected:
                budget_w -= (last or 0.0) * max(1, c.sessions)
                continue
            if c.sessions == 0:
                units[c.id] = (1, self._floor)
                continue
            accepted = last if c.limit is not None and c.limit.status == "Accepted" else None
            # what we let it draw: an operator's cap on its ISO 15118 sessions is ours too, so an EV held
            # at it is not taken for one holding back (that would send a TxDefaultProfile after the
            # operator's TxProfile, and nothing about the site changed: TC_K_59)
            ours = min(math.inf if accepted is None else accepted, _or_inf(c.operator_cap_w))
            if c.offered_w is not None and c.offered_w < ours - 1:
                self._max_w[c.id] = c.offered_w  # below our limit: the charger's own maximum
            allowed = min(ours, self._max_w.get(c.id, math.inf))
            cap = self._max_w.get(c.id, math.inf)
            if c.draw_w is not None and c.draw_w < EV_LIMITED * allowed:
                cap = min(cap, c.draw_w + max(0.25 * c.draw_w, self._floor))
            units[c.id] = (c.sessions, cap)
        shares = water_fill(budget_w, units)
        return {cid: math.floor(share / STEP_W) * STEP_W for cid, share in shares.items()}

    async def _send(
        self, site_id: str, limits: dict[str, float], previous: dict[str, ChargerLimit | None]
    ) -> None:
        """Send the changed limits: all decreases (and retries) first, then the increases."""
        down, up = [], []
        for cid, watts in limits.items():
            last = previous.get(cid)
            if last is None or last.status != "Accepted" or watts < last.limit_w:
                down.append((cid, watts))
            elif watts > last.limit_w:
                up.append((cid, watts))
        for batch in (down, up):
            await asyncio.gather(*(self._send_one(site_id, cid, watts) for cid, watts in batch))

    async def _send_one(self, site_id: str, charger_id: str, watts: float) -> None:
        if self.before_limit is not None:
            await self.before_limit(charger_id, watts)
        sent_at = utcnow()
        reply = await self._bus.request(charger_id, SET_POWER_LIMIT, {"limit_w": watts}, self._timeout)
        status = str(reply.payload.get("status", "?")) if reply.outcome == "result" else reply.outcome
        level = logging.INFO if status == "Accepted" else logging.WARNING
        for_charger(log, charger_id).log(
            level, "site=%s power limit %.0f W: %s %s", site_id, watts, status, reply.description or ""
        )
        async with self._sessions() as session:
            dialect = (await session.connection()).dialect.name
            values = {"site_id": site_id, "limit_w": watts, "status": status[:16], "sent_at": sent_at}
            stmt = insert_for(dialect, ChargerLimit).values(charger_id=charger_id, **values)
            await session.execute(stmt.on_conflict_do_update(index_elements=["charger_id"], set_=values))
            await session.commit()


def _or_inf(watts: float | None) -> float:
    return math.inf if watts is None else watts


def _export_metrics(
    site: str, report: SiteTelemetry | None, charging_w: float, grid_limit_kw: float | None, budget: Budget
) -> None:
    """Per-site gauges; telemetry-based series are withdrawn while the site's report is stale."""
    m.SITE_CHARGING_LOAD.labels(m.label(site)).set(charging_w)
    values: dict[m.Gauge, float | None] = {
        m.SITE_POWER_LIMIT: budget.total_w if grid_limit_kw is not None else None,
        m.SITE_PV: report.pv_w if report else None,
        # reported in %, exported 0-1
        m.SITE_STORAGE_SOC: report.storage_soc / 100 if report and report.storage_soc is not None else None,
        m.SITE_STORAGE: report.storage_w if report else None,
        m.SITE_GRID_IMPORT: report.grid_w if report else None,
        m.SITE_SELF_CONSUMPTION: _self_consumption(report) if report else None,
    }
    for gauge, value in values.items():
        m.set_or_withdraw(gauge, site, value)


def _self_consumption(report: SiteTelemetry) -> float | None:
    """PV used on site ÷ PV produced: what was not exported (None without PV, or without a grid figure)."""
    if not report.pv_w or report.grid_w is None:
        return None
    return max(0.0, report.pv_w - max(0.0, -report.grid_w)) / report.pv_w
