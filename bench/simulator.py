"""Simulator benchmark (SPEC §7: 10,000 simulated chargers in one simulator process).

Starts `chargeops serve` in its own process, then runs a fleet of simulated chargers in this one and reports
how many connected and booted, how long the ramp-up took, and this process's memory per simulated charger.
Prints one JSON document.

    python -m bench.simulator --chargers 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=10_000)
    p.add_argument("--connect-rate", type=float, default=1000.0, help="new connections per second")
    p.add_argument("--session-rate", type=float, default=0.02, help="EV arrivals per connector per minute")
    p.add_argument("--ramp-timeout", type=float, default=120.0)
    p.add_argument("--hold", type=float, default=10.0, help="seconds to run once all are connected")
    p.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    args = p.parse_args()
    server, port, _http, _db = start_server(args.database_url)
    try:
        print(json.dumps(asyncio.run(run(args, port)), indent=2))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
