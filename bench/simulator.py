"""Simulator benchmark (SPEC §7: 10,000 simulated chargers in one simulator process).

Starts `chargeops serve` in its own process, then runs a fleet of simulated chargers in this one and reports
how many connected and booted, how long the ramp-up took, and this process's memory per simulated charger.
Prints one JSON document.

    python -m bench.simulator --chargers 10000
    python -m bench.simulator --chargers 10000 --offline

``--offline`` needs no server and measures the charger objects alone, so a refactor of the charger shows up
undiluted by sockets and tasks: memory per charger of the same fleet ``build_fleet`` makes (the RSS growth,
and the Python allocations tracemalloc sees, which do not vary from run to run), then how many charger
ticks per second the core runs with a session on every connector (physics, status, periodic samples; the
samples are queued as offline calls and discarded after each round).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from typing import Any

from bench.gateway import rss_kib, start_server, wait_for_port
from firmware_stubs.fleet import FleetConfig, build_fleet, report, run_fleet


async def run(args: argparse.Namespace, port: int) -> dict[str, Any]:
    await wait_for_port(port)
    config = FleetConfig(
        csms_url=f"ws://127.0.0.1:{port}/ocpp",
        chargers=args.chargers,
        protocol="mixed",
        duration=None,
        session_rate=args.session_rate,
        connect_rate=args.connect_rate,
        seed=1,
    )
    base = rss_kib("self")
    fleet = build_fleet(config)
    started = time.perf_counter()
    task = asyncio.ensure_future(run_fleet(config, fleet))
    deadline = started + args.ramp_timeout
    while time.perf_counter() < deadline:
        if sum(cp.accepted for cp in fleet) == len(fleet):
            break
        await asyncio.sleep(0.5)
    ramp = time.perf_counter() - started
    await asyncio.sleep(args.hold)
    snapshot = report(fleet)
    rss = rss_kib("self")
    cpu0 = time.process_time()
    await asyncio.sleep(args.hold)
    idle_cpu = (time.process_time() - cpu0) / args.hold
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "chargers": len(fleet),
        "connected": snapshot.connected,
        "boots_accepted": snapshot.boots_accepted,
        "ramp_up_s": round(ramp, 1),
        "sessions_started": snapshot.sessions_started,
        "calls_sent": snapshot.calls_sent,
        "errors": snapshot.errors,
        "simulator_rss_kib": rss,
        "kib_per_simulated_charger": round((rss - base) / len(fleet), 1),
        "simulator_cpu_share_steady": round(idle_cpu, 2),
    }


def _config(args: argparse.Namespace, chargers: int | None = None) -> FleetConfig:
    return FleetConfig(
        csms_url="ws://127.0.0.1:9/ocpp",  # never connected
        chargers=args.chargers if chargers is None else chargers,
        protocol="mixed",
        duration=None,
        session_rate=args.session_rate,
        seed=1,
    )


async def offline(args: argparse.Namespace) -> dict[str, Any]:
    """Memory per charger object and core ticks per second, without a server (see the module docstring)."""
    # RSS: the growth from a second fleet while the first is alive, so one-time costs (imports, and the
    # heap holes they leave, which shift by a megabyte with the module layout) are not counted per charger
    warm = build_fleet(_config(args))
    gc.collect()
    base = rss_kib("self")
    fleet = build_fleet(_config(args))
    gc.collect()
    rss_per_charger = (rss_kib("self") - base) * 1024 / len(fleet)
    del fleet, warm
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fleet = build_fleet(_config(args))
    traced_per_charger = (tracemalloc.get_traced_memory()[0] - before) / len(fleet)
    tracemalloc.stop()
    sessions = 0
    for cp in fleet:
        for c in cp.connectors[1:]:
            sessions += cp.remote_start(c.index, "BENCHTAG") is not None
        cp._queue.clear()
    loop = asyncio.get_running_loop()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.rounds):
        now = loop.time()
        for cp in fleet:
            cp._sim_tick()
            cp._sample_periodic(now)
            cp._queue.clear()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "chargers": len(fleet),
        "connectors": sum(len(cp.connectors) - 1 for cp in fleet),
        "sessions": sessions,
        "charger_object_bytes": sys.getsizeof(fleet[0]),
        "traced_bytes_per_charger": round(traced_per_charger),
        "rss_bytes_per_charger": round(rss_per_charger),
        "rounds": args.rounds,
        "charger_ticks_per_s": round(args.rounds * len(fleet) / elapsed),
        "charger_ticks_per_cpu_s": round(args.rounds * len(fleet) / cpu),  # less disturbed by other load
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=10_000)
    p.add_argument("--connect-rate", type=float, default=1000.0, help="new connections per second")
    p.add_argument("--session-rate", type=float, default=0.02, help="EV arrivals per connector per minute")
    p.add_argument("--ramp-timeout", type=float, default=120.0)
    p.add_argument("--hold", type=float, default=10.0, help="seconds to run once all are connected")
    p.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    p.add_argument("--offline", action="store_true", help="no server: charger memory and core tick rate")
    p.add_argument("--rounds", type=int, default=20, help="--offline: ticks per charger")
    args = p.parse_args()
    if args.offline:
        print(json.dumps(asyncio.run(offline(args)), indent=2))
        return
    server, port, _http, _db = start_server(args.database_url)
    try:
        print(json.dumps(asyncio.run(run(args, port)), indent=2))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
