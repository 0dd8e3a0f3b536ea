"""Reconnect storms (issue 14): genuine chargers behind one address all get in, each password is still
hashed (once), guesses are still limited per address, and a storm's charger reads, boot writes and presence
updates share statements instead of a round trip each."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any
from unittest.mock import patch

from sqlalchemy import event, select

from chargeops.db.models import Charger
from ocpp_gateway.auth import FailureLimiter, Verifier
from ocpp_gateway.coalesce import Coalescer
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import basic, raw_charger
from tests.test_gateway_errors import metric
from tests.test_gateway_handshake import refused, register
from tests.waiting import until

STORM = 40  # chargers; more than the 10 failed logins an address is allowed, fewer than a slow test


def password(i: int) -> str:
    return f"storm-password-{i:04d}"


# -- the limiter: checks in flight hold places ---------------------------------------------------------


def test_checks_in_flight_hold_places_and_only_wrong_passwords_count() -> None:
    limiter = FailureLimiter(3, window=60, backoff=60)
    assert [limiter.try_begin("a", now=0) for _ in range(4)] == [True, True, True, False]
    limiter.end("a", ok=True, now=1)  # a good password gives its place back, costs nothing
    assert limiter.try_begin("a", now=1)
    limiter.end("a", ok=False, now=2)
    limiter.end("a", ok=False, now=2)
    limiter.end("a", ok=False, now=2)  # third failure: blocked
    assert limiter.blocked("a", now=3) and not limiter.try_begin("a", now=3)
    assert limiter.try_begin("b", now=3)  # another key is not affected
    assert not limiter.blocked("a", now=63) and limiter.try_begin("a", now=63)  # back-off over


async def test_a_waiting_check_gets_the_place_a_good_password_gives_back() -> None:
    limiter = FailureLimiter(1)
    assert await limiter.turn("a", timeout=1)
    waiter = asyncio.create_task(limiter.turn("a", timeout=5))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # the only place is held
    limiter.end("a", ok=True)
    assert await asyncio.wait_for(waiter, 1) is True


async def test_waiters_are_refused_at_once_when_the_key_gets_blocked_and_time_out_otherwise() -> None:
    limiter = FailureLimiter(2)
    assert await limiter.turn("a", timeout=1) and await limiter.turn("a", timeout=1)
    waiters = [asyncio.create_task(limiter.turn("a", timeout=5)) for _ in range(5)]
    await asyncio.sleep(0.01)
    limiter.end("a", ok=False)  # one failure, one place still held: nobody may start
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    limiter.end("a", ok=False)  # second failure: blocked
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [False] * 5
    assert await limiter.turn("b", timeout=0)  # a key with a free place needs no wait
    other = FailureLimiter(1)
    assert await other.turn("x", timeout=1)
    assert await other.turn("x", timeout=0.05) is False  # nothing came free in time


# -- the coalescer --------------------------------------------------------------------------------------


async def test_concurrent_calls_share_one_run_and_each_gets_its_own_answer() -> None:
    runs: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        runs.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    co: Coalescer[int, int] = Coalescer(run, max_batch=50)
    assert await co(1) == 10  # a quiet caller runs alone, at once
    answers = await asyncio.gather(*(co(i) for i in range(120)))
    assert answers == [i * 10 for i in range(120)]
    assert runs[0] == [1] and len(runs) <= 1 + 4  # 120 callers: the first alone, then batches of <= 50
    assert max(len(r) for r in runs) == 50


async def test_a_failed_run_fails_its_callers_and_the_next_run_is_unaffected() -> None:
    calls = itertools.count()

    async def run(items: list[str]) -> list[str]:
        if next(calls) == 0:
            raise ConnectionError("database down")
        return items

    co: Coalescer[str, str] = Coalescer(run)
    results = await asyncio.gather(co("a"), co("b"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await co("c") == "c"


async def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    gate = asyncio.Event()
    seen: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        seen.append(items)
        await gate.wait()
        return [i.upper() for i in items]

    co: Coalescer[str, str] = Coalescer(run)
    first = asyncio.create_task(co("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(co("b"))
    kept = asyncio.create_task(co("c"))
    await asyncio.sleep(0.01)
    gone.cancel()
    gate.set()
    assert await first == "A" and await kept == "C"
    assert seen == [["a"], ["c"]]  # the cancelled caller's item was never run


# -- a storm against a real gateway ---------------------------------------------------------------------


async def _storm(runtime: Runtime) -> list[str]:
    port = runtime.gateway.port  # type: ignore[union-attr]

    async def one(i: int) -> str:
        cid = f"STORM{i:03d}"
        protocol = "ocpp1.6" if i % 2 else "ocpp2.0.1"
        async with raw_charger(port, cid, protocol, additional_headers=basic(cid, password(i))) as cp:
            return str((await cp.boot())["status"])

    return list(await asyncio.gather(*(one(i) for i in range(STORM))))


async def test_a_storm_of_genuine_chargers_behind_one_address_all_get_in_each_password_hashed_once(
    start_runtime: StartRuntime, db_url: str
) -> None:
    """Issue 14: 40 registered chargers from 127.0.0.1 at once, the server's cache cold (a restart). Each
    password is hashed (authentication is not skipped), each once; none is refused 429 although the address
    is allowed 10 failed logins, and the next storm hashes nothing. The storm's charger reads share SELECTs,
    its boots share UPDATEs, and the rows say every charger booted, connected and then disconnected."""
    runtime = await start_runtime(database_url=db_url, login_failures_allowed=10)
    for i in range(STORM):
        await register(runtime, f"STORM{i:03d}", password=password(i))
    statements: list[str] = []
    engine = runtime.engine.sync_engine

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    hashed: list[str] = []
    real_verify = Verifier.verify

    def counting(self: Verifier, charger_id: str, stored_hash: str, pw: str) -> bool:
        hashed.append(charger_id)
        time.sleep(0.05)  # a busy machine: many checks are in flight at once, more than the limit of 10
        return real_verify(self, charger_id, stored_hash, pw)

    limited = metric("chargeops_handshakes_refused_total", reason="rate_limited")
    with patch.object(Verifier, "verify", counting):
        assert await _storm(runtime) == ["Accepted"] * STORM
        assert sorted(hashed) == sorted(f"STORM{i:03d}" for i in range(STORM))
        assert await _storm(runtime) == ["Accepted"] * STORM  # a reconnect storm: verified before
        assert len(hashed) == STORM
    event.remove(engine, "before_cursor_execute", seen)
    assert metric("chargeops_handshakes_refused_total", reason="rate_limited") == limited
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "password_hash" in s]
    boots = [s for s in statements if s.lstrip().upper().startswith("UPDATE") and "last_boot_at" in s]
    assert len(reads) < 2 * STORM and len(boots) < 2 * STORM, (len(reads), len(boots))
    async with runtime.sessions() as session:
        rows = (await session.execute(select(Charger).where(Charger.id.like("STORM%")))).scalars().all()
    assert len(rows) == STORM
    assert all(r.registration_status == "Accepted" and r.last_boot_at is not None for r in rows)
    assert all(r.vendor and r.session_id for r in rows)

    async def all_offline() -> bool:
        async with runtime.sessions() as session:
            online = await session.scalars(select(Charger.id).where(Charger.connected.is_(True)))
            return not online.all()

    await until(all_offline, what="every charger of the storm marked offline")


async def test_guesses_for_many_ids_from_one_address_are_still_hashed_at_most_the_limit(
    start_runtime: StartRuntime,
) -> None:
    """The places checks in flight hold keep the address limit's promise: 30 wrong passwords for 30
    registered ids from one address at once hash at most 10; the rest are refused 429."""
    runtime = await start_runtime(login_failures_allowed=10, login_backoff_seconds=60)
    for i in range(30):
        await register(runtime, f"GUESS{i:02d}", password=password(i))
    port = runtime.gateway.port  # type: ignore[union-attr]
    hashed = 0
    real_verify = Verifier.verify

    def counting(self: Verifier, charger_id: str, stored_hash: str, pw: str) -> bool:
        nonlocal hashed
        hashed += 1
        return real_verify(self, charger_id, stored_hash, pw)

    with patch.object(Verifier, "verify", counting):
        codes = await asyncio.gather(
            *(
                refused(port, f"GUESS{i:02d}", additional_headers=basic(f"GUESS{i:02d}", "wrong"))
                for i in range(30)
            )
        )
    assert hashed <= 10, hashed
    assert codes.count(401) == hashed and codes.count(429) == 30 - hashed, codes
