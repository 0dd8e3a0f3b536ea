"""The operations gauges for Grafana (tickets, stock, supply risk, battery packs), refreshed by the ops role.

Series stay few (issue 13): stock and supply risk are per (depot, SKU), so only the pairs that need attention
are exported — a warning above `ok` in force, or stock available below the reorder point (or none left) —
at most `MAX_DEPOTS` × `MAX_SKUS` of them, the most urgent first; a pair that clears loses its series.
`chargeops_supply_attention_pairs` counts all such pairs, exported or not, and
`chargeops_depot_parts_attention` gives every depot a series (0: nothing to look at) for dashboards to list
depots by. Gauges over a closed set
of labels exist at 0 from start-up (`zero_series`): an absent series would read as "no data", not as none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.ops_models import Battery, BatterySwap, Depot, Stock, SupplyWarning, Ticket, TicketLog
from ops import tickets
from ops.tickets import PRIORITIES
from telemetry import metrics as m
from telemetry.metrics import label

SOH_BANDS = (("90-100", 90.0), ("80-90", 80.0), ("70-80", 70.0), ("below_70", 0.0))
PACK_LOCATIONS = ("slot", "vehicle", "depot", "unknown")
TICKET_KINDS = ("maintenance", "supply")
LEVELS = ("watch", "warning", "critical")  # above ok, in rising order
MAX_DEPOTS, MAX_SKUS = 50, 300
TICKET_GAUGES = (m.TICKETS_OPEN, m.TICKETS_OVERDUE, m.TICKETS_UNASSIGNED, m.TICKETS_UNASSIGNED_AGE)


@dataclass(frozen=True)
class Pair:
    """A depot and SKU that needs attention, and how urgently (for the bound)."""

    depot: str
    sku: str
    available: int | None
    level: str
    probability: float

    def urgency(self) -> tuple[int, float, float]:
        rank = LEVELS.index(self.level) + 1 if self.level in LEVELS else 0
        return (-rank, -self.probability, float(self.available if self.available is not None else 0))


def zero_series() -> None:
    """Every series over a closed set of labels, at 0 (called at import and before each refresh)."""
    for gauge in TICKET_GAUGES:
        for kind in TICKET_KINDS:
            for priority in PRIORITIES:
                gauge.labels(kind, priority).set(0)
    for name in (*(band for band, _ in SOH_BANDS), "unknown"):
        m.BATTERIES_BY_SOH.labels(name).set(0)
    for location in PACK_LOCATIONS:
        m.BATTERIES.labels(location).set(0)


def attention(stock: list[Stock], warnings: list[SupplyWarning]) -> list[Pair]:
    """The pairs to export, most urgent first: a level above ok, or available below the reorder point of the
    last assessment (or at / below 0 when the pair was never assessed)."""
    found: dict[tuple[str, str], Pair] = {}
    by_pair = {(w.depot_id, w.sku): w for w in warnings}
    for row in stock:
        w = by_pair.get((row.depot_id, row.sku))
        reorder = (w.figures or {}).get("reorder_point") if w is not None else None
        short = row.available <= 0 or (reorder is not None and row.available < reorder)
        level = w.level if w is not None else "ok"
        if short or level in LEVELS:
            found[(row.depot_id, row.sku)] = Pair(
                row.depot_id, row.sku, row.available, level, w.probability if w is not None else 0.0
            )
    for (depot, sku), w in by_pair.items():
        if w.level in LEVELS and (depot, sku) not in found:
            found[(depot, sku)] = Pair(depot, sku, None, w.level, w.probability)
    return sorted(found.values(), key=Pair.urgency)


def bounded(pairs: list[Pair]) -> list[Pair]:
    """The most urgent pairs within `MAX_DEPOTS` depots and `MAX_SKUS` SKUs."""
    depots: set[str] = set()
    skus: set[str] = set()
    kept = []
    for p in pairs:
        if (p.depot in depots or len(depots) < MAX_DEPOTS) and (p.sku in skus or len(skus) < MAX_SKUS):
            depots.add(p.depot)
            skus.add(p.sku)
            kept.append(p)
    return kept


async def _read(session: AsyncSession) -> dict[str, Any]:
    now = clock.now()
    # Waiting since it was created or last handed back to `open` (assigned -> open).
    waiting_since = (
        select(func.max(TicketLog.at))
        .where(TicketLog.ticket_id == Ticket.id, TicketLog.action.in_(("created", "open")))
        .correlate(Ticket)
        .scalar_subquery()
    )
    unassigned = (
        await session.execute(
            select(
                Ticket.kind,
                Ticket.priority,
                func.count(),
                func.min(func.coalesce(waiting_since, Ticket.created_at)),
            )
            .where(Ticket.status == "open")
            .group_by(Ticket.kind, Ticket.priority)
        )
    ).all()
    orphans = await session.scalar(
        select(func.count())
        .select_from(BatterySwap)
        .where(BatterySwap.status == "out_timeout", BatterySwap.updated_at >= now - timedelta(days=1))
    )
    return {
        "now": now,
        "open_counts": await tickets.open_counts(session, now),
        "unassigned": unassigned,
        "stock": list((await session.scalars(select(Stock))).all()),
        "warnings": list((await session.scalars(select(SupplyWarning))).all()),
        "depots": list((await session.scalars(select(Depot.id))).all()),
        "packs": (await session.execute(select(Battery.location, Battery.soh))).all(),
        "orphans": orphans,
    }


async def refresh(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Read everything, then replace every series in one step (no await in between: a scrape never sees a
    half-updated set)."""
    async with sessions() as session:
        got = await _read(session)
    now = got["now"]
    for gauge in (*TICKET_GAUGES, m.BATTERIES, m.BATTERIES_BY_SOH):
        gauge.clear()
    zero_series()
    for count in got["open_counts"]:
        m.TICKETS_OPEN.labels(count.kind, count.priority).set(count.n)
        m.TICKETS_OVERDUE.labels(count.kind, count.priority).set(count.past_sla)
    for kind, priority, n, since in got["unassigned"]:
        m.TICKETS_UNASSIGNED.labels(kind, priority).set(n)
        if since is not None:
            age = max(0.0, (now - stored_utc(since)).total_seconds())
            m.TICKETS_UNASSIGNED_AGE.labels(kind, priority).set(age)
    pairs = attention(got["stock"], got["warnings"])
    m.SUPPLY_ATTENTION_PAIRS.set(len(pairs))
    per_depot = dict.fromkeys((label(d) for d in got["depots"]), 0)
    for p in pairs:
        per_depot[label(p.depot)] = per_depot.get(label(p.depot), 0) + 1
    for gauge in (m.STOCK_AVAILABLE, m.SUPPLY_RISK, m.STOCKOUT_PROBABILITY, m.DEPOT_PARTS_ATTENTION):
        gauge.clear()
    for depot, n in per_depot.items():
        m.DEPOT_PARTS_ATTENTION.labels(depot).set(n)
    for p in bounded(pairs):
        depot, sku = label(p.depot), label(p.sku)
        if p.available is not None:
            m.STOCK_AVAILABLE.labels(depot, sku).set(p.available)
        if p.level in LEVELS:
            for level in LEVELS:
                m.SUPPLY_RISK.labels(depot, sku, level).set(1 if p.level == level else 0)
            m.STOCKOUT_PROBABILITY.labels(depot, sku).set(p.probability)
    m.SWAP_ORPHANS.set(got["orphans"] or 0)
    for location, soh in got["packs"]:
        m.BATTERIES.labels(label(location)).inc()
        band = next((name for name, low in SOH_BANDS if soh is not None and soh >= low), "unknown")
        m.BATTERIES_BY_SOH.labels(band).inc()


zero_series()
