"""`Store.advance_transaction`, the one store transaction of a 2.x TransactionEvent on the hot path: copy
check, progress (seqNo, latest register) and meter judgement together. On SQLite, on Postgres, and the
in-memory double the handler tests use, which must answer the same."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from chargeops.db.models import MeterFlag, Transaction
from ocpp_gateway.plausibility import BACKWARDS, CLOCK_SKEW, EXCEEDS_MAX_POWER, MeterLimits, Reading
from ocpp_gateway.seq_gaps import GapStep
from ocpp_gateway.store import GatewayStore, Store, TxProgress
from tests.conftest import migrated_sessions
from tests.gateway_memory import MemoryCharger, MemoryStore

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
LIMITS = MeterLimits(max_power_w=22_000, max_clock_skew_s=300)
CP, TX = "CP-ADV", "tx-adv"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def store(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[tuple[Store, object]]:
    """The store, and what reads its transaction row back (a GatewayStore's sessions, or the dicts)."""
    if request.param == "memory":
        memory = MemoryStore()
        yield memory, memory
        return
    url = sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    async with migrated_sessions(url) as sessions:
        yield GatewayStore(sessions), sessions


async def row_of(backing: object) -> tuple[int | None, float | None, float | None, int]:
    """(last_seq_no, meter_last_wh, meter_good_wh, flags recorded) of the transaction."""
    if isinstance(backing, MemoryStore):
        tx = backing.transactions[(CP, TX)]
        good = tx.meter_good.wh if tx.meter_good else None
        return tx.last_seq_no, tx.meter_last_wh, good, len(backing.meter_flags)
    async with backing() as session:  # type: ignore[operator]
        tx = await session.scalar(select(Transaction).where(Transaction.transaction_id == TX))
        flags = await session.scalar(select(func.count()).select_from(MeterFlag))
        return tx.last_seq_no, tx.meter_last_wh, tx.meter_good_wh, flags


async def advance(store: Store, seq_no: int, wh: float, minutes: float, tx: str = TX) -> TxProgress:
    return await store.advance_transaction(
        CP, tx, seq_no, meter_wh=wh, readings=[Reading(wh, at(minutes))], limits=LIMITS, now=NOW, evse_id=1
    )


async def test_advance_moves_forward_once_judges_readings_and_knows_copies(
    store: tuple[Store, object],
) -> None:
    s, backing = store
    assert await advance(s, 1, 1500, 5, tx="never-started") == TxProgress(known=False)
    await s.start_transaction(
        CP, transaction_id=TX, evse_id=1, connector_id=1, id_token="T", started_at=T0, meter_start_wh=1000
    )

    assert await advance(s, 1, 1500, 5) == TxProgress()
    assert await row_of(backing) == (1, 1500, 1500, 0)

    # Stored and noted: a copy (offline resend) changes nothing, even with other readings in it.
    await s.note_seq_no(CP, TX, 1)
    assert await advance(s, 1, 90_000, 6) == TxProgress(copy=True)
    assert await row_of(backing) == (1, 1500, 1500, 0)

    # A register going backwards is flagged and leaves the last plausible reading where it was.
    progress = await advance(s, 2, 1200, 10)
    assert [f.reason for f in progress.flags] == [BACKWARDS] and progress.known and not progress.copy
    assert await row_of(backing) == (2, 1500, 1500, 1)
    # Not noted (its events were not stored): a retry is judged again, the same, and recorded once.
    assert [f.reason for f in (await advance(s, 2, 1200, 10)).flags] == [BACKWARDS]
    assert await row_of(backing) == (2, 1500, 1500, 1)

    # A 10x jump: beyond 22 kW for 10 minutes. The latest register still moves; billing's does not.
    progress = await advance(s, 3, 15_000, 15)
    assert [f.reason for f in progress.flags] == [EXCEEDS_MAX_POWER]
    assert await row_of(backing) == (3, 15_000, 1500, 2)

    # A late event (a queue replayed) never moves the progress back; a plausible reading moves billing on.
    assert await advance(s, 0, 2500, 20) == TxProgress()
    assert await row_of(backing) == (3, 15_000, 2500, 2)


async def test_advance_without_readings_only_moves_progress(store: tuple[Store, object]) -> None:
    s, backing = store
    await s.start_transaction(
        CP, transaction_id=TX, evse_id=1, connector_id=1, id_token=None, started_at=T0, meter_start_wh=None
    )
    progress = await s.advance_transaction(CP, TX, 4, meter_wh=None, readings=[], limits=None, now=NOW)
    assert progress == TxProgress()
    assert await row_of(backing) == (4, None, None, 0)


async def gaps_of(backing: object, tx: str) -> tuple[tuple[tuple[int, int], ...], bool | None]:
    if isinstance(backing, MemoryStore):
        row = backing.transactions[(CP, tx)]
        return row.gaps, row.queued
    async with backing() as session:  # type: ignore[operator]
        stored = await session.scalar(select(Transaction).where(Transaction.transaction_id == tx))
        gaps = tuple((first, last) for first, last in stored.missing_seq_nos or ())
        return gaps, stored.missing_seq_nos_queued


async def test_notes_of_the_moment_track_gaps_in_order(store: tuple[Store, object]) -> None:
    """Concurrent notes (one batch in `GatewayStore`) give each caller what its own note did, in order."""
    s, backing = store
    for tx in ("tx-a", "tx-b"):
        await s.start_transaction(
            CP, transaction_id=tx, evse_id=1, connector_id=1, id_token=None, started_at=T0, meter_start_wh=0
        )
    assert await s.note_seq_no(CP, "tx-a", 0) == GapStep(())
    a3, a1, b0, b5, other = await asyncio.gather(
        s.note_seq_no(CP, "tx-a", 3),
        s.note_seq_no(CP, "tx-a", 1),
        s.note_seq_no(CP, "tx-b", 0),
        s.note_seq_no(CP, "tx-b", 5),
        s.note_seq_no(CP, "not-held", 7),
    )
    assert a3 == GapStep(((1, 2),), (1, 2), False) and a3.ask
    assert a1 == GapStep(((2, 2),), None, True)
    assert (b0, other) == (GapStep(()), GapStep(()))
    assert b5 == GapStep(((1, 4),), (1, 4), False) and b5.ask
    assert await s.seq_no_stored(CP, "not-held", 7)

    await s.note_transaction_queue(CP, "tx-a", True)
    assert await gaps_of(backing, "tx-a") == (((2, 2),), True)
    # The last missing number closes the gap and forgets the station's answer about it.
    assert await s.note_seq_no(CP, "tx-a", 2) == GapStep((), None, True)
    assert await gaps_of(backing, "tx-a") == ((), None)
    assert await gaps_of(backing, "tx-b") == (((1, 4),), None)


async def test_meter_checks_of_the_moment_share_the_batch(store: tuple[Store, object]) -> None:
    """1.6 meter values (`check_meter`, no seqNo) go with the 2.x events of the moment: a transaction not
    held is judged by its readings' times alone, one held against its last plausible reading."""
    s, backing = store
    await s.start_transaction(
        CP, transaction_id=TX, evse_id=1, connector_id=1, id_token=None, started_at=T0, meter_start_wh=0
    )
    ahead = [Reading(500, NOW + timedelta(hours=2))]
    unknown, held, progress = await asyncio.gather(
        s.check_meter(CP, "not-held", ahead, LIMITS, NOW, 1),
        s.check_meter(CP, TX, [Reading(1000, at(5))], LIMITS, NOW, 1),
        advance(s, 1, 900, 10),
    )
    assert [f.reason for f in unknown] == [CLOCK_SKEW]
    assert held == []
    assert [f.reason for f in progress.flags] == [BACKWARDS]  # judged after the reading of 1,000 Wh
    assert await row_of(backing) == (1, 900, 1000, 2)


async def test_a_value_no_column_holds_fails_only_its_own_call(pg_url: str) -> None:
    """One station's seqNo beyond a 32-bit integer in a shared batch: the others of the moment are stored."""
    async with migrated_sessions(pg_url) as sessions:
        s = GatewayStore(sessions)
        for tx in (TX, "tx-other"):
            await s.start_transaction(
                CP,
                transaction_id=tx,
                evse_id=1,
                connector_id=1,
                id_token=None,
                started_at=T0,
                meter_start_wh=0,
            )
        bad, good = await asyncio.gather(
            advance(s, 3_000_000_000, 100, 5, tx="tx-other"), advance(s, 1, 100, 5), return_exceptions=True
        )
        assert isinstance(bad, DBAPIError) and good == TxProgress()
        assert await row_of(sessions) == (1, 100, 100, 0)


async def test_a_seq_no_beyond_what_is_stored_is_refused_with_a_clear_error() -> None:
    cp = MemoryCharger("ocpp2.0.1")
    payload = {
        "eventType": "Updated",
        "timestamp": "2026-12-04T08:00:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 2**31,
        "transactionInfo": {"transactionId": TX},
    }
    frame = await cp.call("TransactionEvent", payload)
    assert frame[0] == 4 and frame[2] == "PropertyConstraintViolation" and "seqNo" in frame[3]
