"""Supply tickets are purchase orders: raised when a depot's inventory position falls to its reorder point,
sent to the supplier with the shortest measured lead time, received in one or several deliveries.

Several orders may be open per depot and SKU (an order in transit counts in the position, so stock is topped
up again while it travels). Each order records when it was placed and the date promised (order date + the
supplier's measured mean lead time), so realised lead times, on-time rates and overdue orders are measured
(`ops.planning.leadtime`). The row lock on the stock row (`stock_of`) keeps two ops processes from ordering
the same shortfall twice.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.ops_models import Depot, Part, Ticket
from ops import tickets
from ops.inventory import move, stock_of
from ops.planning import Pair, Plan, load, plan
from ops.planning.policy import position

SLA_HOURS = {"P1": 24, "P2": 72, "P3": 168}


class ReceiptRefused(ValueError):
    """A receipt that cannot be booked: `status` and `code` say how the API answers."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code = status, code


async def review(
    session: AsyncSession,
    depot: str,
    sku: str,
    actor: str = "ops-engine",
    *,
    plans: dict[Pair, Plan] | None = None,
) -> Ticket | None:
    """Orders for (depot, sku) if its inventory position is at or below the reorder point; the new order."""
    part = await session.get(Part, sku)
    if part is None:
        return None
    stock = await stock_of(session, depot, sku)  # locked: a concurrent review waits, then sees our order
    if plans is None:
        plans, _ = plan(await load(session, sku=sku))
    p: Plan | None = plans.get((depot, sku))
    if p is None:
        return None
    ip = position(stock.on_hand, stock.reserved, stock.on_order)
    qty = p.policy.quantity(ip)
    if qty == 0:
        return None
    d = p.demand.per_day
    priority = (
        "P1" if stock.available <= 0 else "P2" if stock.available < math.ceil(d * p.lead.mean) else "P3"
    )
    now = clock.now()
    supplier = p.lead.supplier
    ticket = await tickets.create(
        session,
        Ticket(
            kind="supply",
            status="open",
            priority=priority,
            open_key=None,
            depot=depot,
            region=await session.scalar(select(Depot.region_id).where(Depot.id == depot)),
            sku=sku,
            qty=qty,
            supplier=supplier,
            ordered_at=now,
            promised_at=now + timedelta(days=math.ceil(p.lead.mean)),
            received_qty=0,
            occurrences=1,
            parts=[],
            description=f"Order {qty} × {sku} ({part.name}) for depot {depot} from {supplier or 'any'}",
            diagnosis=(
                f"inventory position {ip} (on hand {stock.on_hand} − reserved {stock.reserved} + on order "
                f"{stock.on_order}) ≤ reorder point {p.policy.reorder_point:.1f}: demand {d:.3f}/day over a "
                f"{p.lead.mean:.0f} ± {p.lead.sd:.0f}-day lead time, z = {part.service_level_z}; "
                f"order up to {p.policy.order_up_to:.1f}"
            ),
            created_at=now,
            updated_at=now,
            last_occurred_at=now,
            sla_due_at=now + timedelta(hours=SLA_HOURS[priority]),
        ),
        actor,
    )
    await move(session, depot, sku, "order", qty, ticket_id=ticket.id, actor=actor)
    return ticket


async def review_all(session: AsyncSession, actor: str = "ops-engine") -> list[Ticket]:
    """The periodic review: every depot/SKU planning knows, against one snapshot (forecasts move with the
    calendar, a trend or a late supplier even when no stock moved)."""
    history = await load(session)
    plans, _ = plan(history)
    ordered = []
    for (depot, sku), p in plans.items():
        st = history.stock.get((depot, sku))
        if p.policy.quantity(position(st.on_hand, st.reserved, st.on_order) if st else 0) == 0:
            continue  # the snapshot says no; `review` re-checks the locked row when it might be yes
        ticket = await review(session, depot, sku, actor, plans=plans)
        if ticket is not None:
            ordered.append(ticket)
    return ordered


async def receive(
    session: AsyncSession,
    depot: str,
    sku: str,
    qty: int,
    actor: str,
    note: str | None = None,
    order: int | None = None,
) -> list[Ticket]:
    """Books `qty` in against an order (`order`), or the depot's open orders oldest first; an order is closed
    once all of it arrived. Units beyond what was on order (or beyond the named order) are booked as
    `receipt_extra`, which does not touch what other orders still owe. Returns the
    orders it closed."""
    if qty <= 0:
        raise ReceiptRefused(422, "bad_quantity", "a receipt books at least one unit")
    open_orders = list(
        (
            await session.scalars(
                select(Ticket)
                .where(
                    Ticket.kind == "supply",
                    Ticket.depot == depot,
                    Ticket.sku == sku,
                    Ticket.status.in_(tickets.OPEN_STATES),
                )
                .order_by(Ticket.ordered_at, Ticket.id)
                .with_for_update()
            )
        ).all()
    )
    if order is not None:
        target = await session.get(Ticket, order)
        if target is None or target.kind != "supply":
            raise ReceiptRefused(404, "not_found", f"no purchase order {order}")
        if (target.depot, target.sku) != (depot, sku):
            raise ReceiptRefused(
                422,
                "order_mismatch",
                f"order {order} is for {target.sku} at {target.depot}, not {sku} at {depot}",
            )
        if target.status not in tickets.OPEN_STATES:
            raise ReceiptRefused(409, "order_closed", f"order {order} is {target.status}")
        open_orders = [target]
    closed: list[Ticket] = []
    left = qty
    for ticket in open_orders:
        if left <= 0:
            break
        outstanding = max(0, (ticket.qty or 0) - ticket.received_qty)
        take = min(left, outstanding)
        if take <= 0:
            continue
        await move(session, depot, sku, "receipt", take, ticket_id=ticket.id, actor=actor, note=note)
        ticket.received_qty += take
        left -= take
        if ticket.received_qty >= (ticket.qty or 0):
            while ticket.status != "closed":
                to = "closed" if "closed" in tickets.TRANSITIONS[ticket.status] else "resolved"
                await tickets.step(session, ticket, to, actor, note or f"received {ticket.received_qty}")
            closed.append(ticket)
        else:
            ticket.updated_at = clock.now()
            await tickets.record(
                session, ticket, "received", actor, note=note or f"received {take} of {ticket.qty} (partial)"
            )
    if left > 0:
        extra = note or "beyond what was on order"
        await move(session, depot, sku, "receipt_extra", left, actor=actor, note=extra)
    await review(session, depot, sku, actor)
    return closed


async def cancel(session: AsyncSession, ticket: Ticket, actor: str) -> None:
    """An order closed before all of it arrived: what is still outstanding no longer counts as on order."""
    outstanding = max(0, (ticket.qty or 0) - ticket.received_qty)
    if outstanding and ticket.depot and ticket.sku:
        await move(session, ticket.depot, ticket.sku, "cancel", outstanding, ticket_id=ticket.id, actor=actor)
