"""The database behind the gateway (`GatewayStore`, the `Store` interface): what it must know or decide
synchronously before it answers a charger: who a charger is, whether an id token is good, transaction
identity (1.6 ids are issued here), and how far a transaction's meter is plausible (the billing state,
judged in the charger's order).

High-volume reports (meter values, status) do not pass through here; they go out as events to ingest. Only
a transaction's energy register readings are judged here first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for, stored_utc
from chargeops.db.models import Charger, IdToken, Transaction, TransactionSeqNo
from chargeops.db.ops_models import ChargerModel
from chargeops.events import utcnow
from chargeops.id_tokens import effective_status
from ocpp_gateway import seq_gaps
from ocpp_gateway.coalesce import Coalescer
from ocpp_gateway.plausibility import Flag, MeterLimits, Reading
from ocpp_gateway.store import progress
from ocpp_gateway.store.charger_rows import ChargerRows
from ocpp_gateway.store.interface import TokenStatus, TxProgress, TxRecord
from ocpp_gateway.store.progress import Advance

_SEQ_NO_QUERY = select(TransactionSeqNo.seq_no).where(
    TransactionSeqNo.charger_id == bindparam("cid"),
    TransactionSeqNo.transaction_id == bindparam("tid"),
    TransactionSeqNo.seq_no == bindparam("seq"),
)


class GatewayStore(ChargerRows):
    """SQLAlchemy-backed; each method is one short transaction and is idempotent where OCPP allows retries.
    The charger's own row (handshake, boot, passwords): `ChargerRows`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        super().__init__(sessions)
        # The hot path's calls of the moment share a transaction; one charger's value a column cannot hold
        # fails its own call only.
        self._advances: Coalescer[Advance, TxProgress] = Coalescer(self._advance_many, alone=_input_error)
        self._seq_notes: Coalescer[tuple[str, str, int], seq_gaps.GapStep] = Coalescer(
            self._note_seq_nos, alone=_input_error
        )

    async def id_token(self, id_token: str, now: datetime) -> TokenStatus:
        """Accepted / Blocked / Expired / Invalid for this token as of `now`, with its expiry."""
        async with self._sessions() as session:
            row = await session.get(IdToken, id_token)
        if row is None:
            return TokenStatus("Invalid")
        expiry = stored_utc(row.expiry) if row.expiry else None
        status = effective_status(row.status, expiry, now)
        return TokenStatus(status, expiry, row.group_id if status == row.status else None)

    async def start_transaction(
        self,
        charger_id: str,
        *,
        transaction_id: str | None,
        evse_id: int | None,
        connector_id: int | None,
        id_token: str | None,
        started_at: datetime,
        meter_start_wh: float | None,
    ) -> TxRecord:
        """Record a transaction start, once. A 1.6 start (no `transaction_id`) gets the row's id as its id;
        a replay of the same start (same charger, connector, token, time, meter) returns the same row."""
        key = [charger_id, transaction_id, connector_id, id_token, started_at.isoformat(), meter_start_wh]
        start_key = hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()
        async with self._sessions() as session, session.begin():
            existing = (
                await session.execute(select(Transaction).where(Transaction.start_key == start_key))
            ).scalar_one_or_none()
            if existing is not None:
                return TxRecord.of(existing)
            if transaction_id is not None:
                row = (
                    await session.execute(
                        select(Transaction).where(
                            Transaction.charger_id == charger_id, Transaction.transaction_id == transaction_id
                        )
                    )
                ).scalar_one_or_none()
                if row is not None:  # known from an earlier Updated/Ended; fill in what the start adds
                    row.evse_id = evse_id if evse_id is not None else row.evse_id
                    row.connector_id = connector_id if connector_id is not None else row.connector_id
                    row.id_token = row.id_token or id_token
                    row.started_at = (
                        min(stored_utc(row.started_at), started_at) if row.started_at else started_at
                    )
                    row.meter_start_wh = meter_start_wh if meter_start_wh is not None else row.meter_start_wh
                    row.start_key = start_key
                    return TxRecord.of(row)
            row = Transaction(
                charger_id=charger_id,
                transaction_id=transaction_id or "",
                evse_id=evse_id,
                connector_id=connector_id,
                id_token=id_token,
                started_at=started_at,
                meter_start_wh=meter_start_wh,
                active=True,
                start_key=start_key,
            )
            session.add(row)
            await session.flush()
            if transaction_id is None:
                row.transaction_id = str(row.id)
            return TxRecord.of(row)

    async def attach_id_token(self, charger_id: str, transaction_id: str, id_token: str) -> None:
        """Keep `id_token` as the transaction's token if it has none (one statement; the first one wins)."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Transaction)
                .where(
                    Transaction.charger_id == charger_id,
                    Transaction.transaction_id == transaction_id,
                    Transaction.id_token.is_(None),
                )
                .values(id_token=id_token)
            )

    async def advance_transaction(
        self,
        charger_id: str,
        transaction_id: str,
        seq_no: int,
        *,
        meter_wh: float | None,
        readings: Sequence[Reading],
        limits: MeterLimits | None,
        now: datetime,
        evse_id: int | None = None,
    ) -> TxProgress:
        """The hot path of a 2.x session (every TransactionEvent), under its transaction's row lock: is this
        (transaction, seqNo) a copy of one stored, else move its progress (seqNo, latest register) forward
        and judge its register readings as `check_meter` does. The events of the moment share one
        transaction (`ocpp_gateway.store.progress`)."""
        item = Advance(charger_id, transaction_id, seq_no, meter_wh, readings, limits, now, evse_id)
        return await self._advances(item)

    async def _advance_many(self, batch: list[Advance]) -> list[TxProgress]:
        async with self._sessions() as session, session.begin():
            return await progress.advance(session, batch)

    async def end_transaction(
        self,
        charger_id: str,
        transaction_id: str,
        *,
        stopped_at: datetime,
        meter_stop_wh: float | None,
        reason: str | None,
        id_token: str | None = None,
        evse_id: int | None = None,
        connector_id: int | None = None,
        issued_here: bool = False,
    ) -> TxRecord | None:
        """Close a transaction, idempotently; an end whose start we never saw still makes a (closed) row.
        `issued_here`: the id is one we issued (1.6), unique over all chargers, so an end for an id another
        charger holds is not this charger's to change: None, nothing written. A second end that differs
        from the first changes nothing either (`second_stop`)."""
        async with self._sessions() as session, session.begin():
            row = await self._tx(session, charger_id, transaction_id)
            if row is None and issued_here:
                held = select(Transaction.charger_id).where(Transaction.transaction_id == transaction_id)
                owner = await session.scalar(held.limit(1))
                if owner is not None:
                    return None
            if row is not None and not row.active and row.stopped_at is not None:
                differs = (stored_utc(row.stopped_at), row.meter_stop_wh, row.stop_reason) != (
                    stopped_at,
                    meter_stop_wh,
                    reason,
                )
                return TxRecord.of(row, second_stop=differs)
            if row is None:
                row = Transaction(
                    charger_id=charger_id,
                    transaction_id=transaction_id,
                    evse_id=evse_id,
                    connector_id=connector_id,
                    id_token=id_token,
                    active=False,
                )
                session.add(row)
            if row.active or row.stopped_at is None:
                row.active = False
                row.stopped_at = stopped_at
                row.meter_stop_wh = meter_stop_wh
                row.stop_reason = reason
                if meter_stop_wh is not None and (
                    row.meter_last_wh is None or meter_stop_wh > row.meter_last_wh
                ):
                    row.meter_last_wh = meter_stop_wh
            return TxRecord.of(row)

    async def seq_no_stored(self, charger_id: str, transaction_id: str, seq_no: int) -> bool:
        """Whether the TransactionEvent with this seqNo is stored already (a copy is not stored again)."""
        async with self._sessions() as session:
            found = await session.scalar(
                _SEQ_NO_QUERY, {"cid": charger_id, "tid": transaction_id, "seq": seq_no}
            )
        return found is not None

    async def note_seq_no(self, charger_id: str, transaction_id: str, seq_no: int) -> seq_gaps.GapStep:
        """Note a TransactionEvent whose events are stored. Noted after they are, never before: a charger
        retrying an event whose storing failed must not find it noted. What it did to the transaction's
        seqNo gaps is judged against the numbers stored (not merely received), under the row's lock. The
        notes of the moment share one transaction (`_note_seq_nos`)."""
        return await self._seq_notes((charger_id, transaction_id, seq_no))

    async def _note_seq_nos(self, notes: list[tuple[str, str, int]]) -> list[seq_gaps.GapStep]:
        now = utcnow()
        rows = [{"charger_id": c, "transaction_id": t, "seq_no": n, "received_at": now} for c, t, n in notes]
        async with self._sessions() as session, session.begin():
            changes = await seq_gaps.track(session, notes)
            dialect = session.get_bind().dialect.name
            await session.execute(insert_for(dialect, TransactionSeqNo).on_conflict_do_nothing(), rows)
        return changes

    async def note_transaction_queue(self, charger_id: str, transaction_id: str, queued: bool) -> None:
        """The station's answer to GetTransactionStatus (`messagesInQueue`), kept while the gaps it was
        asked about are open."""
        async with self._sessions() as session, session.begin():
            await session.execute(seq_gaps.queue_update(charger_id, transaction_id, queued))

    async def max_power_kw(self, charger_id: str) -> float | None:
        """The rated power of the charger's model (matched by the vendor and model it booted with), if the
        registry knows it."""
        async with self._sessions() as session:
            same_model = and_(Charger.vendor == ChargerModel.vendor, Charger.model == ChargerModel.model)
            return await session.scalar(
                select(ChargerModel.max_power_kw).join(Charger, same_model).where(Charger.id == charger_id)
            )

    async def active_transaction(self, charger_id: str, evse_id: int) -> str | None:
        """The transaction running on an EVSE (the newest, should a lost end have left two)."""
        async with self._sessions() as session:
            return await session.scalar(
                select(Transaction.transaction_id)
                .where(
                    Transaction.charger_id == charger_id, Transaction.evse_id == evse_id, Transaction.active
                )
                .order_by(Transaction.id.desc())
                .limit(1)
            )

    async def check_meter(
        self,
        charger_id: str,
        transaction_id: str,
        readings: Sequence[Reading],
        limits: MeterLimits,
        now: datetime,
        evse_id: int | None = None,
    ) -> list[Flag]:
        """Judge a transaction's register readings against its last plausible one under the row's lock, keep
        the new last plausible reading and record the implausible ones (once each: a retried message is
        judged the same). A transaction we do not hold is judged by its readings' times alone. With the
        other judgements of the moment (`advance_transaction`)."""
        item = Advance(charger_id, transaction_id, None, None, readings, limits, now, evse_id)
        return list((await self._advances(item)).flags)

    async def _tx(
        self, session: AsyncSession, charger_id: str, transaction_id: str, lock: bool = False
    ) -> Transaction | None:
        query = select(Transaction).where(
            Transaction.charger_id == charger_id, Transaction.transaction_id == transaction_id
        )
        return (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()


def _input_error(exc: Exception) -> bool:
    """A statement refused for what it carried (a value out of range), not a database gone."""
    return isinstance(exc, DBAPIError) and not exc.connection_invalidated
