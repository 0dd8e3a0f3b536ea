"""Parts actually used (SQLite and Postgres): resolving a maintenance ticket consumes what the crew fitted and
releases the rest of its reservation, extras are reserved then consumed, a bad report is refused and changes
nothing; a repeat failure reserves the rule's parts again only when it is plausibly new, capped at what the
charger contains."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.ops_models import Stock, StockMovement, Ticket
from chargeops.events import utcnow
from ops import maintenance
from ops.registry import FleetDoc, apply_fleet, seed_catalogue
from ops.rules import Observation, RuleBook, load_rules
from ops.tickets import ticket_view
from tests.conftest import StartRuntime, migrated_sessions

Sessions = async_sessionmaker[AsyncSession]
ADMIN = {"Authorization": "Bearer test-admin-token"}
T0 = utcnow() - timedelta(minutes=10)
BOOK = load_rules()
FAN, FILTER, MODULE = "FAN-120", "FLT-G4", "PM-30KW"  # a DC150 holds 3 fans, 2 filters, 5 modules
FLEET: dict[str, Any] = {
    "regions": [{"id": "north"}],
    "depots": [{"id": "D1", "region": "north"}],
    "sites": [{"id": "s1", "region": "north", "depot": "D1"}],
    "chargers": [
        {"id": "CP1", "site": "s1", "vendor": "Generic", "model": "DC150"},
        {"id": "CP2", "site": "s1", "vendor": "Generic", "model": "DC150"},
        {"id": "CPX", "site": "s1", "vendor": "Acme", "model": "Unknown"},  # no model in the catalogue
    ],
    "stock": [
        {"depot": "D1", "sku": FAN, "on_hand": 10},
        {"depot": "D1", "sku": FILTER, "on_hand": 10},
        {"depot": "D1", "sku": MODULE, "on_hand": 20},
    ],
}


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(db_url) as made:
        await seed_catalogue(made)
        async with made.begin() as session:
            await apply_fleet(session, FleetDoc.model_validate(FLEET))
        yield made


def hot(key: str, seconds: int, *, cp: str = "CP1", evse: int = 1, cleared: bool = False) -> Observation:
    """The overheating rule: a fan and an air filter."""
    at = T0 + timedelta(seconds=seconds)
    return Observation("fault", cp, key, at, code="HighTemperature", evse_id=evse, cleared=cleared)


async def observe(sessions: Sessions, obs: Observation, book: RuleBook = BOOK) -> int:
    async with sessions.begin() as session:
        ticket = await maintenance.observe(session, obs, book)
        return ticket.id if ticket is not None else 0


async def walk(
    sessions: Sessions, ticket_id: int, *steps: str, parts_used: list[dict[str, Any]] | None = None
) -> None:
    """The steps in one transaction each; `parts_used` goes with `resolved`."""
    for to in steps:
        async with sessions.begin() as session:
            ticket = await session.get(Ticket, ticket_id)
            assert ticket is not None
            used = parts_used if to == "resolved" else None
            await maintenance.transition(session, ticket, to, "alice", parts_used=used)


async def stock(sessions: Sessions) -> dict[str, tuple[int, int]]:
    """SKU → (on hand, reserved) at D1."""
    async with sessions() as session:
        rows = await session.scalars(select(Stock).where(Stock.depot_id == "D1"))
        return {r.sku: (r.on_hand, r.reserved) for r in rows}


async def moves(sessions: Sessions, ticket_id: int) -> list[tuple[str, str, int]]:
    async with sessions() as session:
        rows = await session.scalars(
            select(StockMovement).where(StockMovement.ticket_id == ticket_id).order_by(StockMovement.id)
        )
        return [(m.sku, m.kind, m.qty) for m in rows]


async def ticket(sessions: Sessions, ticket_id: int) -> Ticket:
    async with sessions() as session:
        row = await session.get(Ticket, ticket_id)
        assert row is not None
        return row


async def test_the_crew_fitted_only_the_filter_so_the_fan_goes_back(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0))
    assert (await ticket(sessions, tid)).parts == [{"sku": FAN, "qty": 1}, {"sku": FILTER, "qty": 1}]
    assert (await stock(sessions))[FAN] == (10, 1)
    await walk(sessions, tid, "assigned", "in_progress", "resolved", parts_used=[{"sku": FILTER, "qty": 1}])
    now = await stock(sessions)
    assert (now[FAN], now[FILTER]) == ((10, 0), (9, 0))
    assert sorted((await moves(sessions, tid))[2:]) == [(FAN, "release", 1), (FILTER, "consume", 1)]
    done = await ticket(sessions, tid)
    assert done.parts_used == [{"sku": FILTER, "qty": 1}]
    assert ticket_view(done)["parts_used"] == [{"sku": FILTER, "qty": 1}]
    await walk(sessions, tid, "closed")  # closing a resolved ticket moves nothing more
    assert len(await moves(sessions, tid)) == 4 and await stock(sessions) == now


async def test_parts_beyond_the_reservation_are_reserved_then_consumed(sessions: Sessions) -> None:
    other = await observe(sessions, Observation("fault", "CP2", "m1", T0, code="OverVoltage"))
    assert (await stock(sessions))[MODULE] == (20, 1)  # CP2's module, not to be touched by CP1's ticket
    tid = await observe(sessions, hot("e1", 0))
    used = [{"sku": FAN, "qty": 2}, {"sku": FILTER, "qty": 1}, {"sku": MODULE, "qty": 1}]
    await walk(sessions, tid, "assigned", "in_progress", "resolved", parts_used=used)
    booked = (await moves(sessions, tid))[2:]
    assert [m for m in booked if m[0] == FAN] == [
        (FAN, "consume", 1),
        (FAN, "reserve", 1),
        (FAN, "consume", 1),
    ]
    assert [m for m in booked if m[0] == MODULE] == [(MODULE, "reserve", 1), (MODULE, "consume", 1)]
    assert [m for m in booked if m[0] == FILTER] == [(FILTER, "consume", 1)]
    now = await stock(sessions)
    assert (now[FAN], now[FILTER], now[MODULE]) == ((8, 0), (9, 0), (19, 1))  # CP2's module still reserved
    assert (await ticket(sessions, tid)).parts_used == used
    assert await moves(sessions, other) == [(MODULE, "reserve", 1)]


async def test_reopened_ticket_books_the_second_fix_as_extras(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0))
    await walk(sessions, tid, "assigned", "in_progress", "resolved", parts_used=[])  # nothing fitted
    assert await stock(sessions) == {FAN: (10, 0), FILTER: (10, 0), MODULE: (20, 0)}
    await walk(sessions, tid, "in_progress")  # the fix did not hold: nothing is reserved again
    assert len(await moves(sessions, tid)) == 4
    await walk(sessions, tid, "resolved", parts_used=[{"sku": FAN, "qty": 1}])
    assert (await moves(sessions, tid))[4:] == [(FAN, "reserve", 1), (FAN, "consume", 1)]
    assert await stock(sessions) == {FAN: (9, 0), FILTER: (10, 0), MODULE: (20, 0)}
    assert (await ticket(sessions, tid)).parts_used == [{"sku": FAN, "qty": 1}]
    # Reopened and given up on: closing it releases nothing (it holds nothing; once it released twice).
    await walk(sessions, tid, "in_progress", "assigned", "closed")
    assert len(await moves(sessions, tid)) == 6 and (await stock(sessions))[FAN] == (9, 0)


async def test_closing_an_unresolved_ticket_releases_what_it_holds(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0))
    await observe(sessions, hot("e2", 1, evse=2))  # another EVSE: a second fan and filter
    await walk(sessions, tid, "closed")
    assert sorted((await moves(sessions, tid))[4:]) == [(FAN, "release", 2), (FILTER, "release", 2)]
    assert await stock(sessions) == {FAN: (10, 0), FILTER: (10, 0), MODULE: (20, 0)}


async def test_repeats_reserve_again_only_when_new_and_never_beyond_the_charger(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0))
    await observe(sessions, hot("e2", 1))  # still the same failure (never cleared, same EVSE)
    await observe(sessions, hot("e2b", 1, evse=0))  # reported for the charger as a whole: not another EVSE
    assert (await ticket(sessions, tid)).parts == [{"sku": FAN, "qty": 1}, {"sku": FILTER, "qty": 1}]
    assert (await stock(sessions))[FAN] == (10, 1)

    await observe(sessions, hot("c1", 2, cleared=True))
    await observe(sessions, hot("e3", 3))  # back after it had cleared: a new failure
    assert (await ticket(sessions, tid)).parts == [{"sku": FAN, "qty": 2}, {"sku": FILTER, "qty": 2}]
    assert (await stock(sessions))[FAN] == (10, 2)
    # A repeat that happened before the clear the engine saw (delivered late) is not a new failure.
    await observe(sessions, hot("c2", 5, cleared=True))
    await observe(sessions, hot("late", 4))
    assert (await stock(sessions))[FAN] == (10, 2)

    # It flaps: a DC150 holds 3 fans and 2 filters, so no more than that is ever held for it.
    for n in range(4):
        await observe(sessions, hot(f"c{n + 3}", 10 + 2 * n, cleared=True))
        await observe(sessions, hot(f"f{n}", 11 + 2 * n))
    t = await ticket(sessions, tid)
    assert t.parts == [{"sku": FAN, "qty": 3}, {"sku": FILTER, "qty": 2}] and t.occurrences == 9
    assert await stock(sessions) == {FAN: (10, 3), FILTER: (10, 2), MODULE: (20, 0)}
    assert sum(q for sku, kind, q in await moves(sessions, tid) if kind == "reserve" and sku == FAN) == 3
    await walk(sessions, tid, "assigned", "in_progress", "resolved", parts_used=[{"sku": FAN, "qty": 2}])
    assert await stock(sessions) == {FAN: (8, 0), FILTER: (10, 0), MODULE: (20, 0)}


async def test_a_redelivered_event_on_another_evse_reserves_once(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0, evse=1))
    await observe(sessions, hot("e2", 1, evse=2))
    await observe(sessions, hot("e2", 1, evse=2))  # the broker delivers it again
    t = await ticket(sessions, tid)
    assert t.occurrences == 2 and t.parts == [{"sku": FAN, "qty": 2}, {"sku": FILTER, "qty": 2}]
    assert await stock(sessions) == {FAN: (10, 2), FILTER: (10, 2), MODULE: (20, 0)}


async def test_without_a_known_model_the_rule_quantity_is_the_cap(sessions: Sessions) -> None:
    tid = await observe(sessions, hot("e1", 0, cp="CPX"))
    await observe(sessions, hot("c1", 1, cp="CPX", cleared=True))
    await observe(sessions, hot("e2", 2, cp="CPX"))
    t = await ticket(sessions, tid)
    assert t.occurrences == 2 and t.parts == [{"sku": FAN, "qty": 1}, {"sku": FILTER, "qty": 1}]
    assert (await stock(sessions))[FAN] == (10, 1)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_the_loser_of_a_concurrent_open_counts_a_repeat_and_reserves_if_new(sessions: Sessions) -> None:
    """Two ops processes see the first two failures at once: one opens the ticket, the other hits the
    unique open key and counts its observation as a repeat (on another EVSE: a new failure)."""
    async with sessions() as first, sessions() as second:
        await first.begin()
        opened = await maintenance.observe(first, hot("e1", 0, evse=1), BOOK)
        assert opened is not None

        async def loser() -> Ticket | None:
            await second.begin()
            return await maintenance.observe(second, hot("e2", 1, evse=2), BOOK)

        racing = asyncio.create_task(loser())
        await asyncio.sleep(0.5)  # it waits on the open key the first transaction holds
        assert not racing.done()
        await first.commit()
        repeated = await racing
        await second.commit()
    assert repeated is not None and repeated.id == opened.id
    t = await ticket(sessions, opened.id)
    assert t.occurrences == 2 and t.parts == [{"sku": FAN, "qty": 2}, {"sku": FILTER, "qty": 2}]
    assert await stock(sessions) == {FAN: (10, 2), FILTER: (10, 2), MODULE: (20, 0)}


@pytest.fixture
async def api(db_url: str, start_runtime: StartRuntime) -> AsyncIterator[httpx.AsyncClient]:
    runtime = await start_runtime(db_url, ops_interval=3600)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as client:
        fleet = {**FLEET, "stock": [*FLEET["stock"][1:], {"depot": "D1", "sku": FAN, "on_hand": 0}]}
        assert (await client.post("/api/fleet", json=fleet)).status_code == 200
        assert runtime.ops is not None
        assert await runtime.ops.apply(hot("e1", 0)) is not None
        yield client


async def test_bad_reports_are_refused_with_422_and_change_nothing(api: httpx.AsyncClient) -> None:
    tickets = (await api.get("/api/tickets", params={"kind": "maintenance"})).json()["items"]
    assert len(tickets) == 1, [(t["charger_id"], t["rule"], t["fault"], t["created_at"]) for t in tickets]
    [tid] = [t["id"] for t in tickets]
    # No fan in stock: the reservation raised a purchase order (the periodic review may have raised one
    # before it: several may be open).
    orders = (await api.get("/api/tickets", params={"kind": "supply"})).json()["items"]
    order = next(o for o in orders if o["parts"][0]["sku"] == FAN)
    for to in ("assigned", "in_progress"):
        assert (await api.post(f"/api/tickets/{tid}/transition", json={"to": to})).status_code == 200

    async def snapshot() -> tuple[Any, ...]:
        stock = (await api.get("/api/stock", params={"depot": "D1"})).json()["items"]
        one = (await api.get(f"/api/tickets/{tid}")).json()
        po = (await api.get(f"/api/tickets/{order['id']}")).json()
        return stock, one["status"], one["parts_used"], len(one["log"]), po["status"]

    before = await snapshot()
    fan = {"sku": FAN, "qty": 1}
    cases = [
        (tid, {"to": "resolved"}, "parts_used_required", "parts_used"),
        (tid, {"to": "assigned", "parts_used": [fan]}, "parts_used_not_allowed", "resolving"),
        (order["id"], {"to": "closed", "parts_used": []}, "parts_used_not_allowed", "maintenance"),
        (tid, {"to": "resolved", "parts_used": [fan, {"sku": "NOPE-1", "qty": 1}]}, "unknown_sku", "NOPE-1"),
        (tid, {"to": "resolved", "parts_used": [fan, fan]}, "invalid_parts_used", FAN),
        (tid, {"to": "resolved", "parts_used": [{"sku": FAN, "qty": -1}]}, "invalid_request", "qty"),
        (tid, {"to": "resolved", "parts_used": [{"sku": FAN}]}, "invalid_request", "qty"),
    ]
    for ticket_id, body, code, named in cases:
        r = await api.post(f"/api/tickets/{ticket_id}/transition", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == code and named in r.json()["detail"], (body, r.text)
        assert await snapshot() == before, body
    assert before[2] is None

    filt = {"sku": FILTER, "qty": 1}
    r = await api.post(f"/api/tickets/{tid}/transition", json={"to": "resolved", "parts_used": [filt]})
    assert r.status_code == 200 and r.json()["parts_used"] == [filt], r.text
    stock = {s["sku"]: s for s in (await api.get("/api/stock", params={"depot": "D1"})).json()["items"]}
    assert (stock[FAN]["on_hand"], stock[FAN]["reserved"]) == (0, 0)
    assert (stock[FILTER]["on_hand"], stock[FILTER]["reserved"]) == (9, 0)
    assert (await api.get(f"/api/tickets/{tid}")).json()["parts_used"] == [filt]
