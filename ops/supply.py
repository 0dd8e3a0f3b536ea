"""Supply tickets: a purchase request when a depot's stock position falls below its reorder point, one open
per depot and SKU, closed by receiving the goods."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.ops_models import Depot, Part, Ticket
from ops import tickets
from ops.inventory import move, stock_of
from ops.planning import demand, first_activity, order_quantity, reorder_point, target_level
from ops.registry import installed_base

SLA_HOURS = {"P1": 24, "P2": 72, "P3": 168}


async def review(session: AsyncSession, depot: str, sku: str, actor: str = "ops-engine") -> Ticket | None:
    """Raises a supply ticket for (depot, sku) if its position is below the reorder point and none is open."""
    part = await session.get(Part, sku)
    if part is None:
        return None
    key = tickets.supply_key(depot, sku)
    if await session.scalar(select(Ticket.id).where(Ticket.open_key == key)) is not None:
        return None
    stock = await stock_of(session, depot, sku)
    installed = (await installed_base(session, depot, sku)).get((depot, sku), 0)
    d = await demand(session, depot, sku, part, installed, since=await first_activity(session))
    qty = order_quantity(part, d, stock)
    if qty == 0:
        return None
    rop, target = reorder_point(part, d), target_level(part, d)
    urgent_within = d.forecast_per_day * part.lead_time_days
    priority = "P1" if stock.available <= 0 else "P2" if stock.available < math.ceil(urgent_within) else "P3"
    now = clock.now()
    ticket = await tickets.create(
        session,
        Ticket(
            kind="supply",
            status="open",
            priority=priority,
            open_key=key,
            depot=depot,
            region=await session.scalar(select(Depot.region_id).where(Depot.id == depot)),
            sku=sku,
            qty=qty,
            occurrences=1,
            parts=[],
            description=f"Order {qty} × {sku} ({part.name}) for depot {depot}",
            diagnosis=(
                f"available {stock.available} + on order {stock.on_order} < reorder point {rop} "
                f"(demand {d.forecast_per_day:.3f}/day over a {part.lead_time_days:.0f}-day lead time, "
                f"z = {part.service_level_z}); order up to {target}"
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


async def receive(
    session: AsyncSession, depot: str, sku: str, qty: int, actor: str, note: str | None = None
) -> Ticket | None:
    """Books goods in; the depot's open supply ticket for the SKU is closed (returned, if there was one)."""
    ticket = await session.scalar(select(Ticket).where(Ticket.open_key == tickets.supply_key(depot, sku)))
    await move(
        session, depot, sku, "receipt", qty, ticket_id=ticket.id if ticket else None, actor=actor, note=note
    )
    if ticket is not None:
        while ticket.status != "closed":
            to = "closed" if "closed" in tickets.TRANSITIONS[ticket.status] else "resolved"
            await tickets.step(session, ticket, to, actor, note or f"received {qty}")
    await review(session, depot, sku, actor)  # still short (e.g. a partial delivery): order the rest
    return ticket
