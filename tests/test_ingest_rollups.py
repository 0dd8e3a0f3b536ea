"""Rollups equal a brute-force aggregation of the raw samples after incremental runs, late samples too."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, MeterRollup1h, MeterRollup1m, MeterSample, SiteRollup1h, SiteRollup1m
from chargeops.events import Event, MeterValues, Sample
from telemetry import rollups
from telemetry.ingest import store_events
from telemetry.rollups import ENERGY, POWER, claim, roll_up, run_rollups
from tests.conftest import migrated_sessions

T0 = datetime(2026, 11, 25, 9, 50, tzinfo=UTC)
Sessions = async_sessionmaker[AsyncSession]
Key = tuple[Any, ...]


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(db_url) as made:
        yield made


def readings(cp: str, evse: int, start: datetime, minutes: int, wh0: float, seed: int) -> list[Event]:
    """A sample every 20 s: energy register (kWh on EVSE 2, to check units), total and per-phase power."""
    rnd = random.Random(seed)
    out, wh = [], wh0
    for i in range(minutes * 3):
        at = start + timedelta(seconds=20 * i)
        wh += rnd.uniform(0, 100)
        kwh = evse == 2
        samples = [
            Sample(ENERGY, wh / 1000 if kwh else wh, "kWh" if kwh else "Wh", sampled_at=at),
            Sample(POWER, rnd.uniform(0, 11), "kW", sampled_at=at),
            Sample(POWER, rnd.uniform(0, 4000), "W", phase="L1", sampled_at=at),
        ]
        out.append(Event(cp, MeterValues(evse, evse, "T", samples), reported_at=at))
    return out


def _scale(unit: str | None) -> float:
    return 1000.0 if unit in ("kW", "kWh") else 1.0


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def brute_force(sessions: Sessions) -> dict[str, dict[Key, tuple[float, ...]]]:
    async with sessions() as s:
        samples = (await s.execute(select(MeterSample))).scalars().all()
        sites = {c.id: c.site or "" for c in (await s.execute(select(Charger))).scalars()}
    groups: dict[Key, list[MeterSample]] = defaultdict(list)
    for m in samples:
        bucket = _utc(m.sampled_at).replace(second=0, microsecond=0)
        groups[(m.charger_id, m.evse_id, m.measurand, m.phase or "", bucket)].append(m)
    minute: dict[Key, list[float]] = {}
    for key, rows in groups.items():
        values = [r.value * _scale(r.unit) for r in rows]
        last = max(rows, key=lambda r: (_utc(r.sampled_at), r.event_id, r.idx))
        minute[key] = [
            len(rows),
            min(values),
            max(values),
            sum(values) / len(rows),
            last.value * _scale(last.unit),
        ]
        minute[key].append(0.0)
    previous: dict[Key, float] = {}
    for key in sorted(k for k in minute if k[2] == ENERGY and k[3] == ""):
        row, series = minute[key], key[:4]
        row[5] = max(0.0, row[4] - previous[series]) if series in previous else row[2] - row[1]
        previous[series] = row[4]
    hour: dict[Key, list[float]] = {}
    for key, (n, lo, hi, avg, _last, energy) in sorted(minute.items()):
        hkey = (*key[:4], key[4].replace(minute=0))
        h = hour.setdefault(hkey, [0, lo, hi, 0.0, 0.0, 0.0])
        h[0] += n
        h[1], h[2] = min(h[1], lo), max(h[2], hi)
        h[3] += avg * n
        h[4] = _last  # sorted by bucket: the latest minute wins
        h[5] += energy
    for h in hour.values():
        h[3] /= h[0]
    result: dict[str, dict[Key, tuple[float, ...]]] = {"1m": {}, "1h": {}, "site_1m": {}, "site_1h": {}}
    for name, table in (("1m", minute), ("1h", hour)):
        site: dict[Key, list[float]] = {}
        for key, row in table.items():
            result[name][key] = (row[0], row[1], row[2], row[3], row[4]) + (
                (row[5],) if key[2] == ENERGY else ()
            )
            if key[3] == "":
                s = site.setdefault((sites.get(key[0], ""), key[4]), [0.0, 0.0, 0.0])
                if key[2] == POWER:
                    s[0] += row[3]
                    s[1] += row[2]
                elif key[2] == ENERGY:
                    s[2] += row[5]
        result[f"site_{name}"] = {k: tuple(v) for k, v in site.items()}
    return result


async def stored(sessions: Sessions) -> dict[str, dict[Key, tuple[float, ...]]]:
    result: dict[str, dict[Key, tuple[float, ...]]] = {}
    async with sessions() as s:
        for name, model in (("1m", MeterRollup1m), ("1h", MeterRollup1h)):
            rows = (await s.execute(select(model))).scalars().all()
            result[name] = {
                (r.charger_id, r.evse_id, r.measurand, r.phase, _utc(r.bucket)): (
                    r.samples,
                    r.min,
                    r.max,
                    r.avg,
                    r.last,
                )
                + ((r.energy_wh,) if r.measurand == ENERGY else ())
                for r in rows
            }
        for name, site_model in (("site_1m", SiteRollup1m), ("site_1h", SiteRollup1h)):
            sites = (await s.execute(select(site_model))).scalars().all()
            result[name] = {
                (r.site, _utc(r.bucket)): (r.power_avg_w, r.power_max_w, r.energy_wh) for r in sites
            }
    return result


def assert_same(
    got: dict[str, dict[Key, tuple[float, ...]]], want: dict[str, dict[Key, tuple[float, ...]]]
) -> None:
    for name in want:
        assert got[name].keys() == want[name].keys(), name
        for key, values in want[name].items():
            assert got[name][key] == pytest.approx(values, rel=1e-9, abs=1e-6), (name, key)


async def test_incremental_rollups_match_brute_force(sessions: Sessions) -> None:
    async with sessions() as s, s.begin():
        s.add_all([Charger(id="A", site="north"), Charger(id="B", site="north"), Charger(id="C")])
    a1 = readings("A", 1, T0, 30, 5000.0, 1)
    a2 = readings("A", 2, T0, 30, 9000.0, 2)
    b1 = readings("B", 1, T0 + timedelta(minutes=5), 20, 100.0, 3)
    c1 = readings("C", 1, T0, 30, 0.0, 4)  # no site
    stream = sorted([*a1, *a2, *b1, *c1], key=lambda e: e.reported_at or T0)
    held_back = stream[10:200:9]  # arrive late, into buckets already rolled up
    on_time = [e for e in stream if e not in held_back]
    for i in range(0, len(on_time), 40):
        await store_events(sessions, on_time[i : i + 40])
        if i % 120 == 0:
            assert await run_rollups(sessions) > 0
    await run_rollups(sessions)
    assert_same(await stored(sessions), await brute_force(sessions))
    await store_events(sessions, held_back[::2])
    await store_events(sessions, held_back)  # partly re-delivered
    assert await run_rollups(sessions) > 0
    assert await run_rollups(sessions) == 0  # nothing left marked
    want = await brute_force(sessions)
    assert_same(await stored(sessions), want)
    total = sum(v[2] for v in want["site_1h"].values())
    assert total == pytest.approx(sum(v[5] for k, v in want["1h"].items() if k[2] == ENERGY))


async def test_ingest_never_waits_for_a_recomputation_and_a_failed_one_is_redone(pg_url: str) -> None:
    """The recomputation runs in its own transaction after the claim: an ingest commit marking the very
    bucket being recomputed goes through at once (it used to wait for the whole rollup run), and a run that
    fails leaves its claims for the next."""
    async with migrated_sessions(pg_url) as sessions:
        first = readings("A", 1, T0, 2, 100.0, 5)
        await store_events(sessions, first)
        assert await _in_transaction(sessions, claim) > 0
        async with sessions() as session, session.begin():
            assert await roll_up(await session.connection()) > 0  # holds its locks until this block ends
            late = readings("A", 1, T0 + timedelta(seconds=5), 2, 100.5, 6)
            await asyncio.wait_for(store_events(sessions, late), 5)

        await store_events(sessions, readings("A", 1, T0 + timedelta(seconds=7), 2, 100.7, 7))
        await _in_transaction(sessions, claim)
        with pytest.raises(RuntimeError):
            async with sessions() as session, session.begin():
                assert await roll_up(await session.connection()) > 0
                raise RuntimeError("the rollup run dies before committing")
        assert await run_rollups(sessions) > 0  # the failed run's claims, and the late marks
        assert await run_rollups(sessions) == 0
        assert_same(await stored(sessions), await brute_force(sessions))


async def _in_transaction(sessions: Sessions, step: Callable[[AsyncConnection], Awaitable[int]]) -> int:
    async with sessions() as session, session.begin():
        return await step(await session.connection())


async def test_a_claim_neither_waits_for_nor_loses_a_mark_an_ingest_transaction_holds(pg_url: str) -> None:
    """An ingest transaction marking a bucket that is marked already holds that mark's row until it commits.
    The claim skips it and moves the rest: claiming every mark in one `DELETE` waited for that transaction
    (and every ingest commit behind the claim waited in turn), or deadlocked against it. The skipped mark is
    there for the next run, so the late samples are rolled up."""
    async with migrated_sessions(pg_url) as sessions:
        await store_events(sessions, readings("A", 1, T0, 2, 100.0, 5) + readings("B", 1, T0, 2, 50.0, 6))
        late = readings("A", 1, T0 + timedelta(seconds=5), 1, 100.5, 7)
        async with sessions() as session, session.begin():
            conn = await session.connection()
            await conn.execute(
                text(
                    "INSERT INTO meter_rollup_dirty (charger_id, bucket) VALUES ('A', :b) "
                    "ON CONFLICT (charger_id, bucket) DO UPDATE SET bucket = excluded.bucket"
                ),
                {"b": T0},
            )
            done = await asyncio.wait_for(run_rollups(sessions), 5)  # waited for this block before
            assert done > 0
        async with sessions() as session:
            held = (await session.execute(text("SELECT charger_id FROM meter_rollup_dirty"))).scalars().all()
        assert held == ["A"]  # skipped, not lost
        await store_events(sessions, late)
        assert await run_rollups(sessions) > 0
        assert await run_rollups(sessions) == 0
        assert_same(await stored(sessions), await brute_force(sessions))


async def test_a_claim_moves_marks_a_chunk_at_a_time(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """More marks than a chunk: the run claims chunk after chunk in transactions of their own, and rolls up
    every bucket."""
    monkeypatch.setattr(rollups, "CLAIM_CHUNK", 3)
    async with migrated_sessions(pg_url) as sessions:
        events = [ev for cp in "ABCDEFG" for ev in readings(cp, 1, T0, 2, 10.0, ord(cp))]
        await store_events(sessions, events)
        assert await _in_transaction(sessions, claim) == 3
        assert await run_rollups(sessions) == 7 * 2  # 7 chargers x 2 minutes, the first chunk's too
        assert_same(await stored(sessions), await brute_force(sessions))
