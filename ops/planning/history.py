"""What the planning reads from the database, in a few queries for every depot and SKU at once.

A `History` is a snapshot at one instant of the clock: the catalogue, stock, the installed base with the
day each charger joined (exposure), the demand the tickets made (parts used, and what open tickets will
likely use) and the purchase orders with their receipts. Everything downstream is pure arithmetic on it, so
the server, the API and the back-test compute the same figures from the same snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.models import Charger
from chargeops.db.ops_models import ChargerModel, ModelPart, Part, Site, Stock, StockMovement, Ticket
from ops.tickets import OPEN_STATES

HISTORY_DAYS = 365  # demand and orders older than this no longer move a forecast
DEFAULT_HOLD_DAYS = 3.0  # until the fleet has resolved tickets of its own
Pair = tuple[str, str]  # (depot, SKU)
S = TypeVar("S", bound=Select)


@dataclass(slots=True)
class Order:
    """A purchase order (a supply ticket) and what arrived against it."""

    id: int
    depot: str
    sku: str
    supplier: str | None
    qty: int
    received: int
    ordered_at: datetime
    promised_at: datetime | None
    open: bool
    completed_at: datetime | None  # the receipt that completed it (None while open, or closed short)

    @property
    def outstanding(self) -> int:
        return max(0, self.qty - self.received) if self.open else 0

    def age_days(self, now: datetime) -> float:
        return (now - self.ordered_at).total_seconds() / 86400

    @property
    def lead_days(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.ordered_at).total_seconds() / 86400


@dataclass(slots=True)
class Demand:
    """Units of a SKU a ticket needed at a depot, dated when the fault was reported.

    `qty` is what the crew used on a finished ticket; on an open one, what it holds reserved times the share
    of such reservations (same rule and SKU) that crews ended up using."""

    at: datetime
    qty: float


@dataclass(slots=True)
class History:
    now: datetime
    parts: dict[str, Part]
    stock: dict[Pair, Stock]
    # (depot, SKU) → [(joined, units)]: units installed in each charger, with when the charger joined
    installed: dict[Pair, list[tuple[datetime, int]]]
    demand: dict[Pair, list[Demand]]
    orders: list[Order]
    since: datetime  # when the fleet's own stock history starts (no movement before: no evidence)
    use_share: dict[tuple[str, str], float] = field(default_factory=dict)  # (rule, SKU) → used / reserved
    # Reserved but not used (a fan brought along for a clogged filter): units that left `available` for the
    # duration of a repair and came back; dated when the ticket was opened.
    holds: dict[Pair, list[Demand]] = field(default_factory=dict)
    hold_days: float = DEFAULT_HOLD_DAYS  # mean days from a ticket's opening to its resolution
    # Open tickets' reservations as (units, chance each goes back unused, days the ticket has been open):
    # part of what is reserved now returns to the shelf when the repair is done.
    returns: dict[Pair, list[tuple[int, float, float]]] = field(default_factory=dict)

    def installed_now(self, pair: Pair) -> int:
        return sum(units for _, units in self.installed.get(pair, ()))

    def pairs(self) -> list[Pair]:
        """Every depot/SKU with stock, an installed base, demand or an order, and a catalogue entry."""
        keys = (
            set(self.stock) | set(self.installed) | set(self.demand) | {(o.depot, o.sku) for o in self.orders}
        )
        return sorted(k for k in keys if k[1] in self.parts)

    def open_orders(self, pair: Pair) -> list[Order]:
        return [o for o in self.orders if o.open and (o.depot, o.sku) == pair]


async def load(session: AsyncSession, now: datetime | None = None, sku: str | None = None) -> History:
    """The snapshot at `now` (the clock's), of every SKU or of one (all its depots: a reorder check)."""
    now = now or clock.now()
    since = now - timedelta(days=HISTORY_DAYS)
    parts = {p.sku: p for p in (await session.scalars(_only(select(Part), Part.sku, sku))).all()}
    stock = {
        (s.depot_id, s.sku): s for s in (await session.scalars(_only(select(Stock), Stock.sku, sku))).all()
    }
    first = await session.scalar(select(func.min(StockMovement.at)))
    # Units per depot, SKU and day of joining: exposure needs no finer grain, and a fleet of thousands
    # of chargers collapses to a few hundred rows.
    by_day: dict[Pair, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    rows = await session.execute(
        _only(
            select(Site.depot_id, ModelPart.sku, func.sum(ModelPart.qty), Charger.created_at)
            .select_from(Charger)
            .join(Site, Site.id == Charger.site)
            .join(
                ChargerModel, (ChargerModel.vendor == Charger.vendor) & (ChargerModel.model == Charger.model)
            )
            .join(ModelPart, ModelPart.model_id == ChargerModel.id)
            .where(Site.depot_id.is_not(None))
            .group_by(Site.depot_id, ModelPart.sku, Charger.created_at),
            ModelPart.sku,
            sku,
        )
    )
    for depot, part_sku, qty, joined in rows.all():
        day = stored_utc(joined).replace(hour=0, minute=0, second=0, microsecond=0)
        by_day[(str(depot), part_sku)][day] += int(qty or 0)
    installed = {pair: sorted(days.items()) for pair, days in by_day.items()}
    demand, use_share, holds, hold_days, returns = await _demand(session, since, sku, now)
    return History(
        now=now,
        parts=parts,
        stock=stock,
        installed=installed,
        demand=demand,
        orders=await _orders(session, since, sku),
        since=max(since, stored_utc(first)) if first else now,
        use_share=use_share,
        holds=holds,
        hold_days=hold_days,
        returns=returns,
    )


def _only(stmt: S, column: Any, sku: str | None) -> S:
    return stmt if sku is None else stmt.where(column == sku)


async def _demand(
    session: AsyncSession, since: datetime, sku: str | None, now: datetime
) -> tuple[
    dict[Pair, list[Demand]],
    dict[tuple[str, str], float],
    dict[Pair, list[Demand]],
    float,
    dict[Pair, list[tuple[int, float, float]]],
]:
    finished_at = func.coalesce(Ticket.resolved_at, Ticket.closed_at)
    stmt = (
        select(
            StockMovement.ticket_id,
            StockMovement.depot_id,
            StockMovement.sku,
            StockMovement.kind,
            func.sum(StockMovement.qty),
            Ticket.rule,
            Ticket.status,
            Ticket.created_at,
            finished_at,
        )
        .join(Ticket, Ticket.id == StockMovement.ticket_id)
        .where(
            Ticket.kind == "maintenance",
            Ticket.created_at >= since,
            StockMovement.kind.in_(("reserve", "consume", "release")),
        )
        .group_by(
            StockMovement.ticket_id,
            StockMovement.depot_id,
            StockMovement.sku,
            StockMovement.kind,
            Ticket.rule,
            Ticket.status,
            Ticket.created_at,
            finished_at,
        )
    )
    rows = await session.execute(_only(stmt, StockMovement.sku, sku))
    per_ticket: dict[tuple[int, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    meta: dict[tuple[int, str, str], tuple[str, bool, datetime]] = {}
    repairs: dict[int, float] = {}
    for ticket_id, depot, part_sku, kind, qty, rule, status, created, finished in rows.all():
        key = (int(ticket_id or 0), str(depot), str(part_sku))
        per_ticket[key][kind] += int(qty or 0)
        meta[key] = (rule or "", status in OPEN_STATES, stored_utc(created))
        if finished is not None and status not in OPEN_STATES:
            repairs[key[0]] = (stored_utc(finished) - stored_utc(created)).total_seconds() / 86400
    used: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key, moves in per_ticket.items():
        rule, is_open, _ = meta[key]
        if not is_open:
            used[(rule, key[2])][0] += moves["consume"]
            used[(rule, key[2])][1] += moves["reserve"]
    # Beta(1, 1)-style shrinkage: with no finished ticket yet, a reservation counts as likely used.
    share = {k: (c + 1) / (r + 1) for k, (c, r) in used.items()}
    demand: dict[Pair, list[Demand]] = defaultdict(list)
    holds: dict[Pair, list[Demand]] = defaultdict(list)
    returns: dict[Pair, list[tuple[int, float, float]]] = defaultdict(list)
    for key, moves in per_ticket.items():
        rule, is_open, created = meta[key]
        if is_open:
            pending = moves["reserve"] - moves["consume"] - moves["release"]
            used_share = min(1.0, share.get((rule, key[2]), 1.0))
            units = moves["consume"] + max(0, pending) * used_share
            if pending > 0 and used_share < 1:
                age = (now - created).total_seconds() / 86400
                returns[(key[1], key[2])].append((pending, 1 - used_share, age))
        else:
            units = moves["consume"]
            if moves["release"] > 0:
                holds[(key[1], key[2])].append(Demand(created, float(moves["release"])))
        if units > 0:
            demand[(key[1], key[2])].append(Demand(created, float(units)))
    hold_days = sum(repairs.values()) / len(repairs) if repairs else DEFAULT_HOLD_DAYS
    return dict(demand), share, dict(holds), hold_days, dict(returns)


async def _orders(session: AsyncSession, since: datetime, sku: str | None) -> list[Order]:
    last_receipt = (
        select(StockMovement.ticket_id, func.max(StockMovement.at).label("at"))
        .where(StockMovement.kind == "receipt", StockMovement.ticket_id.is_not(None))
        .group_by(StockMovement.ticket_id)
        .subquery()
    )
    stmt = (
        select(Ticket, last_receipt.c.at)
        .outerjoin(last_receipt, last_receipt.c.ticket_id == Ticket.id)
        .where(Ticket.kind == "supply", (Ticket.status.in_(OPEN_STATES)) | (Ticket.created_at >= since))
        .order_by(Ticket.id)
    )
    rows = await session.execute(_only(stmt, Ticket.sku, sku))
    orders = []
    for t, received_at in rows.all():
        qty, received = int(t.qty or 0), int(t.received_qty or 0)
        ordered = stored_utc(t.ordered_at or t.created_at)
        complete = received >= qty > 0 and received_at is not None
        orders.append(
            Order(
                id=t.id,
                depot=t.depot or "",
                sku=t.sku or "",
                supplier=t.supplier,
                qty=qty,
                received=received,
                ordered_at=ordered,
                promised_at=stored_utc(t.promised_at) if t.promised_at else None,
                open=t.status in OPEN_STATES,
                completed_at=stored_utc(received_at) if complete else None,
            )
        )
    return orders
