"""Transaction listing over rows as the gateway stores them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import MeterFlag, Transaction
from ops.api.schemas import Page, TransactionOut
from tests.test_api_support import assert_error

pytest_plugins = ("tests.test_api_support",)

T0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)
FIELDS = {
    "charger_id",
    "transaction_id",
    "evse_id",
    "connector_id",
    "id_token",
    "started_at",
    "stopped_at",
    "meter_start_wh",
    "meter_stop_wh",
    "energy_wh",
    "stop_reason",
    "active",
    "meter_flags",
    "missing_seq_nos",
    "missing_seq_nos_queued",
    "cost",  # null: no tariff prices these sessions (tests/test_api_tariffs.py shows priced ones)
}


@pytest.fixture
async def transactions(api_sessions: async_sessionmaker[AsyncSession]) -> None:
    """Three finished and two running transactions on two chargers, one started each hour from T0."""
    async with api_sessions() as s, s.begin():
        for n in range(5):
            done = n < 3
            s.add(
                Transaction(
                    charger_id="A" if n % 2 == 0 else "B",
                    transaction_id=str(100 + n),
                    evse_id=1,
                    connector_id=1,
                    id_token=f"TAG{n}",
                    started_at=T0 + timedelta(hours=n),
                    stopped_at=T0 + timedelta(hours=n, minutes=30) if done else None,
                    meter_start_wh=1000.0 * n,
                    meter_last_wh=1000.0 * n + 250,
                    meter_stop_wh=1000.0 * n + 500 if done else None,
                    stop_reason="Local" if done else None,
                    active=not done,
                )
            )


async def _ids(admin: httpx.AsyncClient, query: str = "") -> list[str]:
    r = await admin.get(f"/api/transactions{query}")
    assert r.status_code == 200, r.text
    return [t["transaction_id"] for t in r.json()["items"]]


@pytest.mark.usefixtures("transactions")
async def test_listing_is_newest_first_with_the_spec_fields(admin: httpx.AsyncClient) -> None:
    items = (await admin.get("/api/transactions")).json()["items"]
    assert [t["transaction_id"] for t in items] == ["104", "103", "102", "101", "100"]
    assert all(set(t) == FIELDS for t in items)
    running, finished = items[0], items[2]
    assert running == {
        "charger_id": "A",
        "transaction_id": "104",
        "evse_id": 1,
        "connector_id": 1,
        "id_token": "TAG4",
        "started_at": "2025-05-01T12:00:00Z",
        "stopped_at": None,
        "meter_start_wh": 4000.0,
        "meter_stop_wh": None,
        "energy_wh": 250.0,
        "stop_reason": None,
        "active": True,
        "meter_flags": [],
        "missing_seq_nos": [],
        "missing_seq_nos_queued": None,
        "cost": None,
    }
    assert finished["energy_wh"] == 500.0 and finished["stopped_at"] == "2025-05-01T10:30:00Z"


@pytest.mark.usefixtures("transactions")
async def test_filters_and_paging(admin: httpx.AsyncClient) -> None:
    assert await _ids(admin, "?charger_id=A") == ["104", "102", "100"]
    assert await _ids(admin, "?active=true") == ["104", "103"]
    assert await _ids(admin, "?active=false&charger_id=B") == ["101"]
    assert await _ids(admin, "?charger_id=nobody") == []
    assert await _ids(admin, "?limit=2") == ["104", "103"]
    assert await _ids(admin, "?limit=2&offset=2") == ["102", "101"]
    assert await _ids(admin, "?offset=10") == []


@pytest.mark.usefixtures("transactions")
async def test_cursor_pages_walk_the_list_once_even_while_sessions_start(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    first = (await admin.get("/api/transactions?limit=2")).json()
    assert [t["transaction_id"] for t in first["items"]] == ["104", "103"] and first["next"]
    # A new session (newest of all) and one without a start time arrive between pages: an offset would
    # shift and show 103 again; the cursor goes on after 103, and the one without a start comes last.
    async with api_sessions() as s, s.begin():
        s.add(
            Transaction(charger_id="A", transaction_id="105", started_at=T0 + timedelta(hours=9), active=True)
        )
        s.add(Transaction(charger_id="B", transaction_id="106", started_at=None, active=True))
    seen, cursor = [], first["next"]
    while cursor:
        page = (await admin.get("/api/transactions", params={"limit": 2, "cursor": cursor})).json()
        seen += [t["transaction_id"] for t in page["items"]]
        cursor = page["next"]
    assert seen == ["102", "101", "100", "106"]
    last = (await admin.get("/api/transactions?limit=10")).json()
    assert last["next"] is None and len(last["items"]) == 7


@pytest.mark.parametrize("cursor", ["not-a-cursor", "fA", "MjAyNS0wNS0wMVQwMDowMDowMCswMDowMHx4"])
async def test_a_cursor_this_list_did_not_give_out_is_422(admin: httpx.AsyncClient, cursor: str) -> None:
    assert_error(await admin.get("/api/transactions", params={"cursor": cursor}), 422, "invalid_request")


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=ten", "active=sometimes"])
async def test_bad_query_is_422(admin: httpx.AsyncClient, query: str) -> None:
    assert_error(await admin.get(f"/api/transactions?{query}"), 422, "invalid_request")


@pytest.mark.usefixtures("transactions")
async def test_the_list_reads_back_as_the_documented_model(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The list is written from rows, not models (a heavy read); it must say exactly what the model says,
    flags, seqNo gaps and the billed energy included."""
    async with api_sessions() as s, s.begin():
        tx = (await s.scalars(select(Transaction).where(Transaction.transaction_id == "102"))).one()
        tx.meter_good_wh = 2300.0
        tx.missing_seq_nos, tx.missing_seq_nos_queued = [[1, 2], [5, 5]], False
        s.add(
            MeterFlag(
                charger_id="A",
                transaction_id="102",
                evse_id=1,
                reason="exceeds_max_power",
                value_wh=25_000.0,
                sampled_at=T0 + timedelta(hours=2, minutes=10, microseconds=123),
                previous_wh=2300.0,
                previous_at=T0 + timedelta(hours=2, minutes=5),
                detail="rose 22,700 Wh in 300 s",
                flagged_at=T0 + timedelta(hours=2, minutes=10, seconds=1),
            )
        )
    body = (await admin.get("/api/transactions")).content
    assert Page[TransactionOut].model_validate_json(body).model_dump_json().encode() == body
    flagged = next(t for t in orjson.loads(body)["items"] if t["transaction_id"] == "102")
    assert flagged["energy_wh"] == 300.0  # billed up to the last plausible reading, not the 2,500 stop
    assert [f["reason"] for f in flagged["meter_flags"]] == ["exceeds_max_power"]
    assert flagged["meter_flags"][0]["sampled_at"] == "2025-05-01T10:10:00.000123Z"
    assert flagged["missing_seq_nos"] == [{"first": 1, "last": 2}, {"first": 5, "last": 5}]
    one = (await admin.get("/api/transactions/A/102")).json()
    assert one["meter_flags"] == flagged["meter_flags"] and one["energy_wh"] == 300.0
    assert (one["missing_seq_nos"], one["missing_seq_nos_queued"]) == (flagged["missing_seq_nos"], False)
