"""Connection-setup benchmark (SPEC §7, issue 14): how many registered chargers a gateway process lets in per
second when they all arrive at once, TLS off.

N chargers are registered with a password each (argon2-hashed once, as `chargeops chargers add` does), then
`chargeops serve` is started and stormed: every charger opens its WebSocket with Basic auth at the same
moment and sends BootNotification. The first storm meets a cold server (every password must be hashed: the
argon2 cost bounds it); then every charger connects once, 20 at a time, and the measured reconnect storms
follow (the gateway kept running, as after a network or broker blip, so each credential is one it verified
before). `--server stock` storms the stock `ocpp` library's minimal central system (`bench.stock_csms`: no
storage, no authentication) instead, for comparison. Prints one JSON document.

    python -m bench.handshakes --chargers 1000 --storms 3 [--database-url postgresql+asyncpg://…]
    python -m bench.handshakes --addresses 250          # chargers spread over 250 source addresses
    python -m bench.handshakes --mqtt-url mqtt://127.0.0.1:1883   # a gateway process alone (--roles gateway)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import orjson
from sqlalchemy import insert
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bench.gateway import ROOT, boot_payload, cpu_seconds, free_port, wait_for_port
from chargeops.db.engine import make_engine
from chargeops.db.migrate import upgrade
from chargeops.db.models import Charger
from chargeops.passwords import hash_password


def charger_id(i: int) -> str:
    return f"HS{i:06d}"


def password_of(i: int) -> str:
    return f"bench-password-{i:06d}"  # 21 characters: a valid OCPP 2.x password, 16-40


async def seed(database_url: str, chargers: int) -> None:
    """A fresh database with `chargers` registered chargers (security profile 1, a password each)."""
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:  # argon2 releases the GIL
        hashes = list(pool.map(lambda i: hash_password(password_of(i)), range(chargers)))
    engine = make_engine(database_url)
    try:
        await upgrade(engine)
        rows = [
            {
                "id": charger_id(i),
                "password_hash": hashes[i],
                "security_profile": 1,
                "kind": "charger",
                "admission": "accepted",
                "connected": False,
            }
            for i in range(chargers)
        ]
        async with engine.begin() as conn:
            await conn.execute(insert(Charger), rows)
    finally:
        await engine.dispose()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


async def storm(
    url: str, chargers: int, *, boot: bool = True, wave: int | None = None, addresses: int = 1
) -> dict[str, Any]:
    """Every charger connects at once (`wave`: at most that many at a time), from one of `addresses` source
    addresses (127.0.0.1, .2, …: chargers behind one router, or each on its own); the figures of the storm.
    Connections stay open until all are in."""
    opened: list[float] = []
    booted: list[float] = []
    ends: list[float] = []
    refused: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    retry_after_missing = 0
    held: list[ClientConnection] = []
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal retry_after_missing
        protocol = "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1"
        token = base64.b64encode(f"{charger_id(i)}:{password_of(i)}".encode()).decode()
        t0 = time.perf_counter()
        try:
            ws = await connect(
                f"{url}/{charger_id(i)}",
                subprotocols=[Subprotocol(protocol)],
                additional_headers={"Authorization": f"Basic {token}"},
                compression=None,
                ping_interval=None,
                max_queue=4,
                open_timeout=30,
                local_addr=(f"127.0.{i % addresses // 250}.{i % addresses % 250 + 1}", 0),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            refused[str(status)] += 1
            retry_after_missing += status == 503 and "Retry-After" not in exc.response.headers
            return
        except Exception as exc:  # timeouts, resets: dropped without an HTTP answer
            failed[type(exc).__name__] += 1
            return
        held.append(ws)
        t1 = time.perf_counter()
        opened.append(t1 - t0)
        if boot:
            try:
                await ws.send(orjson.dumps([2, "1", "BootNotification", boot_payload(protocol)]).decode())
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
            except Exception as exc:
                failed[f"boot:{type(exc).__name__}"] += 1
                return
            booted.append(time.perf_counter() - t0)
        ends.append(time.perf_counter())

    gate = asyncio.Semaphore(wave or chargers)

    async def gated(i: int) -> None:
        async with gate:
            await one(i)

    await asyncio.gather(*(gated(i) for i in range(chargers)))
    elapsed = (max(ends) if ends else time.perf_counter()) - start
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return {
        "admitted": len(opened),
        "booted": len(booted),
        "refused": dict(refused),
        "retry_after_missing": retry_after_missing,
        "dropped": dict(failed),
        "seconds": round(elapsed, 2),
        "chargers_per_s": round(len(ends) / elapsed) if ends else 0,
        "handshake_p50_ms": _percentile(opened, 0.5),
        "handshake_p99_ms": _percentile(opened, 0.99),
        "boot_p50_ms": _percentile(booted, 0.5),
        "boot_p99_ms": _percentile(booted, 0.99),
    }


def start(args: argparse.Namespace, database_url: str) -> tuple[subprocess.Popen[bytes], int, list[Any]]:
    """The process under test and its port; with `--mqtt-url` also an ingest process (niceness 10, standing
    in for the ingest node of a deployment) consuming the gateway's events, as a deployment has: without a
    subscriber the broker refuses the gateway's publishes and it spools them instead."""
    port = free_port()
    if args.server == "stock":
        return subprocess.Popen([sys.executable, "-m", "bench.stock_csms", str(port)], cwd=ROOT), port, []
    roles = "gateway" if args.mqtt_url else "gateway,ingest,ops,api"
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--roles", roles, "--ocpp-port", str(port)]
    cmd += ["--http-port", str(free_port()), "--database-url", database_url, "--heartbeat-interval", "3600"]
    env = {**os.environ, "CHARGEOPS_LOG_LEVEL": "WARNING"}
    helpers: list[Any] = []
    if args.mqtt_url:  # a topic root of its own: nothing else on the broker sees the bench's events
        env["CHARGEOPS_MQTT_URL"] = f"{args.mqtt_url.rstrip('/')}/bench-hs-{uuid.uuid4().hex[:8]}"
        env["CHARGEOPS_SPOOL_DIR"] = tempfile.mkdtemp(prefix="chargeops-bench-spool-")
        ingest = [sys.executable, "-m", "ops.cli", "serve", "--roles", "ingest"]
        ingest += ["--database-url", database_url, "--http-port", str(free_port())]
        helpers.append(subprocess.Popen(["nice", "-n", "10", *ingest], cwd=ROOT, env=env))
    return subprocess.Popen(cmd + args.serve_arg, cwd=ROOT, env=env), port, helpers


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    if args.server == "chargeops":
        await seed(database_url, args.chargers)
    server, port, helpers = start(args, database_url)
    print(f"server pid {server.pid}", file=sys.stderr, flush=True)  # for a profiler to attach to
    try:
        await wait_for_port(port, 1200)
        await asyncio.sleep(1)
        url = f"ws://127.0.0.1:{port}/ocpp"
        result: dict[str, Any] = {
            "server": args.server,
            "database": database_url.split(":", 1)[0] if args.server == "chargeops" else None,
            "chargers": args.chargers,
            "addresses": args.addresses,
            "roles": "gateway" if args.mqtt_url else "all",
            "load_average_before": os.getloadavg()[0],
        }

        async def measured(name: str, wave: int | None = None) -> dict[str, Any]:
            print(f"{name} starts", file=sys.stderr, flush=True)
            cpu0 = cpu_seconds(server.pid)
            figures = await storm(
                url, args.chargers, boot=not args.no_boot, wave=wave, addresses=args.addresses
            )
            figures["server_cpu_s"] = round(cpu_seconds(server.pid) - cpu0, 2)
            await asyncio.sleep(args.pause)  # the disconnects are recorded before the next storm
            return figures

        if args.server == "chargeops":
            # A restarted gateway: no password verified yet, every one is hashed.
            result["cold_storm"] = await measured("cold storm")
            # Every charger in once, a few at a time (those the cold storm turned away retried later).
            result["settled"] = (await measured("settling", wave=20))["admitted"]
        result["reconnect_storms"] = [await measured(f"storm {n + 1}") for n in range(args.storms)]
        result["load_average_after"] = os.getloadavg()[0]
        return result
    finally:
        for process in (server, *helpers):
            process.terminate()
        for process in (server, *helpers):
            process.wait(30)


async def _pg_admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=1000, help="chargers in each storm")
    p.add_argument("--storms", type=int, default=3, help="reconnect storms (after the cold one)")
    p.add_argument("--server", choices=["chargeops", "stock"], default="chargeops")
    p.add_argument(
        "--mqtt-url",
        default=None,
        help="a broker (mqtt://127.0.0.1:1883): the process under test is a gateway alone (--roles gateway), "
        "its events go to the broker; default: one process with every role and the in-process bus",
    )
    p.add_argument("--no-boot", action="store_true", help="handshakes only, no BootNotification")
    p.add_argument("--addresses", type=int, default=1, help="source addresses the chargers come from")
    p.add_argument("--pause", type=float, default=3.0, help="seconds between storms")
    p.add_argument(
        "--database-url",
        default=None,
        help="a Postgres server (postgresql+asyncpg://…/any): a fresh database is made there and dropped; "
        "default: SQLite in a temporary folder",
    )
    p.add_argument("--serve-arg", action="append", default=[], help="extra `chargeops serve` argument")
    args = p.parse_args()
    admin = None
    if args.database_url and args.database_url.startswith("postgresql"):
        name = f"chargeops_bench_hs_{uuid.uuid4().hex[:8]}"
        base = args.database_url.rsplit("/", 1)[0]
        admin = base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"
        asyncio.run(_pg_admin(admin, f'CREATE DATABASE "{name}"'))
        database_url = f"{base}/{name}"
    else:
        database_url = args.database_url or (
            f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='chargeops-bench-')}/bench.db"
        )
    try:
        print(json.dumps(asyncio.run(run(args, database_url)), indent=2))
    finally:
        if admin is not None:
            asyncio.run(_pg_admin(admin, f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}"'))


if __name__ == "__main__":
    main()
