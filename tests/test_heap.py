"""`telemetry.heap`: the heap frozen again once a wave of connections has settled (and not before), frozen
garbage freed when it is; GC pauses and event-loop lag measured."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from telemetry.heap import HeapKeeper, LoopLag, YoungCollector, observe_gc


class Cycle:
    """A connection's objects as the collector sees them: kept alive only by a reference cycle."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process's heap as it was


def test_frozen_again_only_after_enough_new_connections_and_a_quiet_spell() -> None:
    opened, now = [0], [100.0]
    keeper = HeapKeeper(lambda: opened[0], min_new=1000, settle=10.0, now=lambda: now[0])
    opened[0] = 600
    now[0] += 60
    assert not keeper.check()  # a change: the wave is still coming
    now[0] += 60
    assert not keeper.check()  # settled, but only 600 new
    opened[0] = 1200
    assert not keeper.check()
    now[0] += 5
    assert not keeper.check()  # 5 s without a new connection: not settled yet
    now[0] += 6
    assert keeper.check()
    assert gc.get_freeze_count() > 0
    now[0] += 60
    assert not keeper.check()  # nothing new since
    opened[0] = 1900
    now[0] += 1
    keeper.check()
    now[0] += 20
    assert not keeper.check()  # 700 new since the last freeze


def test_garbage_frozen_with_the_last_wave_is_freed_when_the_next_one_is_frozen() -> None:
    gone = Cycle()
    alive = weakref.ref(gone)
    gc.freeze()  # the wave it belonged to was frozen while it was in use
    del gone  # its connection closed: garbage, but frozen garbage the collector never visits
    gc.collect()
    assert alive() is not None
    opened, now = [0], [0.0]
    keeper = HeapKeeper(lambda: opened[0], min_new=1, settle=1.0, now=lambda: now[0])
    opened[0] = 5
    keeper.check()
    now[0] += 2
    assert keeper.check()
    assert alive() is None


def test_collections_are_timed_by_generation() -> None:
    observe_gc()
    observe_gc()  # once per process, however often asked

    def count() -> float:
        return REGISTRY.get_sample_value("chargeops_gc_pause_seconds_count", {"generation": "2"}) or 0.0

    before = count()
    gc.collect()
    assert count() == before + 1


async def test_loop_lag_sees_a_blocked_loop() -> None:
    def lag_sum() -> float:
        return REGISTRY.get_sample_value("chargeops_event_loop_lag_seconds_sum") or 0.0

    before = lag_sum()
    lag = LoopLag(interval=0.05)
    lag.start()
    try:
        await asyncio.sleep(0.1)
        held = time.perf_counter() + 0.3
        while time.perf_counter() < held:  # the loop held, as by a long collection or a CPU-bound step
            pass
        await asyncio.sleep(0.1)
    finally:
        await lag.stop()
    assert lag_sum() - before >= 0.2


async def test_the_young_generation_is_collected_on_a_clock_when_allocations_only_replace() -> None:
    """Replacing long-lived objects one for one (a gateway's pending receives) keeps allocations minus
    deallocations flat, so the count-based trigger never fires and the young generation only grows; the
    collector walks it on a clock instead, a little at a time."""
    keep: list[list[int]] = [[] for _ in range(5000)]
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1_000_000, 50, 1000)  # nothing count-based in this test
    collector = YoungCollector(interval=0.01)
    collector.start()
    try:
        for i in range(20_000):
            keep[i % len(keep)] = [i]  # frees an old list, allocates a young one
            if i % 200 == 0:
                await asyncio.sleep(0.002)
        young = len(gc.get_objects(0))
    finally:
        await collector.stop()
        gc.set_threshold(*thresholds)
    assert young < 2000  # without the collector: every list made, 5,000+


async def test_cycles_promoted_while_alive_are_freed_by_the_old_pass() -> None:
    """A cycle still alive at a young pass is promoted past the younger generations; once garbage, only
    a pass of the old generation frees it, and the collector makes one every `old_interval`."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1_000_000, 50, 1_000_000)  # nothing count-based in this test
    freed: list[int] = []
    cycles = [Cycle() for _ in range(100)]
    refs = [weakref.ref(c, lambda _: freed.append(1)) for c in cycles]
    gc.collect(1)  # alive: promoted to the old generation
    del cycles
    collector = YoungCollector(interval=0.01, old_interval=3600.0)
    collector.start()
    try:
        await asyncio.sleep(0.1)
        assert not freed  # the young passes do not reach them
    finally:
        await collector.stop()
    collector = YoungCollector(interval=0.01, old_interval=0.05)
    collector.start()
    try:
        await asyncio.sleep(0.2)
    finally:
        await collector.stop()
        gc.set_threshold(*thresholds)
    assert len(freed) == len(refs)


def test_a_slow_pass_spaces_out_the_next_within_the_budget() -> None:
    """~4 ms passes keep the interval; a 40 ms pass (under overload a pass finds the calls in flight
    alive) waits a second, so passes stay within 4 % of the loop."""
    collector = YoungCollector(interval=0.2, budget=0.04)
    assert collector.next_wait(0.004) == 0.2
    assert collector.next_wait(0.04) == pytest.approx(1.0)


async def test_the_collector_makes_fewer_passes_when_each_takes_long() -> None:
    ticks = iter(range(1_000_000))

    def slow_clock() -> float:
        return next(ticks) * 0.01  # read twice a pass: each pass looks 10 ms long

    passes = []
    for collector in (
        YoungCollector(interval=0.001, budget=1.0),  # never waits longer than a pass took
        YoungCollector(interval=0.001, budget=0.25, now=slow_clock),
    ):
        before = gc.get_stats()[1]["collections"]
        collector.start()
        try:
            await asyncio.sleep(0.3)
        finally:
            await collector.stop()
        passes.append(gc.get_stats()[1]["collections"] - before)
    fast, slow = passes
    assert slow <= 0.3 / 0.04 + 1  # 10 ms / 25 % = one pass per 40 ms at most
    assert fast > 3 * slow


async def test_while_it_runs_the_count_based_trigger_is_only_a_safety_net() -> None:
    """Young passes are the collector's: allocations that pass the usual threshold many times over start
    none, and the thresholds are as they were once it stops."""
    thresholds = gc.get_threshold()
    many = max(50_000, 20 * thresholds[0])
    collector = YoungCollector(interval=0.01, safety_net=4 * many)
    collector.start()
    try:
        assert gc.get_threshold() == (4 * many, *thresholds[1:])
        before = gc.get_stats()[0]["collections"]
        kept = [[i] for i in range(many)]
        counted = gc.get_stats()[0]["collections"] - before
    finally:
        await collector.stop()
    assert len(kept) == many
    assert counted == 0
    assert gc.get_threshold() == thresholds
