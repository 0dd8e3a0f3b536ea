"""Charging sessions as the chargers reported them, newest first, each with the meter readings left out of
its billed energy; one with its signed meter readings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.models import MeterFlag, StoredEvent, Transaction
from chargeops.events import EventKind
from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import (
    MAX_DB_INT,
    MAX_PAGE,
    Items,
    MeterFlagOut,
    SignedReadingOut,
    TransactionDetailOut,
    TransactionOut,
)
from ops.api.scope import Scoped

router = APIRouter(prefix="/api/transactions", tags=["transactions"], responses=documented(401, 403, 422))


async def _with_flags(db: AsyncSession, rows: Sequence[Transaction]) -> list[TransactionOut]:
    """The sessions with their implausible readings, oldest first (one query for the page)."""
    flags: dict[tuple[str, str], list[MeterFlagOut]] = {}
    if rows:
        keys = [(r.charger_id, r.transaction_id) for r in rows]
        found = await db.scalars(
            select(MeterFlag)
            .where(tuple_(MeterFlag.charger_id, MeterFlag.transaction_id).in_(keys))
            .order_by(MeterFlag.sampled_at, MeterFlag.id)
        )
        for f in found.all():
            out = MeterFlagOut.model_validate(f, from_attributes=True)
            flags.setdefault((f.charger_id, f.transaction_id), []).append(out)
    return [
        TransactionOut.model_validate(r, from_attributes=True).model_copy(
            update={"meter_flags": flags.get((r.charger_id, r.transaction_id), [])}
        )
        for r in rows
    ]


@router.get("", dependencies=[Viewer])
async def list_transactions(
    db: Db,
    scope: Scoped,
    charger_id: str | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
) -> Items[TransactionOut]:
    """Sessions with `energy_wh` billed from plausible readings and the implausible ones (`meter_flags`)."""
    query = select(Transaction).where(scope.chargers(Transaction.charger_id))
    if charger_id is not None:
        query = query.where(Transaction.charger_id == charger_id)
    if active is not None:
        query = query.where(Transaction.active == active)
    query = query.order_by(Transaction.started_at.desc().nulls_last(), Transaction.id.desc())
    rows = (await db.scalars(query.limit(limit).offset(offset))).all()
    return Items(items=await _with_flags(db, rows))


@router.get("/{charger_id}/{transaction_id}", dependencies=[Viewer], responses=documented(404))
async def get_transaction(
    db: Db, scope: Scoped, charger_id: str, transaction_id: str
) -> TransactionDetailOut:
    """One session with the signed meter readings the charger sent for it (2.x `signedMeterValue`, 1.6
    `SignedData`), oldest first, and its implausible readings: the evidence a billing dispute needs."""
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
    [base] = await _with_flags(db, [row])
    return TransactionDetailOut(**base.model_dump(), signed_meter_values=readings)
