"""Spare parts (SPEC §5): catalogue, stock per depot, goods received, movements, supply-risk warnings.

The catalogue belongs to no region: every token reads it, only an unscoped one changes it. Stock and its
movements are a depot's, so a region-scoped token sees and books only its region's depots'."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from chargeops.db.engine import stored_iso
from chargeops.db.ops_models import Part, Stock, StockMovement, Ticket
from ops import supply
from ops.api.auth import Operator, OperatorUser, Viewer
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import MAX_PAGE, Items, Receipt, ReceiptOut, StockOut
from ops.api.scope import Scoped
from ops.registry import PartDoc

router = APIRouter(tags=["spare parts"], responses=documented(401, 403, 422))


def _stock(row: Stock) -> StockOut:
    return StockOut(
        depot=row.depot_id,
        sku=row.sku,
        on_hand=row.on_hand,
        reserved=row.reserved,
        available=row.available,
        on_order=row.on_order,
    )


@router.get("/api/parts", dependencies=[Viewer])
async def list_parts(db: Db) -> Items[PartDoc]:
    rows = (await db.scalars(select(Part).order_by(Part.sku))).all()
    return Items(items=[PartDoc.model_validate(p, from_attributes=True) for p in rows])


@router.put("/api/parts/{sku}", dependencies=[Operator])
async def put_part(sku: str, body: PartDoc, db: Db, scope: Scoped) -> PartDoc:
    """Create or replace a catalogue entry (lead time, failure rate, suppliers drive the planning)."""
    scope.fleet_wide("the parts catalogue")
    if body.sku != sku:
        raise ApiError(422, "sku_mismatch", f"body sku {body.sku} differs from the path {sku}")
    await db.merge(Part(**body.model_dump()))
    await db.commit()
    return body


@router.get("/api/stock", dependencies=[Viewer])
async def list_stock(
    db: Db, scope: Scoped, depot: str | None = None, sku: str | None = None
) -> Items[StockOut]:
    stmt = select(Stock).where(scope.depots(Stock.depot_id)).order_by(Stock.depot_id, Stock.sku)
    if depot is not None:
        stmt = stmt.where(Stock.depot_id == depot)
    if sku is not None:
        stmt = stmt.where(Stock.sku == sku)
    return Items(items=[_stock(r) for r in (await db.scalars(stmt)).all()])


@router.post("/api/stock/receipts", status_code=201, responses=documented(404))
async def receive(body: Receipt, db: Db, caller: OperatorUser, scope: Scoped) -> ReceiptOut:
    """Goods received at a depot, against a named purchase order or the oldest open ones: on hand and on
    order updated, completed orders closed (a partial delivery leaves the rest on order). 404 unknown
    order or SKU (or a depot or order outside the token's region), 409 order already closed, 422 an order
    of another depot or SKU."""
    if await db.get(Part, body.sku) is None:
        raise ApiError(404, "not_found", f"no part {body.sku} in the catalogue")
    await scope.depot(db, body.depot)
    if body.order is not None:
        where = (Ticket.id == body.order, scope.regions(Ticket.region))
        await scope.one(db, Ticket, *where, what=f"purchase order {body.order}")
    try:
        closed = await supply.receive(db, body.depot, body.sku, body.qty, caller.name, body.note, body.order)
    except supply.ReceiptRefused as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    await db.flush()
    row = await db.get(Stock, (body.depot, body.sku))
    assert row is not None
    ids = [t.id for t in closed]
    out = ReceiptOut(stock=_stock(row), closed_ticket=ids[0] if ids else None, closed_orders=ids)
    await db.commit()
    return out


@router.get("/api/stock/movements", dependencies=[Viewer])
async def movements(
    db: Db,
    scope: Scoped,
    depot: str | None = None,
    sku: str | None = None,
    limit: int = Query(200, ge=1, le=MAX_PAGE),
) -> Items[dict[str, Any]]:
    stmt = select(StockMovement).where(scope.depots(StockMovement.depot_id))
    stmt = stmt.order_by(StockMovement.id.desc()).limit(limit)
    if depot is not None:
        stmt = stmt.where(StockMovement.depot_id == depot)
    if sku is not None:
        stmt = stmt.where(StockMovement.sku == sku)
    rows = (await db.scalars(stmt)).all()
    return Items(
        items=[
            {
                "id": m.id,
                "at": stored_iso(m.at),
                "depot": m.depot_id,
                "sku": m.sku,
                "kind": m.kind,
                "qty": m.qty,
                "ticket_id": m.ticket_id,
                "actor": m.actor,
                "note": m.note,
            }
            for m in rows
        ]
    )
