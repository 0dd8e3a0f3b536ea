"""API isolation benchmark (issue 12.4): does a burst of heavy operator API reads slow the chargers down?

Runs `chargeops serve` (all roles, one process, as deployed by default) on Postgres, connects chargers,
seeds transactions, then measures OCPP round trips at a fixed call rate twice: alone (the baseline) and while
a second process fires the heaviest API reads at `--api-rps` (1,000-row pages of chargers and transactions,
tickets, supply risk). Prints one JSON document: p50 / p99 of both runs, their ratio, and the API's answers by
status (a 500 is a failure; 429 / 503 are the API shedding load, which the run reports separately).

    python -m bench.api_load --database-url postgresql+asyncpg://postgres@127.0.0.1/chargeops_bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert

from bench.gateway import ROOT, free_port, open_clients, open_loop, wait_for_port
from chargeops.db.engine import make_engine
from chargeops.db.models import Transaction

TOKEN = "bench-admin-token-0123456789abcdef"
HEAVY_READS = (
    "/api/chargers?limit=1000",
    "/api/transactions?limit=1000",
    "/api/tickets?limit=500",
    "/api/supply-risk",
    "/api/transactions?limit=1000&active=false",
)


def start_server(database_url: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], int, int]:
    port, http = free_port(), free_port()
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--accept-unknown", "--ocpp-port", str(port)]
    cmd += ["--http-port", str(http), "--database-url", database_url, "--heartbeat-interval", "3600", *extra]
    env = {**os.environ, "CHARGEOPS_LOG_LEVEL": "WARNING", "CHARGEOPS_ADMIN_TOKEN": TOKEN}
    return subprocess.Popen(cmd, cwd=ROOT, env=env), port, http


async def seed_transactions(database_url: str, chargers: int, count: int) -> None:
    """Finished sessions spread over the fleet, so the transaction pages are full."""
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    rows = [
        {
            "charger_id": f"BENCH{i % chargers:06d}",
            "transaction_id": f"seed-{i}",
            "evse_id": 1,
            "connector_id": 1,
            "id_token": "SEEDTOKEN",
            "started_at": now - timedelta(minutes=i + 60),
            "stopped_at": now - timedelta(minutes=i),
            "meter_start_wh": 1000.0 * i,
            "meter_last_wh": 1000.0 * i + 7000,
            "meter_stop_wh": 1000.0 * i + 7000,
            "stop_reason": "Local",
            "active": False,
            "updated_at": now,
        }
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(Transaction), rows)
    await engine.dispose()


def api_load(base: str, rps: float, seconds: float, out: Any) -> None:
    """Child process: offers `rps` heavy reads per second whatever the answers do; reports statuses and
    round trips. Bodies are read but not parsed, so this process stays cheap."""

    async def run() -> dict[str, Any]:
        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

            async def one(path: str) -> None:
                t0 = time.perf_counter()
                try:
                    r = await client.get(path)
                    statuses[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - t0)

            tasks = []
            started = time.perf_counter()
            for n in range(int(rps * seconds)):
                delay = started + n / rps - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(HEAVY_READS[n % len(HEAVY_READS)])))
            await asyncio.gather(*tasks)
        latencies.sort()

        def pick(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        return {
            "requests": len(latencies),
            "statuses": dict(statuses),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
        }

    out.put(asyncio.run(run()))


async def measure(args: argparse.Namespace, port: int, http: int) -> dict[str, Any]:
    await wait_for_port(port, 1200)  # migrating an empty database takes a while on a busy machine
    await wait_for_port(http)
    clients = await open_clients(f"ws://127.0.0.1:{port}/ocpp", 0, args.chargers, concurrency=50)
    await seed_transactions(args.database_url, args.chargers, args.transactions)
    await open_loop(clients, args.rate, 3)  # warm-up
    baseline = await open_loop(clients, args.rate, args.duration)
    queue: Any = multiprocessing.get_context("spawn").Queue()
    base = f"http://127.0.0.1:{http}"
    loader = multiprocessing.get_context("spawn").Process(
        target=api_load, args=(base, args.api_rps, args.duration + 2, queue)
    )
    loader.start()
    await asyncio.sleep(1)  # the reads are under way before the loaded run starts
    loaded = await open_loop(clients, args.rate, args.duration)
    api = await asyncio.to_thread(queue.get, True, 600)
    await asyncio.to_thread(loader.join, 30)
    for c in clients:
        c.reader.cancel()
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return {
        "chargers": args.chargers,
        "ocpp_calls_per_s": args.rate,
        "api_reads_per_s": args.api_rps,
        "ocpp_baseline": baseline,
        "ocpp_with_api_load": loaded,
        "p99_ratio": round(loaded["p99_ms"] / max(0.01, baseline["p99_ms"]), 2),
        "api": api,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="an empty Postgres database (it is filled)")
    p.add_argument("--chargers", type=int, default=1000)
    p.add_argument("--transactions", type=int, default=20_000, help="finished sessions seeded")
    p.add_argument("--rate", type=float, default=40, help="OCPP calls/s in both runs")
    p.add_argument("--api-rps", type=float, default=20, help="heavy API reads/s in the loaded run")
    p.add_argument("--duration", type=float, default=30, help="seconds per run")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `serve` argument (repeatable)")
    args = p.parse_args()
    server, port, http = start_server(args.database_url, args.serve_arg)
    try:
        print(json.dumps(asyncio.run(measure(args, port, http)), indent=2))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
