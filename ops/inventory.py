"""Stock per depot and SKU, changed only through `move`, which writes the movement it makes."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.ops_models import Stock, StockMovement

# What each movement kind does to (on_hand, reserved, on_order), per unit.
EFFECTS: dict[str, tuple[int, int, int]] = {
    "receipt": (1, 0, -1),  # goods received against an order; on_order never goes below zero
    "receipt_extra": (1, 0, 0),  # goods received beyond what any open order still owed
    "reserve": (0, 1, 0),  # a ticket needs the part
    "release": (0, -1, 0),  # the ticket no longer needs it
    "consume": (-1, -1, 0),  # fitted by the crew when the ticket was resolved
    "order": (0, 0, 1),  # a supply ticket asked for it
    "cancel": (0, 0, -1),  # a supply ticket was closed without delivery
    "adjust": (1, 0, 0),  # stock count correction (qty may be negative)
}


async def stock_of(session: AsyncSession, depot: str, sku: str) -> Stock:
    """The row, locked for this transaction on Postgres (created at zero if the depot never held the SKU)."""
    row = await session.scalar(
        select(Stock).where(Stock.depot_id == depot, Stock.sku == sku).with_for_update()
    )
    if row is None:
        row = Stock(depot_id=depot, sku=sku, on_hand=0, reserved=0, on_order=0)
        session.add(row)
    return row


async def move(
    session: AsyncSession,
    depot: str,
    sku: str,
    kind: str,
    qty: int,
    *,
    ticket_id: int | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> Stock:
    on_hand, reserved, on_order = EFFECTS[kind]
    row = await stock_of(session, depot, sku)
    row.on_hand += on_hand * qty
    row.reserved = max(0, row.reserved + reserved * qty)
    row.on_order = max(0, row.on_order + on_order * qty)
    session.add(
        StockMovement(
            depot_id=depot, sku=sku, kind=kind, qty=qty, ticket_id=ticket_id, actor=actor, note=note
        )
    )
    return row
