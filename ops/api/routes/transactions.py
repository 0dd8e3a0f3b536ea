"""Charging sessions as the chargers reported them, newest first, each with the meter readings left out of
its billed energy, the TransactionEvents not received and its cost; one with its signed meter readings; an
ISO 15118 session's charging needs and schedules."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import ColumnElement, Select, and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.models import EvChargingSchedule, MeterFlag, StoredEvent, Transaction, billed_energy_wh
from chargeops.db.tariff_models import session_cost
from chargeops.events import EventKind
from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import (
    MAX_DB_INT,
    MAX_PAGE,
    ChargingScheduleOut,
    ChargingSchedulesOut,
    MeterFlagOut,
    Page,
    SignedReadingOut,
    TransactionDetailOut,
    TransactionOut,
    json_response,
)
from ops.api.scope import Scoped

router = APIRouter(prefix="/api/transactions", tags=["transactions"], responses=documented(401, 403, 422))


_FLAG_FIELDS = tuple(MeterFlagOut.model_fields)
_TX_COLUMNS = (
    Transaction.charger_id,
    Transaction.transaction_id,
    Transaction.evse_id,
    Transaction.connector_id,
    Transaction.id_token,
    Transaction.started_at,
    Transaction.stopped_at,
    Transaction.meter_start_wh,
    Transaction.meter_stop_wh,
    Transaction.meter_last_wh,
    Transaction.meter_good_wh,
    Transaction.stop_reason,
    Transaction.active,
    Transaction.missing_seq_nos,
    Transaction.missing_seq_nos_queued,
    Transaction.tariff,
    Transaction.charging_s,
    Transaction.charging_since,
    Transaction.total_cost,
)
_COST_LINES = ("energy", "charging_time", "idle_time", "session_fee", "adjustment", "net", "tax", "total")


def _cost(row: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """`CostOut` of a session (`chargeops.db.tariff_models.session_cost`), or None: no tariff prices it."""
    priced = session_cost(row, now)
    if priced is None:
        return None
    tariff, cost = priced
    lines = {line: str(getattr(cost, line)) for line in _COST_LINES}
    return {
        "tariff_id": tariff.id,
        "tariff_name": tariff.name,
        "currency": cost.currency,
        "final": not row["active"],
        **lines,
    }


def _doc(row: Mapping[str, Any], flags: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """A session as `TransactionOut` describes it, from the values of `_TX_COLUMNS`."""
    start, stop = row["meter_start_wh"], row["meter_stop_wh"]
    return {
        "charger_id": row["charger_id"],
        "transaction_id": row["transaction_id"],
        "evse_id": row["evse_id"],
        "connector_id": row["connector_id"],
        "id_token": row["id_token"],
        "started_at": row["started_at"],
        "stopped_at": row["stopped_at"],
        "meter_start_wh": start,
        "meter_stop_wh": stop,
        "energy_wh": billed_energy_wh(start, stop, row["meter_last_wh"], row["meter_good_wh"]),
        "stop_reason": row["stop_reason"],
        "active": row["active"],
        "meter_flags": flags,
        "missing_seq_nos": [{"first": first, "last": last} for first, last in row["missing_seq_nos"] or ()],
        "missing_seq_nos_queued": row["missing_seq_nos_queued"],
        "cost": _cost(row, now),
    }


async def _sessions(db: AsyncSession, page: Select[Any]) -> list[dict[str, Any]]:
    """The sessions `page` selects (by its own order) with their implausible readings, oldest first: two
    queries for the page, rows rather than ORM objects (a 1,000-session page is a heavy read)."""
    return [doc for _, doc in await _rows_and_sessions(db, page)]


async def _rows_and_sessions(
    db: AsyncSession, page: Select[Any]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rows = [
        r._asdict() for r in (await db.execute(page.with_only_columns(*_TX_COLUMNS, Transaction.id))).all()
    ]
    keys = page.with_only_columns(Transaction.charger_id, Transaction.transaction_id)
    found = await db.execute(
        select(MeterFlag.charger_id, MeterFlag.transaction_id, *(getattr(MeterFlag, f) for f in _FLAG_FIELDS))
        .where(tuple_(MeterFlag.charger_id, MeterFlag.transaction_id).in_(keys))
        .order_by(MeterFlag.sampled_at, MeterFlag.id)
    )
    flags: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in found.all():
        flags.setdefault((f.charger_id, f.transaction_id), []).append(
            {k: getattr(f, k) for k in _FLAG_FIELDS}
        )
    now = clock.now()
    return [(r, _doc(r, flags.get((r["charger_id"], r["transaction_id"]), []), now)) for r in rows]


def _cursor(row: Mapping[str, Any]) -> str:
    """Where the next page starts: after this row in (started_at desc, nulls last; id desc) order."""
    started = row["started_at"]
    text = f"{started.isoformat() if started is not None else ''}|{row['id']}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _after(cursor: str) -> ColumnElement[bool]:
    """Rows after the cursor's row in the list's order; a cursor that is not one of ours is a 422."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started_text, id_text = text.split("|")
        row_id = int(id_text)
        started = datetime.fromisoformat(started_text) if started_text else None
    except (ValueError, UnicodeDecodeError):
        raise RequestValidationError(
            [{"loc": ("query", "cursor"), "msg": "not a cursor this list gave out", "type": "value_error"}]
        ) from None
    if started is None:  # within the rows without a start time, which come last
        return and_(Transaction.started_at.is_(None), Transaction.id < row_id)
    return or_(
        Transaction.started_at < started,
        and_(Transaction.started_at == started, Transaction.id < row_id),
        Transaction.started_at.is_(None),
    )


@router.get("", dependencies=[Viewer], response_model=Page[TransactionOut])
async def list_transactions(
    db: Db,
    scope: Scoped,
    charger_id: str | None = None,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=96, description="`next` of the previous page")] = None,
    offset: Annotated[
        int,
        Query(ge=0, le=MAX_DB_INT, description="deprecated: use `cursor` (an offset rescans what it skips)"),
    ] = 0,
) -> Response:
    """Sessions with `energy_wh` billed from plausible readings, the implausible ones (`meter_flags`) and
    the TransactionEvents not received (`missing_seq_nos`), newest first, a page at a time: pass the answer's
    `next` as `cursor` until it is null (stable while sessions are added, unlike `offset`)."""
    query = select(Transaction).where(scope.chargers(Transaction.charger_id))
    if charger_id is not None:
        query = query.where(Transaction.charger_id == charger_id)
    if active is not None:
        query = query.where(Transaction.active == active)
    if cursor is not None:
        query = query.where(_after(cursor))
    query = query.order_by(Transaction.started_at.desc().nulls_last(), Transaction.id.desc())
    found = await _rows_and_sessions(db, query.limit(limit + 1).offset(offset))
    more = len(found) > limit
    found = found[:limit]
    items = [doc for _, doc in found]
    return json_response({"items": items, "next": _cursor(found[-1][0]) if more else None})


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
    [base] = await _sessions(db, select(Transaction).where(Transaction.id == row.id))
    return TransactionDetailOut(**base, signed_meter_values=readings)


@router.get(
    "/{charger_id}/{transaction_id}/charging-schedules", dependencies=[Viewer], responses=documented(404)
)
async def get_charging_schedules(
    db: Db, scope: Scoped, charger_id: str, transaction_id: str
) -> ChargingSchedulesOut:
    """An ISO 15118 session's smart charging (OCPP 2.x K15–K17): the EV's latest charging needs, the
    schedules ops offered it (the TxProfiles sent, with the charger's answer) and those the EV chose."""
    await scope.one(
        db,
        Transaction,
        Transaction.charger_id == charger_id,
        Transaction.transaction_id == transaction_id,
        scope.chargers(Transaction.charger_id),
        what=f"transaction {transaction_id} of charger {charger_id}",
    )
    rows = await db.scalars(
        select(EvChargingSchedule)
        .where(
            EvChargingSchedule.charger_id == charger_id, EvChargingSchedule.transaction_id == transaction_id
        )
        .order_by(EvChargingSchedule.created_at, EvChargingSchedule.id)
    )
    needs = await db.scalars(
        select(StoredEvent.data)
        .where(StoredEvent.charger_id == charger_id, StoredEvent.kind == EventKind.EV_CHARGING_NEEDS.value)
        .order_by(StoredEvent.received_at.desc())
    )
    latest = next((n for n in needs if n.get("transaction_id") == transaction_id), None)
    items = [ChargingScheduleOut.model_validate(r, from_attributes=True) for r in rows.all()]
    return ChargingSchedulesOut(needs=latest, items=items)
