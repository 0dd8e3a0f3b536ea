"""Gaps in TransactionEvent seqNos (OCPP 2.0.1 block E): the pure arithmetic of `ocpp_gateway.seq_gaps`, and
the handler against the in-memory store (one GetTransactionStatus per gap opening, replays close gaps)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ocpp_gateway.seq_gaps import MAX_GAPS, GapStep, step
from tests.gateway_memory import MemoryCharger


def test_a_jump_past_the_highest_opens_a_gap_and_asks() -> None:
    assert step((), 0, 3) == GapStep(((1, 2),), jumped=(1, 2), was_open=False)
    assert step((), 0, 3).ask
    assert step((), 0, 1) == GapStep(())  # the next number: no gap
    assert step((), None, 7) == GapStep(())  # the first stored event: nothing to compare with


def test_a_second_jump_while_a_gap_is_open_is_recorded_but_does_not_ask_again() -> None:
    second = step(((1, 2),), 4, 7)
    assert second.gaps == ((1, 2), (5, 6)) and second.jumped == (5, 6) and not second.ask
    assert not step(((1, 2),), 3, 4).ask  # the next number while a gap is open


@pytest.mark.parametrize(
    ("seq_no", "left"),
    [
        (1, ((2, 4),)),  # the first of a range
        (4, ((1, 3),)),  # the last
        (2, ((1, 1), (3, 4))),  # inside: the range splits
        (9, ((1, 4),)),  # below the highest but never missing (a copy the store let through): no change
    ],
)
def test_a_late_missing_number_closes_only_itself(seq_no: int, left: tuple[tuple[int, int], ...]) -> None:
    change = step(((1, 4),), 10, seq_no)
    assert change.gaps == left and change.jumped is None and change.was_open and not change.ask


def test_replaying_every_missing_number_closes_the_gap() -> None:
    gaps: tuple[tuple[int, int], ...] = ((1, 2),)
    for n in (2, 1):
        gaps = step(gaps, 3, n).gaps
    assert gaps == ()


def test_gaps_are_ranges_and_kept_bounded() -> None:
    """A station jumping by two billion costs one pair; one skipping on every event stops being tracked
    after `MAX_GAPS` ranges (still counted and logged: `jumped` is set)."""
    assert step((), 0, 2_000_000_001).gaps == ((1, 2_000_000_000),)
    full = tuple((2 * n + 1, 2 * n + 1) for n in range(MAX_GAPS))
    over = step(full, 2 * MAX_GAPS, 2 * MAX_GAPS + 2)
    assert over.gaps == full and over.jumped == (2 * MAX_GAPS + 1, 2 * MAX_GAPS + 1)


# -- the handler against the in-memory store ----------------------------------------------------------------

T = "2026-11-25T10:00:00Z"


def event(kind: str, seq_no: int, **extra: Any) -> dict[str, Any]:
    return {
        "eventType": kind,
        "timestamp": T,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-gap"},
        "evse": {"id": 1, "connectorId": 1},
        **extra,
    }


async def calls_sent(cp: MemoryCharger) -> list[list[Any]]:
    """The CALLs the session sent (after letting its own tasks run)."""
    for _ in range(20):
        await asyncio.sleep(0)
    return [frame for frame in cp.connection.sent if frame[0] == 2]


async def test_a_gap_asks_get_transaction_status_once_and_replays_close_it() -> None:
    cp = MemoryCharger("ocpp2.0.1")
    tx = lambda: cp.store.transactions[("CP-MEM", "tx-gap")]  # noqa: E731
    assert await cp.result("TransactionEvent", event("Started", 0)) == {}
    assert await cp.result("TransactionEvent", event("Updated", 3)) == {}  # answered first, then asked
    [ask] = await calls_sent(cp)
    assert ask[2:] == ["GetTransactionStatus", {"transactionId": "tx-gap"}]
    await cp.session.route_message(json.dumps([3, ask[1], {"messagesInQueue": True}]))
    await calls_sent(cp)
    assert (tx().gaps, tx().queued) == (((1, 2),), True)
    await cp.result("TransactionEvent", event("Updated", 4))
    await cp.result("TransactionEvent", event("Updated", 1, offline=True))
    assert len(await calls_sent(cp)) == 1  # not asked again while the gap is open
    assert tx().gaps == ((2, 2),)
    await cp.result("TransactionEvent", event("Updated", 2, offline=True))
    assert (tx().gaps, tx().queued) == ((), None)
