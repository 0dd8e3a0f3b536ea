"""The in-process bus hands a busy listener what piled up in one call, so a listener that does a query per
call catches up (`bench.soak` found the ops engine one publish per call behind until its queue overflowed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from chargeops.events import Event, Heartbeat
from telemetry.bus import InProcessBus


async def test_a_busy_listener_gets_the_backlog_in_one_call_in_order() -> None:
    bus = InProcessBus(max_batch=50)
    calls: list[list[str]] = []
    release = asyncio.Event()

    async def slow(events: Sequence[Event]) -> None:
        calls.append([e.charger_id for e in events])
        await release.wait()

    bus.subscribe(slow)
    await bus.publish([Event("CP0", Heartbeat())])
    await asyncio.sleep(0.01)  # the listener took the first batch and is busy with it
    for n in range(1, 80):
        await bus.publish([Event(f"CP{n}", Heartbeat())])
    release.set()
    for _ in range(100):
        if sum(map(len, calls)) == 80:
            break
        await asyncio.sleep(0.01)
    await bus.close()
    assert [len(c) for c in calls] == [1, 50, 29]  # not 80 calls; at most max_batch events per call
    assert [cid for c in calls for cid in c] == [f"CP{n}" for n in range(80)]
