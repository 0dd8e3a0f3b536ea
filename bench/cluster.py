"""Several gateways, one fleet (issue 14.4), measured: the lab of tests/test_cluster.py (gateway hosts in
network namespaces behind HAProxy on docker/haproxy/cluster.cfg, 2 ingest, ops, API, private Mosquitto and
Postgres) with a fleet of thousands of chargers, each with an open transaction sending meter values.

Measures: how fast the fleet connects through the balancer and how it spreads; command round trips from the
API to chargers on every gateway; after `kill -9` of one gateway, how long its chargers take to be back on
the others; how many new chargers a gateway added later takes; and, once every transaction is stopped,
whether anything a charger was acknowledged is missing from the database. Needs root (`ip netns`).
Prints one JSON document.

    python -m bench.cluster --chargers 3000 --gateways 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from typing import Any

from tests.cluster_fleet import SimCharger, own_address, run_fleet, until_stored
from tests.cluster_lab import START_TIMEOUT, Lab, metric_sum


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3) if ordered else 0.0


async def connected(lab: Lab) -> dict[str, int]:
    out = {}
    for g in lab.gateways:
        if g.proc is not None and g.proc.popen.poll() is None:
            out[g.name] = int(metric_sum(await lab.metrics(g), "chargeops_chargers_connected"))
    return out


async def wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def commands(lab: Lab, chargers: list[SimCharger], n: int) -> dict[str, Any]:
    """`n` ClearCache commands from the API, one at a time, to chargers picked at random."""
    times, outcomes = [], []
    async with lab.api() as api:
        for c in random.sample(chargers, min(n, len(chargers))):
            t0 = time.perf_counter()
            r = await api.post(f"/api/chargers/{c.id}/ocpp/ClearCache", json={})
            times.append(time.perf_counter() - t0)
            outcomes.append(r.status_code)
    return {
        "sent": len(times),
        "answered_200": outcomes.count(200),
        "p50_ms": round(pct(times, 0.5) * 1000, 1),
        "p99_ms": round(pct(times, 0.99) * 1000, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n, gws = args.chargers, args.gateways
    ids = [f"BC{i:06d}" for i in range(n + args.late)]
    result: dict[str, Any] = {"chargers": n, "gateways": gws, "load_average_start": load()}
    t0 = time.monotonic()
    lab = await Lab.open(hosts=gws + 1, serving=gws, chargers=ids)
    try:
        first, spare = lab.gateways[:gws], lab.gateways[gws]
        await lab.until_up({g.name for g in first}, timeout=START_TIMEOUT)
        result["lab_start_s"] = round(time.monotonic() - t0, 1)

        fleet = [SimCharger(ids[i], lab.url, args.interval, own_address(i)) for i in range(n)]
        stop = asyncio.Event()
        t1 = time.monotonic()
        running = asyncio.ensure_future(run_fleet(fleet, stop, concurrency=args.concurrency))
        ok = await wait(lambda: all(c.record.started for c in fleet), 600)
        took = time.monotonic() - t1
        result["fleet_connected"] = {
            "all_started": ok,
            "seconds": round(took, 1),
            "chargers_per_s": round(n / took, 1),
            "refused_503": sum(c.record.refusals.count(503) for c in fleet),
            "per_gateway": await connected(lab),
        }
        await asyncio.sleep(args.settle)
        result["commands"] = await commands(lab, fleet, args.commands)

        before = sum(len(c.record.samples) for c in fleet)
        t2 = time.monotonic()
        await asyncio.sleep(args.steady)
        acked = sum(len(c.record.samples) for c in fleet) - before
        result["steady_meter_values_acked_per_s"] = round(acked / (time.monotonic() - t2), 1)

        victim = first[0]
        where = await lab.placement()
        moved = [c for c in fleet if where[c.id] == victim.name]
        per_gw_before = await connected(lab)
        assert victim.proc is not None
        killed_at = time.monotonic()
        victim.proc.kill9()
        back = await wait(lambda: all(c.record.connects[-1] > killed_at for c in moved), 120)
        delays = [c.record.connects[-1] - killed_at for c in moved if c.record.connects[-1] > killed_at]
        result["kill_9"] = {
            "gateway": victim.name,
            "held_before": per_gw_before.get(victim.name),
            "chargers_moved": len(moved),
            "all_back": back,
            "back_p50_s": round(pct(delays, 0.5), 1),
            "back_p99_s": round(pct(delays, 0.99), 1),
            "back_max_s": round(max(delays, default=0.0), 1),
            "refused_503_while_moving": sum(c.record.refusals.count(503) for c in moved),
            "per_gateway_after": await connected(lab),
            "load_average": load(),
        }
        result["commands_after_kill"] = await commands(lab, moved or fleet, args.commands // 2)

        await lab.start_gateway(spare)
        await lab.until_up({spare.name})
        late = [SimCharger(ids[i], lab.url, args.interval, own_address(i)) for i in range(n, n + args.late)]
        late_running = asyncio.ensure_future(run_fleet(late, stop, concurrency=args.concurrency))
        await wait(lambda: all(c.record.started for c in late), 120)
        result["gateway_added"] = {"late_chargers": len(late), "per_gateway": await connected(lab)}

        stop.set()
        t3 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(running, late_running), 300)
        everyone = fleet + late
        gap = await until_stored(lab.db_url, everyone, timeout=120)
        result["end"] = {
            "transactions_stopped": sum(c.record.stopped for c in everyone),
            "transactions_started": sum(c.record.started is not None for c in everyone),
            "meter_values_acked": sum(len(c.record.samples) for c in everyone),
            "acked_samples_missing_in_db": len(gap.samples),
            "acked_starts_missing": len(gap.starts),
            "acked_stops_missing": len(gap.stops),
            "stop_and_store_s": round(time.monotonic() - t3, 1),
        }
        result["load_average_end"] = load()
        return result
    finally:
        await asyncio.to_thread(lab.close)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=3000)
    p.add_argument("--gateways", type=int, default=3, help="gateways from the start (one more is added)")
    p.add_argument("--late", type=int, default=100, help="chargers connecting after the gateway is added")
    p.add_argument("--interval", type=float, default=60.0, help="s between a charger's meter values")
    p.add_argument("--concurrency", type=int, default=200, help="handshakes in flight while connecting")
    p.add_argument("--commands", type=int, default=40, help="API commands timed before the kill")
    p.add_argument("--settle", type=float, default=5.0, help="s after the fleet connected")
    p.add_argument("--steady", type=float, default=20.0, help="s of meter values counted")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
