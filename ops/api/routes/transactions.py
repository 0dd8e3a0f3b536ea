"""Charging sessions as the chargers reported them, newest first; one with its signed meter readings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from chargeops.db.models import StoredEvent, Transaction
from chargeops.events import EventKind
from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import (
    MAX_DB_INT,
    MAX_PAGE,
    Items,
    SignedReadingOut,
    TransactionDetailOut,
    TransactionOut,
)
from ops.api.scope import Scoped

router = APIRouter(prefix="/api/transactions", tags=["transactions"], responses=documented(401, 403, 422))


@router.get("", dependencies=[Viewer])
async def list_transactions(
    db: Db,
    scope: Scoped,
    charger_id: str | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Items[TransactionOut]:
    query = select(Transaction).where(scope.chargers(Transaction.charger_id))
    if charger_id is not None:
        query = query.where(Transaction.charger_id == charger_id)
    if active is not None:
        query = query.where(Transaction.active == active)
    query = query.order_by(Transaction.started_at.desc().nulls_last(), Transaction.id.desc())
    rows = (await db.scalars(query.limit(limit).offset(offset))).all()
    return Items(items=[TransactionOut.model_validate(r, from_attributes=True) for r in rows])


@router.get("/{charger_id}/{transaction_id}", dependencies=[Viewer], responses=documented(404))
async def get_transaction(
    db: Db, scope: Scoped, charger_id: str, transaction_id: str
) -> TransactionDetailOut:
    """One session with the signed meter readings the charger sent for it (2.x `signedMeterValue`, 1.6
    `SignedData`), oldest first: the evidence a billing dispute needs."""
    row = await scope.one(
        db,
        Transaction,
        Transaction.charger_id == charger_id,
        Transaction.transaction_id == transaction_id,
        scope.chargers(Transaction.charger_id),
        what=f"transaction {transaction_id} of charger {charger_id}",
    )
    events = await db.scalars(
        select(StoredEvent.data)
        .where(
            StoredEvent.charger_id == charger_id,
            StoredEvent.kind == EventKind.SIGNED_METER_VALUES.value,
        )
        .order_by(StoredEvent.received_at)
    )
    readings = [
        SignedReadingOut.model_validate(r)
        for data in events.all()
        if data.get("transaction_id") == transaction_id
        for r in data.get("readings", ())
    ]
    base = TransactionOut.model_validate(row, from_attributes=True)
    return TransactionDetailOut(**base.model_dump(), signed_meter_values=readings)
