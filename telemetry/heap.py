"""The interpreter's heap in a process that holds thousands of long-lived connections.

Start-up freezes what it allocated (`ops.cli_loop.tune_interpreter`), but the chargers connect later: each
connection is a few hundred objects (socket, protocol, tasks, session) that the collector's full passes walk
again and again although they live for days, a stop-the-world pause that grows with the fleet (~0.9 s seen
with 10,000 connected, `bench/gateway.py`). `HeapKeeper` freezes again once a wave of connections has
settled: when at least `min_new` connections opened since the last freeze and none for `settle` seconds,
it unfreezes, collects once (which also frees what the connections closed meanwhile left in reference
cycles, so frozen garbage does not pile up) and freezes what is left. That pause is taken once, right after
a connection storm, instead of again and again under load.

Observed: `chargeops_gc_pause_seconds{generation}` (every collection, through `gc.callbacks`),
`chargeops_event_loop_lag_seconds` (how late a sleeping task wakes), `chargeops_heap_refreezes_total`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

from telemetry.periodic import Background, Periodic

log = logging.getLogger(__name__)

_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_PAUSE = Histogram(
    "chargeops_gc_pause_seconds",
    "stop-the-world garbage collections of this process, by generation",
    ["generation"],
    buckets=_PAUSE_BUCKETS,
)
LOOP_LAG = Histogram(
    "chargeops_event_loop_lag_seconds",
    "how much later than asked a sleeping task of the event loop woke (the loop was busy or paused)",
    buckets=_PAUSE_BUCKETS,
)
REFREEZES = Counter("chargeops_heap_refreezes_total", "settled connection waves frozen out of the collector")

_started: list[float] = []


def _observe(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_PAUSE.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _started.pop())


def observe_gc() -> None:
    """Time every collection of this process (once per process)."""
    if _observe not in gc.callbacks:
        gc.callbacks.append(_observe)


class LoopLag(Background):
    """Sleeps `interval` seconds at a time and records how much later it woke."""

    name = "loop lag"

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            LOOP_LAG.observe(max(0.0, loop.time() - asked))


class HeapKeeper(Periodic):
    """Freezes the heap again after a wave of new connections has settled (see the module's docstring).
    `opened` counts the connections opened so far; `now` is a monotonic clock (seconds)."""

    name = "heap keeper"

    def __init__(
        self,
        opened: Callable[[], int],
        *,
        min_new: int = 1000,
        settle: float = 10.0,
        interval: float = 5.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval)
        self._opened = opened
        self._min_new = min_new
        self._settle = settle
        self._now = now
        self._frozen_at = opened()  # connections opened when the heap was last frozen
        self._seen = self._frozen_at
        self._changed = now()

    async def step(self) -> None:
        self.check()

    def check(self) -> bool:
        """Freeze again if due; whether it did."""
        opened, now = self._opened(), self._now()
        if opened != self._seen:
            self._seen, self._changed = opened, now
            return False
        if opened - self._frozen_at < self._min_new or now - self._changed < self._settle:
            return False
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        new, self._frozen_at = opened - self._frozen_at, opened
        REFREEZES.inc()
        log.info(
            "heap frozen again after %d new connections: %d objects frozen, %d freed, %.0f ms",
            new,
            gc.get_freeze_count(),
            freed,
            (time.perf_counter() - started) * 1000,
        )
        return True


class YoungCollector(Background):
    """Collects the young and the middle generation together every `interval` seconds, and the rest of the
    heap (what is not frozen) every `old_interval` seconds, so that no collection has much to walk.

    CPython (3.11) starts a young collection when allocations minus deallocations pass the first threshold,
    and counts the deallocation of an object of any generation against it. A gateway replaces long-lived
    objects all the time: each connection's pending receive (~13 coroutines, futures, generators and the
    last frame inside `websockets`) is freed and made anew with every message. The count stays near zero
    while the young generation grows by ~30,000 objects a second at 2,500 calls/s, and the collection that
    at last comes walks 60,000-160,000 objects: stop-the-world pauses of 40-120 ms at 10,000 connected
    (`bench/gateway.py`). On a clock each pass walks what a fifth of a second left: ~4 ms.

    Both younger generations at once because a pending receive lives for seconds (until its charger's
    next message): one walked young and promoted is walked again in the middle generation, and a middle
    pass once a second walked a second of them, 20-30 ms. Taken together each is walked once and no pass
    holds more than a fifth of a second's worth (GC time per 10 s at 2,500 calls/s: 0.18-0.23 s, was
    0.35-0.41 s). The price: reference cycles that are still alive at a pass are promoted to the old
    generation sooner (~50 objects a second at that rate, 10 before), which no count-based trigger
    collects here; the pass every `old_interval` frees them (~100-200 ms with 10,000 connected, once in
    ten minutes).

    A pass walks what was made since the last one and is still alive. Under 2x overload 10,000 calls wait
    ~1 s each, so a pass every fifth of a second found nearly all of them alive: 30-40 ms a pass, 17 % of
    the loop (py-spy, `bench/gateway.py`). A slow pass therefore spaces out the next (`next_wait`): more of
    what it would walk has ended by then, and passes take at most `budget` of the loop. The count-based
    trigger, which the bursts of an overloaded gateway (a commit of 5,000 calls answered at once, the next
    5,000 read) still set off every ~60 ms, walked those calls young once more before a pass walked them
    again: 1.0-1.4 s of each 10 s under overload. While this collector runs it only guards against a burst
    (`start`).
    """

    name = "young collector"

    def __init__(
        self,
        interval: float = 0.2,
        old_interval: float = 600.0,
        budget: float = 0.04,
        safety_net: int = 1_000_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._old_interval = old_interval
        self._budget = budget
        self._safety_net = safety_net
        self._now = now
        self._thresholds: tuple[int, ...] | None = None

    def start(self) -> None:
        """Takes the young generations over from the count-based trigger, which is left as a safety net
        for a burst (`safety_net` allocations more than deallocations between two passes)."""
        self._thresholds = gc.get_threshold()
        gc.set_threshold(self._safety_net, *self._thresholds[1:])
        super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def next_wait(self, pause: float) -> float:
        """Seconds until the next pass after one that took `pause`: `interval`, or longer when passes are
        slow, so that they take at most `budget` of the loop's time."""
        return max(self._interval, pause / self._budget)

    async def _run(self) -> None:
        old_at = self._now()
        wait = self._interval
        while True:
            await asyncio.sleep(wait)
            if not gc.isenabled():  # whoever turned the collector off meant it
                continue
            started = self._now()
            if started - old_at >= self._old_interval:
                old_at = started
                gc.collect()
            else:
                gc.collect(1)
            wait = self.next_wait(self._now() - started)
