"""Gaps in a 2.x transaction's TransactionEvent `seqNo`s (OCPP 2.0.1 block E): messages the station has not
delivered (still queued offline, or dropped from a full queue). A jump past the highest stored number opens
a gap; a late event with a missing number (an offline queue being replayed) closes that number again. The
first event stored of a transaction has nothing to be compared with (one first heard at seqNo 5 is not
flagged for 0-4: its Started may simply predate the table of stored numbers).

Here: the arithmetic (`step`), its application to the transaction row (`track`, by `GatewayStore`), and the
reaction of a session (`react`: count, log, one GetTransactionStatus per gap opening). Gaps are inclusive
ranges `(first, last)`, not lists of numbers: a station jumping from 0 to 2,000,000,000 costs one pair.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Table, Update, bindparam, func, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.models import Transaction, TransactionSeqNo
from telemetry.metrics import TRANSACTION_SEQ_GAPS

if TYPE_CHECKING:
    from ocpp_gateway.session import ChargerSession

Gap = tuple[int, int]  # first and last missing seqNo, inclusive
MAX_GAPS = 100  # ranges kept per transaction; a station skipping on every event is not tracked further

_TX: Table = Transaction.__table__  # type: ignore[assignment]
_SEQ: Table = TransactionSeqNo.__table__  # type: ignore[assignment]
_STORED_HIGHEST = (
    select(func.max(_SEQ.c.seq_no))
    .where(_SEQ.c.charger_id == _TX.c.charger_id, _SEQ.c.transaction_id == _TX.c.transaction_id)
    .scalar_subquery()
)
_TRACK = (
    select(
        _TX.c.id,
        _TX.c.charger_id,
        _TX.c.transaction_id,
        _TX.c.missing_seq_nos,
        _STORED_HIGHEST.label("highest"),
    )
    .order_by(_TX.c.id)
    .with_for_update(of=_TX)
)
_GAPS = bindparam("gaps", type_=_TX.c.missing_seq_nos.type)
_SET_GAPS = update(_TX).where(_TX.c.id == bindparam("row_id")).values(missing_seq_nos=_GAPS)
_SET_GAPS_UNASKED = _SET_GAPS.values(missing_seq_nos_queued=None)
_asking: set[asyncio.Task[None]] = set()  # GetTransactionStatus calls in flight (kept from the GC)


@dataclass(frozen=True, slots=True)
class GapStep:
    """What one stored TransactionEvent did to its transaction's gaps."""

    gaps: tuple[Gap, ...]  # the transaction's gaps after it
    jumped: Gap | None = None  # the numbers it skipped, if it jumped past the highest stored one
    was_open: bool = False  # the transaction had gaps before it

    @property
    def ask(self) -> bool:
        """A gap opened where there was none: worth one GetTransactionStatus (not one per later event)."""
        return self.jumped is not None and not self.was_open


def step(gaps: Sequence[Gap], highest: int | None, seq_no: int) -> GapStep:
    """The gaps after storing `seq_no`, given those before and the highest number stored before it (None:
    the first event of the transaction stored, which has nothing to be compared with)."""
    before = tuple(gaps)
    if highest is not None and seq_no > highest + 1:
        jumped = (highest + 1, seq_no - 1)
        after = (*before, jumped) if len(before) < MAX_GAPS else before
        return GapStep(after, jumped, bool(before))
    after = tuple(
        part
        for first, last in before
        for part in (
            ((first, seq_no - 1), (seq_no + 1, last)) if first <= seq_no <= last else ((first, last),)
        )
        if part[0] <= part[1]
    )
    return GapStep(after, None, bool(before))


async def track(session: AsyncSession, notes: Sequence[tuple[str, str, int]]) -> list[GapStep]:
    """Apply `step` for each (charger, transaction, seqNo) in order, before they are noted as stored:
    the rows are locked and read with the highest numbers stored in one statement (in id order, so
    concurrent batches never deadlock), and the gaps that changed written in one more."""
    keys = sorted({(cid, tid) for cid, tid, _ in notes})
    rows = await session.execute(_TRACK.where(tuple_(_TX.c.charger_id, _TX.c.transaction_id).in_(keys)))
    state = {(r.charger_id, r.transaction_id): _Row(r.id, _gaps(r.missing_seq_nos), r.highest) for r in rows}
    changes: list[GapStep] = []
    for cid, tid, seq_no in notes:
        row = state.get((cid, tid))
        if row is None:
            changes.append(GapStep(()))
            continue
        change = step(row.gaps, row.highest, seq_no)
        if change.gaps != row.gaps:
            row.gaps, row.changed = change.gaps, True
            # a new question to the station, or nothing left to ask about
            row.unasked = row.unasked or change.ask or not change.gaps
        row.highest = seq_no if row.highest is None else max(row.highest, seq_no)
        changes.append(change)
    for unasked in (False, True):
        params = [
            {"row_id": r.id, "gaps": [list(gap) for gap in r.gaps] or None}
            for r in state.values()
            if r.changed and r.unasked == unasked
        ]
        if params:
            await session.execute(_SET_GAPS_UNASKED if unasked else _SET_GAPS, params)
    return changes


@dataclass(slots=True)
class _Row:
    """A locked transaction row as `track` moves it through a batch."""

    id: int
    gaps: tuple[Gap, ...]
    highest: int | None
    changed: bool = False
    unasked: bool = False  # its station's answer to the last GetTransactionStatus no longer applies


def _gaps(stored: Sequence[Sequence[int]] | None) -> tuple[Gap, ...]:
    return tuple((first, last) for first, last in stored or ())


def queue_update(charger_id: str, transaction_id: str, queued: bool) -> Update:
    """Keep the station's `messagesInQueue` on the transaction while it has gaps (closed since: no news)."""
    return (
        update(Transaction)
        .where(
            Transaction.charger_id == charger_id,
            Transaction.transaction_id == transaction_id,
            Transaction.missing_seq_nos.is_not(None),
        )
        .values(missing_seq_nos_queued=queued)
    )


def react(session: ChargerSession, transaction_id: str, seq_no: int, change: GapStep) -> None:
    """Count and log what a stored event did to the gaps, and ask the station about a gap just opened. The
    call goes out from a task of its own: its answer comes through the connection this handler is serving.
    Called last in the handler, so the task first runs once the TransactionEvent's answer is written (nothing
    between them waits): a station expecting its answer first gets it first."""
    if change.jumped is not None:
        TRANSACTION_SEQ_GAPS.inc()
        session.log.warning(
            "transaction %s: seqNo %d skips %d-%d (%d missing)",
            transaction_id, seq_no, *change.jumped, change.jumped[1] - change.jumped[0] + 1,
        )  # fmt: skip
    elif change.was_open and not change.gaps:
        session.log.info("transaction %s: seqNo %d closes its last gap", transaction_id, seq_no)
    if change.ask:
        task = asyncio.create_task(_ask(session, transaction_id))
        _asking.add(task)
        task.add_done_callback(_asking.discard)


async def _ask(session: ChargerSession, transaction_id: str) -> None:
    """GetTransactionStatus{transactionId}: does the station still hold messages of it? Its answer is kept
    on the transaction (true: the missing ones may still come; false: they will not)."""
    try:
        timeout = session.ctx.settings.call_timeout
        reply = await session.execute("GetTransactionStatus", {"transactionId": transaction_id}, timeout)
        if reply.outcome != "result":
            session.log.warning(
                "GetTransactionStatus for %s: %s %s", transaction_id, reply.outcome, reply.description or ""
            )
            return
        queued = bool(reply.payload.get("messagesInQueue"))
        await session.ctx.store.note_transaction_queue(session.id, transaction_id, queued)
        session.log.log(
            logging.INFO if queued else logging.WARNING,
            "transaction %s has seqNo gaps; the station %s",
            transaction_id,
            "still holds queued messages" if queued else "holds no queued messages: they are lost",
        )
    except (SQLAlchemyError, OSError, ConnectionError) as exc:
        session.log.error("GetTransactionStatus for %s not recorded: %s", transaction_id, exc)
    except Exception:
        session.log.exception("GetTransactionStatus for %s failed", transaction_id)
