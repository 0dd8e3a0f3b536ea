"""Spare parts (SPEC §5): catalogue, stock per depot, goods received, movements, supply-risk warnings."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from chargeops import clock
from chargeops.db.engine import stored_iso
from chargeops.db.ops_models import Part, Stock, StockMovement
from ops import supply
from ops.api.auth import Operator, OperatorUser, Viewer
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import Items, Receipt, ReceiptOut, RiskOut, StockOut
from ops.planning import assess_all
from ops.registry import PartDoc, installed_base
from ops.report import supply_report

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
async def put_part(sku: str, body: PartDoc, db: Db) -> PartDoc:
    """Create or replace a catalogue entry (lead time, failure rate, suppliers drive the planning)."""
    if body.sku != sku:
        raise ApiError(422, "sku_mismatch", f"body sku {body.sku} differs from the path {sku}")
    await db.merge(Part(**body.model_dump()))
    await db.commit()
    return body


@router.get("/api/stock", dependencies=[Viewer])
async def list_stock(db: Db, depot: str | None = None, sku: str | None = None) -> Items[StockOut]:
    stmt = select(Stock).order_by(Stock.depot_id, Stock.sku)
    if depot is not None:
        stmt = stmt.where(Stock.depot_id == depot)
    if sku is not None:
        stmt = stmt.where(Stock.sku == sku)
    return Items(items=[_stock(r) for r in (await db.scalars(stmt)).all()])


@router.post("/api/stock/receipts", status_code=201, responses=documented(404))
async def receive(body: Receipt, db: Db, caller: OperatorUser) -> ReceiptOut:
    """Goods received at a depot: on hand and on order updated, the open supply ticket closed."""
    if await db.get(Part, body.sku) is None:
        raise ApiError(404, "not_found", f"no part {body.sku} in the catalogue")
    ticket = await supply.receive(db, body.depot, body.sku, body.qty, caller.name, body.note)
    await db.flush()
    row = await db.get(Stock, (body.depot, body.sku))
    assert row is not None
    out = ReceiptOut(stock=_stock(row), closed_ticket=ticket.id if ticket else None)
    await db.commit()
    return out


@router.get("/api/stock/movements", dependencies=[Viewer])
async def movements(
    db: Db, depot: str | None = None, sku: str | None = None, limit: int = Query(200, ge=1, le=5000)
) -> Items[dict[str, Any]]:
    stmt = select(StockMovement).order_by(StockMovement.id.desc()).limit(limit)
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


@router.get("/api/supply-risk", dependencies=[Viewer])
async def supply_risk(
    db: Db,
    depot: str | None = None,
    level: Literal["ok", "watch", "warning", "critical"] | None = None,
    include_ok: bool = Query(False, description="also list depot/SKU pairs without any warning"),
) -> Items[RiskOut]:
    """Early warnings per depot and SKU, most urgent first, each with the figures that triggered it."""
    risks = await assess_all(db, await installed_base(db))
    picked = [
        r
        for r in risks
        if (depot is None or r.depot == depot)
        and (level is None or r.level == level)
        and (include_ok or level == "ok" or r.level != "ok")
    ]
    return Items(items=[RiskOut(**r.as_dict()) for r in picked])


@router.get("/api/supply-risk/report", dependencies=[Viewer], response_class=PlainTextResponse)
async def supply_risk_report(db: Db, depot: str | None = None) -> str:
    """The same warnings as a plain-text (Markdown) report for a supply manager."""
    risks = await assess_all(db, await installed_base(db))
    return supply_report([r for r in risks if depot is None or r.depot == depot], clock.now())
