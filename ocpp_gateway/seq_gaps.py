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
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, Update, bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.models import Transaction, TransactionSeqNo
from telemetry.metrics import TRANSACTION_SEQ_GAPS

if TYPE_CHECKING:
    from ocpp_gateway.session import ChargerSession

Gap = tuple[int, int]  # first and last missing seqNo, inclusive
MAX_GAPS = 100  # ranges kept per transaction; a station skipping on every event is not tracked further

_HIGHEST = select(func.max(TransactionSeqNo.seq_no)).where(
    TransactionSeqNo.charger_id == bindparam("cid"), TransactionSeqNo.transaction_id == bindparam("tid")
)
_TX: Table = Transaction.__table__  # type: ignore[assignment]
_TRACK = (
    select(_TX.c.id, _TX.c.missing_seq_nos, _HIGHEST.scalar_subquery().label("highest"))
    .where(_TX.c.charger_id == bindparam("cid"), _TX.c.transaction_id == bindparam("tid"))
    .with_for_update(of=_TX)
)
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


async def track(session: AsyncSession, charger_id: str, transaction_id: str, seq_no: int) -> GapStep:
    """Apply `step` to the transaction's row (locked), before `seq_no` itself is noted as stored: one
    statement reads the gaps and the highest number stored; a second writes them only if they changed."""
    key = {"cid": charger_id, "tid": transaction_id}
    row = (await session.execute(_TRACK, key)).one_or_none()
    if row is None:
        return GapStep(())
    before = tuple((first, last) for first, last in row.missing_seq_nos or ())
    change = step(before, row.highest, seq_no)
    if change.gaps != before:
        values: dict[str, Any] = {"missing_seq_nos": [list(gap) for gap in change.gaps] or None}
        if change.ask or not change.gaps:  # a new question to the station, or nothing left to ask about
            values["missing_seq_nos_queued"] = None
        await session.execute(update(_TX).where(_TX.c.id == row.id).values(values))
    return change


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
