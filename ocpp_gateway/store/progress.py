"""The hot path of a 2.x session in the store: what every TransactionEvent of a transaction already held
asks before its events are stored (`GatewayStore.advance_transaction`). The events of the moment, of any
chargers, go through one database transaction together (`advance`): one statement locks and reads their
rows, one finds the copies, one writes what moved, one records implausible readings. At ~80 events a
second, four commits each (copy check, progress, meter, seqNo note) queued on Postgres's WAL flush
(README "### Soak").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.engine import insert_for, stored_utc
from chargeops.db.models import MeterFlag, Transaction, TransactionSeqNo
from ocpp_gateway.plausibility import Flag, MeterLimits, Reading, judge
from ocpp_gateway.store.interface import TxProgress

# A flagged reading is recorded once: the columns of `uq_meter_flags_reading`.
FLAG_KEY = ["charger_id", "transaction_id", "sampled_at", "value_wh", "reason"]

_TX: Table = Transaction.__table__  # type: ignore[assignment]
_SEQ: Table = TransactionSeqNo.__table__  # type: ignore[assignment]
_ROWS = (
    select(
        _TX.c.id,
        _TX.c.charger_id,
        _TX.c.transaction_id,
        _TX.c.started_at,
        _TX.c.last_seq_no,
        _TX.c.meter_last_wh,
        _TX.c.meter_good_wh,
        _TX.c.meter_good_at,
    )
    .order_by(_TX.c.id)  # lock order: concurrent batches (and ingest's) never deadlock on these rows
    .with_for_update(of=_TX)
)
_MOVE = (
    update(_TX)
    .where(_TX.c.id == bindparam("row_id"))
    .values(
        last_seq_no=bindparam("seq"),
        meter_last_wh=bindparam("last"),
        meter_good_wh=bindparam("good_wh"),
        meter_good_at=bindparam("good_at"),
    )
)


@dataclass(frozen=True, slots=True)
class Advance:
    """One event's question: its seqNo, latest register, and the readings to judge. Without a seqNo (1.6
    meter values, `GatewayStore.check_meter`) only the readings are judged, also of a transaction not held
    (by their times alone)."""

    charger_id: str
    transaction_id: str
    seq_no: int | None
    meter_wh: float | None
    readings: Sequence[Reading]
    limits: MeterLimits | None
    now: datetime
    evse_id: int | None


@dataclass(slots=True)
class _Row:
    """A locked transaction row as a batch moves it."""

    id: int
    started_at: datetime | None
    seq: int | None
    last: float | None
    good: Reading | None
    changed: bool = False
    flags: list[dict[str, Any]] = field(default_factory=list)


async def advance(session: AsyncSession, batch: Sequence[Advance]) -> list[TxProgress]:
    """Each event in order against its transaction's row (locked): a copy of a (transaction, seqNo) stored
    already, or an event of a transaction not held, changes nothing; else its progress moves forward only
    and its readings are judged against the last plausible one (`ocpp_gateway.plausibility`)."""
    keys = sorted({(a.charger_id, a.transaction_id) for a in batch})
    rows: dict[tuple[str, str], _Row] = {}
    for r in await session.execute(_ROWS.where(tuple_(_TX.c.charger_id, _TX.c.transaction_id).in_(keys))):
        good = None
        if r.meter_good_wh is not None and r.meter_good_at is not None:
            good = Reading(r.meter_good_wh, stored_utc(r.meter_good_at))
        started = stored_utc(r.started_at) if r.started_at else None
        rows[(r.charger_id, r.transaction_id)] = _Row(r.id, started, r.last_seq_no, r.meter_last_wh, good)
    numbers = sorted({(a.charger_id, a.transaction_id, a.seq_no) for a in batch if a.seq_no is not None})
    stored = _SEQ.c.charger_id, _SEQ.c.transaction_id, _SEQ.c.seq_no
    copies = set()
    if numbers:
        copies = set((await session.execute(select(*stored).where(tuple_(*stored).in_(numbers)))).all())
    results: list[TxProgress] = []
    flag_rows: list[dict[str, Any]] = []
    for a in batch:
        row = rows.get((a.charger_id, a.transaction_id))
        copy = (a.charger_id, a.transaction_id, a.seq_no) in copies
        if copy or (row is None and a.seq_no is not None):
            results.append(TxProgress(copy=copy, known=row is not None))
            continue
        if row is None:  # judged by the readings' times alone, nothing kept but the flags
            row = _Row(0, None, None, None, None)
        if a.seq_no is not None and (row.seq is None or row.seq < a.seq_no):
            row.seq, row.changed = a.seq_no, True
        if a.meter_wh is not None and (row.last is None or row.last < a.meter_wh):
            row.last, row.changed = a.meter_wh, True
        flags: list[Flag] = []
        if a.readings:
            assert a.limits is not None, "readings are judged against limits"
            new, flags = judge(row.good, a.readings, a.limits, a.now, row.started_at)
            if new is not None and new != row.good:
                row.good, row.changed = new, True
            flag_rows += flag_records(a.charger_id, a.transaction_id, a.evse_id, flags, a.now)
        results.append(TxProgress(known=row.id != 0, flags=tuple(flags)))
    moved = [
        {
            "row_id": r.id,
            "seq": r.seq,
            "last": r.last,
            "good_wh": r.good.wh if r.good else None,
            "good_at": r.good.at if r.good else None,
        }
        for r in rows.values()
        if r.changed
    ]
    if moved:
        await session.execute(_MOVE, moved)
    await record_flags(session, flag_rows)
    return results


def flag_records(
    charger_id: str, transaction_id: str, evse_id: int | None, flags: Sequence[Flag], now: datetime
) -> list[dict[str, Any]]:
    """`meter_flags` rows of a transaction's implausible readings."""
    return [
        {
            "charger_id": charger_id,
            "transaction_id": transaction_id,
            "evse_id": evse_id,
            "reason": f.reason,
            "value_wh": f.reading.wh,
            "sampled_at": f.reading.at,
            "previous_wh": f.previous.wh if f.previous else None,
            "previous_at": f.previous.at if f.previous else None,
            "detail": f.detail[:200],
            "flagged_at": now,
        }
        for f in flags
    ]


async def record_flags(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record implausible readings, once each (a retried message is judged the same)."""
    if rows:
        ins = insert_for(session.get_bind().dialect.name, MeterFlag)
        await session.execute(ins.on_conflict_do_nothing(index_elements=FLAG_KEY), rows)
