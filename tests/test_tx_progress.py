"""`Store.advance_transaction`, the one store transaction of a 2.x TransactionEvent on the hot path: copy
check, progress (seqNo, latest register) and meter judgement together. On SQLite, on Postgres, and the
in-memory double the handler tests use, which must answer the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from chargeops.db.models import MeterFlag, Transaction
from ocpp_gateway.plausibility import BACKWARDS, EXCEEDS_MAX_POWER, MeterLimits, Reading
from ocpp_gateway.store import GatewayStore, Store, TxProgress
from tests.conftest import migrated_sessions
from tests.gateway_memory import MemoryStore

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
