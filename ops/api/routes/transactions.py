"""Charging sessions as the chargers reported them, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from chargeops.db.models import Transaction
from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import Items, TransactionOut

router = APIRouter(prefix="/api/transactions", tags=["transactions"], responses=documented(401, 403, 422))


@router.get("", dependencies=[Viewer])
async def list_transactions(
    db: Db,
    charger_id: str | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Items[TransactionOut]:
    query = select(Transaction)
    if charger_id is not None:
        query = query.where(Transaction.charger_id == charger_id)
    if active is not None:
        query = query.where(Transaction.active == active)
    query = query.order_by(Transaction.started_at.desc().nulls_last(), Transaction.id.desc())
    rows = (await db.scalars(query.limit(limit).offset(offset))).all()
    return Items(items=[TransactionOut.model_validate(r, from_attributes=True) for r in rows])
