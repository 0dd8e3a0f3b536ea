"""The simulated world a back-test replays the real ops code against, one day at a time.

Each day, on the back-test's clock: suppliers deliver the orders whose realised lead time has passed
(`ops.supply.receive`); chargers fail at their true rates (catalogue rate × trend × installed units) and each
failure is reported as the fault observation its rule matches (`ops.maintenance.observe`: ticket, reservation,
reorder check); crews resolve tickets a few days after the failed part is on the shelf and report only the
parts they really used (`ops.maintenance.transition`); then the daily supply cycle runs (`ops.supply_warnings.
cycle`: periodic review, assessment, stored warnings). Only the world — failures, deliveries, crews — is
simulated here; every stock, ticket, order and warning decision is the product's own code and database.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.models import Charger
from chargeops.db.ops_models import Stock, SupplyWarning, Ticket
from ops import maintenance, supply, supply_warnings
from ops.backtest.scenario import Scenario
from ops.planning import load, plan
from ops.registry import (
    CATALOGUE,
    ChargerDoc,
    DepotDoc,
    FleetDoc,
    PartDoc,
    RegionDoc,
    SiteDoc,
    StockDoc,
    apply_fleet,
    read_fleet_file,
)
from ops.rules import Observation, RuleBook, load_rules
from ops.tickets import OPEN_STATES

Pair = tuple[str, str]


@dataclass(slots=True)
class Day:
    """A depot/SKU at the end of one day (after the supply cycle)."""

    on_hand: int
    available: int
    level: str
    probability: float
    demand_per_day: float
    on_order: int = 0
    trend: bool = False  # the planning saw a significant rise in failures
    failed: int = 0  # units of the part that failed at the depot that day (the demand to forecast)


@dataclass(slots=True)
class Recording:
    """What the back-test saw, for scoring."""

    scenario: Scenario
    parts: dict[str, PartDoc]
    days: dict[Pair, list[Day]] = field(default_factory=lambda: defaultdict(list))
    failures: int = 0
    used: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # SKU → units that failed
    fitted: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # SKU → units crews fitted


@dataclass(slots=True)
class _Job:
    """A maintenance ticket from the crew's side: what really broke, and when they can fit it."""

    failed: list[str]
    due_day: int


class World:
    def __init__(self, scenario: Scenario, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.s = scenario
        self.sessions = sessions
        self.rnd = random.Random(scenario.seed)
        self.clock = clock.ManualClock(self._at(0))
        self.book: RuleBook = load_rules()
        catalogue = read_fleet_file(CATALOGUE)
        overrides = {p.sku: p for p in scenario.parts}
        self.parts: dict[str, PartDoc] = {}
        for p in catalogue.parts:
            o = overrides.get(p.sku)
            changed = o.model_dump(exclude={"sku"}, exclude_none=True) if o else {}
            self.parts[p.sku] = p.model_copy(update=changed)
        self.models = {m.id: m for m in catalogue.models}
        self.charger_parts: dict[str, dict[str, int]] = {}  # charger id → SKU → qty
        self.charger_depot: dict[str, str] = {}
        self.jobs: dict[int, _Job] = {}
        self.deliveries: dict[int, int] = {}  # order id → day it arrives
        self.failed_today: dict[Pair, int] = defaultdict(int)
        self.rule_for = self._rules_by_category()

    def _at(self, day: int) -> datetime:
        return datetime.combine(self.s.start, time(8), tzinfo=UTC) + timedelta(days=day)

    def _rules_by_category(self) -> dict[str, Observation]:
        """Part category → a fault observation (a template) the rules book matches to a rule bringing it."""
        found: dict[str, Observation] = {}
        for rule in self.book.rules:
            for m in rule.match:
                if m.event != "fault" or any(c in (m.code or "") + (m.component or "") for c in "*?["):
                    continue
                obs = Observation(
                    "fault", "", "", self._at(0), code=m.code or "", component=m.component or ""
                )
                if self.book.match(obs) is not rule:
                    continue
                for need in rule.parts:
                    found.setdefault(need.category, obs)
        return found

    # -- fleet ----------------------------------------------------------------------------------------

    def _chargers(self, depot: str, counts: dict[str, int], tag: str) -> list[ChargerDoc]:
        docs = []
        for model_id, n in counts.items():
            model = self.models[model_id]
            for i in range(n):
                cid = f"{depot}-{model_id}-{tag}{i:03d}"
                docs.append(ChargerDoc(id=cid, site=f"S-{depot}", vendor=model.vendor, model=model.model))
                self.charger_parts[cid] = dict(model.parts)
                self.charger_depot[cid] = depot
        return docs

    async def _add_chargers(self, session: AsyncSession, doc: FleetDoc, day: int) -> None:
        await apply_fleet(session, doc, actor="backtest")
        ids = [c.id for c in doc.chargers]
        await session.execute(update(Charger).where(Charger.id.in_(ids)).values(created_at=self._at(day)))

    async def setup(self) -> None:
        depots = [d.id for d in self.s.depots]
        chargers = [c for d in self.s.depots for c in self._chargers(d.id, d.chargers, "")]
        doc = FleetDoc(
            regions=[RegionDoc(id="R1")],
            depots=[DepotDoc(id=d, region="R1") for d in depots],
            sites=[SiteDoc(id=f"S-{d}", region="R1", depot=d) for d in depots],
            parts=list(self.parts.values()),
            models=list(self.models.values()),
            chargers=chargers,
        )
        async with self.sessions() as session, session.begin():
            await self._add_chargers(session, doc, 0)
        # Start each depot at its order-up-to level, as the policy would have left it.
        async with self.sessions() as session, session.begin():
            plans, _ = plan(await load(session))
            stock = [
                StockDoc(depot=d, sku=sku, on_hand=math.ceil(p.policy.order_up_to))
                for (d, sku), p in plans.items()
                if p.demand.installed > 0
            ]
            await apply_fleet(session, FleetDoc(stock=stock), actor="backtest")

    # -- one day --------------------------------------------------------------------------------------

    def _factor(self, sku: str, depot: str, day: int) -> float:
        f = 1.0
        for t in self.s.trends:
            if t.sku == sku and (t.depots is None or depot in t.depots) and day >= t.start_day:
                f *= 1 + (t.factor - 1) * min(1.0, (day - t.start_day) / t.ramp_days)
        return f

    def _lead_time(self, supplier: str | None, sku: str, day: int) -> int:
        part = self.parts[sku]
        mean, sd = part.lead_time_days, part.lead_time_sd_days
        for c in self.s.supplier_changes:
            if (
                c.supplier == supplier
                and (c.skus is None or sku in c.skus)
                and c.start_day <= day < c.end_day
            ):
                mean, sd = c.lead_time_days, c.lead_time_sd_days
        return max(1, round(self.rnd.gauss(mean, sd)))

    async def _deliver(self, day: int) -> None:
        due = sorted(oid for oid, d in self.deliveries.items() if d <= day)
        for oid in due:
            async with self.sessions() as session, session.begin():
                order = await session.get(Ticket, oid)
                if order is not None and order.status in OPEN_STATES and order.depot and order.sku:
                    left = (order.qty or 0) - order.received_qty
                    if left > 0:
                        await supply.receive(session, order.depot, order.sku, left, "supplier", order=oid)
            del self.deliveries[oid]

    async def _fail(self, day: int, rec: Recording) -> None:
        by_depot: dict[str, list[str]] = defaultdict(list)
        for cid, depot in self.charger_depot.items():
            by_depot[depot].append(cid)
        n = 0
        for depot, ids in sorted(by_depot.items()):
            units: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for cid in ids:
                for sku, qty in self.charger_parts[cid].items():
                    units[sku].append((cid, qty))
            for sku in sorted(units):
                part = self.parts[sku]
                if part.category not in self.rule_for:
                    continue
                installed = sum(q for _, q in units[sku])
                lam = part.annual_failure_rate * self._factor(sku, depot, day) * installed / 365
                for _ in range(_poisson(self.rnd, lam)):
                    cid = self.rnd.choices([c for c, _ in units[sku]], [q for _, q in units[sku]])[0]
                    template = self.rule_for[part.category]
                    obs = Observation(
                        "fault", cid, f"bt-{day}-{n}", self.clock.now(), code=template.code,
                        component=template.component, evse_id=self.rnd.randint(1, 2),
                    )  # fmt: skip
                    n += 1
                    async with self.sessions() as session, session.begin():
                        ticket = await maintenance.observe(session, obs, self.book)
                    rec.failures += 1
                    rec.used[sku] += 1
                    self.failed_today[(depot, sku)] += 1
                    if ticket is not None:
                        job = self.jobs.setdefault(ticket.id, _Job([], day + self._repair_days()))
                        job.failed.append(sku)

    def _repair_days(self) -> int:
        return self.rnd.randint(*self.s.repair_days)

    async def _crews(self, day: int, rec: Recording) -> None:
        for tid in sorted(self.jobs):
            job = self.jobs[tid]
            if job.due_day > day:
                continue
            async with self.sessions() as session, session.begin():
                ticket = await session.get(Ticket, tid)
                if ticket is None or ticket.status not in OPEN_STATES or ticket.depot is None:
                    del self.jobs[tid]
                    continue
                need: dict[str, int] = defaultdict(int)
                for sku in job.failed:
                    need[sku] += 1
                shelf = {
                    s.sku: s.on_hand
                    for s in (
                        await session.scalars(
                            select(Stock).where(Stock.depot_id == ticket.depot, Stock.sku.in_(list(need)))
                        )
                    ).all()
                }
                if any(shelf.get(sku, 0) < qty for sku, qty in need.items()):
                    continue  # the part is not on the shelf yet: the crew waits
                for step in ("assigned", "in_progress"):
                    if ticket.status != step:
                        await maintenance.transition(session, ticket, step, "crew")
                used = [{"sku": sku, "qty": qty} for sku, qty in sorted(need.items())]
                await maintenance.transition(session, ticket, "resolved", "crew", parts_used=used)
                for sku, qty in need.items():
                    rec.fitted[sku] += qty
            del self.jobs[tid]

    async def _cycle(self, day: int, rec: Recording) -> None:
        async with self.sessions() as session, session.begin():
            await supply_warnings.cycle(session, "backtest")
        async with self.sessions() as session:
            new = (
                await session.scalars(
                    select(Ticket).where(Ticket.kind == "supply", Ticket.status.in_(OPEN_STATES))
                )
            ).all()
            for order in new:
                if order.id not in self.deliveries and order.received_qty == 0 and order.sku:
                    ordered_day = (order.ordered_at.date() - self.s.start).days if order.ordered_at else day
                    self.deliveries[order.id] = ordered_day + self._lead_time(
                        order.supplier, order.sku, ordered_day
                    )
            stock = {(s.depot_id, s.sku): s for s in (await session.scalars(select(Stock))).all()}
            warnings = {(w.depot_id, w.sku): w for w in (await session.scalars(select(SupplyWarning))).all()}
        failed, self.failed_today = self.failed_today, defaultdict(int)
        for pair in sorted(set(stock) | set(warnings)):
            st, w = stock.get(pair), warnings.get(pair)
            rec.days[pair].append(
                Day(
                    on_hand=st.on_hand if st else 0,
                    available=st.available if st else 0,
                    level=w.level if w else "ok",
                    probability=w.probability if w else 0.0,
                    demand_per_day=float((w.figures or {}).get("demand_per_day") or 0.0) if w else 0.0,
                    on_order=st.on_order if st else 0,
                    trend=bool((w.figures or {}).get("trend")) if w else False,
                    failed=failed.get(pair, 0),
                )
            )

    async def _grow(self, day: int) -> None:
        added = [
            c for g in self.s.growth if g.day == day for c in self._chargers(g.depot, g.chargers, f"g{day}-")
        ]
        if added:
            async with self.sessions() as session, session.begin():
                await self._add_chargers(session, FleetDoc(chargers=added), day)

    async def run(self) -> Recording:
        rec = Recording(self.s, self.parts)
        with clock.use(self.clock):
            await self.setup()
            for day in range(self.s.days):
                self.clock.set(self._at(day))
                await self._grow(day)
                await self._deliver(day)
                await self._fail(day, rec)
                await self._crews(day, rec)
                await self._cycle(day, rec)
        return rec


def _poisson(rnd: random.Random, lam: float) -> int:
    """Knuth's method: λ here is a handful of failures a day at most."""
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rnd.random()
        if p <= limit:
            return k
        k += 1
