"""Gateway benchmark (SPEC §7): memory per connected charger, connection rate, OCPP calls per second with
schemas validated both ways, p99 round trip at a fixed rate, and throughput under 2x overload.

The gateway runs as a separate `chargeops serve` process (so its memory is measured alone); this process
drives raw OCPP-J clients. Prints one JSON document.

    python -m bench.gateway --chargers 10000 --rate 2500 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.stalls import MachineProbe, own_pauses
from ops.cli_loop import loop_factory, tune_interpreter

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int | str) -> int:
    """Resident memory of a process (`"self"` for this one)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """One raw charger connection with pipelined-free request/response (one call in flight, as OCPP says)."""

    __slots__ = ("ids", "pending", "protocol", "reader", "ws")

    def __init__(self, ws: ClientConnection, protocol: str):
        self.ws = ws
        self.protocol = protocol
        self.ids = itertools.count()
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = orjson.loads(raw)
            fut = self.pending.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        uid = str(next(self.ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[uid] = fut
        await self.ws.send(orjson.dumps([2, uid, action, payload]).decode())
        return await fut


def boot_payload(protocol: str) -> dict[str, Any]:
    if protocol == "ocpp1.6":
        return {"chargePointVendor": "Bench", "chargePointModel": "B1"}
    return {"reason": "PowerUp", "chargingStation": {"vendorName": "Bench", "model": "B1"}}


def traffic(protocol: str, n: int) -> tuple[str, dict[str, Any]]:
    """A realistic mix: mostly meter values and heartbeats, some status notifications."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kind = n % 4
    if kind == 0:
        return "Heartbeat", {}
    if protocol == "ocpp1.6":
        if kind == 1:
            return "StatusNotification", {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "timestamp": ts,
            }
        sv = [
            {"value": str(1000 + n), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
        ]
        return "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sv}]}
    if kind == 1:
        return "StatusNotification", {
            "timestamp": ts,
            "connectorStatus": "Available",
            "evseId": 1,
            "connectorId": 1,
        }
    sv2 = [
        {"value": 1000.0 + n, "measurand": "Energy.Active.Import.Register"},
        {"value": 7200.0, "measurand": "Power.Active.Import"},
    ]
    return "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sv2}]}


async def open_clients(url: str, first: int, count: int, concurrency: int = 200) -> list[Client]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Client:
        protocol = "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1"
        async with sem:
            ws = await connect(
                f"{url}/BENCH{i:06d}",
                subprotocols=[Subprotocol(protocol)],
                compression=None,
                ping_interval=None,
                max_queue=4,
                open_timeout=60,
            )
            client = Client(ws, protocol)
            answer = await client.call("BootNotification", boot_payload(protocol))
            assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
            return client

    return list(await asyncio.gather(*(one(i) for i in range(first, first + count))))


async def closed_loop(clients: list[Client], seconds: float) -> dict[str, Any]:
    """Every client calls again as soon as it is answered: the gateway's saturated throughput."""
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(c: Client, n: int) -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            answer = await c.call(*traffic(c.protocol, n))
            n += 1
            done += 1
            errors += answer[0] != 3

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, i) for i, c in enumerate(clients)))
    elapsed = time.perf_counter() - started
    return {
        "calls": done,
        "errors": errors,
        "seconds": round(elapsed, 2),
        "calls_per_s": round(done / elapsed),
    }


async def open_loop(
    clients: list[Client], rate: float, seconds: float, probe_machine: bool = False
) -> dict[str, Any]:
    """Calls are offered at a fixed rate whatever the answers do; round trips are measured per call."""
    latencies: list[float] = []
    errors = 0
    busy: set[int] = set()
    skipped = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(idx: int, n: int) -> None:
        nonlocal errors
        c = clients[idx]
        t0 = time.perf_counter()
        try:
            answer = await c.call(*traffic(c.protocol, n))
            errors += answer[0] != 3
            latencies.append(time.perf_counter() - t0)
            window = int((t0 - started) * 10)
            slowest[window] = max(slowest.get(window, 0.0), latencies[-1])
        finally:
            busy.discard(idx)

    slowest: dict[int, float] = {}  # per 100 ms of sending: the slowest round trip
    sent_late: dict[int, float] = {}  # per 100 ms: how late this process sent a call (its own stalls)
    total = int(rate * seconds)
    probe = MachineProbe(seconds + 1) if probe_machine else None
    since = time.monotonic()
    started = time.perf_counter()
    for n in range(total):
        target = started + n / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.02:
            window = n * 10 // int(rate)
            sent_late[window] = max(sent_late.get(window, 0.0), -delay)
        idx = n % len(clients)
        if idx in busy:  # OCPP allows one call in flight per charger; that charger's turn is lost
            skipped += 1
            continue
        busy.add(idx)
        t = asyncio.get_running_loop().create_task(one(idx, n))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else 0.0
        )

    return {
        "offered_per_s": rate,
        "answered": len(latencies),
        "answered_per_s": round(len(latencies) / elapsed),
        "skipped_busy": skipped,
        "errors": errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        # where the tail comes from: a stall (a few windows, every call in them slow) or spread out
        "windows_100ms_over_50ms": sorted(round(w / 10, 1) for w, worst in slowest.items() if worst > 0.05),
        "started_monotonic": round(since, 3),
        "load_generator_sent_late_ms": [[w / 10, round(d * 1000)] for w, d in sorted(sent_late.items())],
        **({"machine": probe.result(since)} if probe else {}),
    }


def start_server(database_url: str | None) -> tuple[subprocess.Popen[bytes], int, int, str]:
    """`chargeops serve` in its own process, so its memory and CPU are measured alone."""
    port, http = free_port(), free_port()
    db = database_url or f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='chargeops-bench-')}/bench.db"
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--accept-unknown", "--ocpp-port", str(port)]
    cmd += ["--http-port", str(http), "--database-url", db, "--heartbeat-interval", "3600"]
    env = {**os.environ, "CHARGEOPS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env), port, http, db


async def wait_for_port(port: int, attempts: int = 300) -> None:
    """Until the server under test accepts connections."""
    for _ in range(attempts):
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def histogram_quantile(metrics: str, name: str, q: float) -> float | None:
    """Upper bound (seconds) of the bucket holding quantile `q` of a Prometheus histogram, from its text."""
    buckets = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket{{") and 'le="' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= q * total)


def observed_over(metrics: str, name: str, bound: float, labels: str = "") -> float:
    """How many observations of a Prometheus histogram (from its text) were above `bound`, a bucket edge."""
    total = below = 0.0
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket{{") and labels in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            count = float(line.rsplit(" ", 1)[1])
            if le == "+Inf":
                total = count
            elif float(le) == bound:
                below = count
    return total - below


def minus(after: str, before: str) -> str:
    """The histogram series of a metrics text observed between two scrapes (`before`, `after`), as text."""

    def counts(text: str) -> dict[str, float]:
        pairs = (
            line.rsplit(" ", 1)
            for line in text.splitlines()
            if not line.startswith("#") and any(p in line for p in ("_bucket{", "_sum", "_count"))
        )
        return {series: float(value) for series, value in pairs}

    old = counts(before)
    return "\n".join(f"{k} {v - old.get(k, 0.0)}" for k, v in counts(after).items())


def server_figures(metrics: str) -> dict[str, Any]:
    """What the server's own histograms say: commit time, loop lag, collections over 50 ms by generation."""
    return {
        "ingest_commit_p50_s": histogram_quantile(metrics, "chargeops_ingest_commit_seconds", 0.5),
        "ingest_commit_p99_s": histogram_quantile(metrics, "chargeops_ingest_commit_seconds", 0.99),
        "ingest_commits": _series(metrics, "chargeops_ingest_batch_events_count"),
        "ingest_events": _series(metrics, "chargeops_ingest_batch_events_sum"),
        "loop_lag_p99_s": histogram_quantile(metrics, "chargeops_event_loop_lag_seconds", 0.99),
        "loop_lags_over_50ms": observed_over(metrics, "chargeops_event_loop_lag_seconds", 0.05),
        "gc_pauses_over_50ms": {
            gen: observed_over(metrics, "chargeops_gc_pause_seconds", 0.05, f'generation="{gen}"')
            for gen in "012"
        },
        "gc_seconds": {
            gen: round(_series(metrics, f'chargeops_gc_pause_seconds_sum{{generation="{gen}"}}'), 3)
            for gen in "012"
        },
        "gc_collections": {
            gen: _series(metrics, f'chargeops_gc_pause_seconds_count{{generation="{gen}"}}') for gen in "012"
        },
    }


def _series(metrics: str, series: str) -> float:
    return next(
        (float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(series + " ")), 0.0
    )


async def scrape(http: int) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{http}/metrics")).text


async def heap_settled(http: int, timeout: float) -> float | None:
    """Seconds until the server has frozen its heap after the connection storm (`telemetry.heap`: one
    full collection, ~1 s with 10,000 connected, 10-20 s after the last connection), so the phases measure
    the steady state and not that one-off pause; None if it did not within `timeout`."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        for line in (await scrape(http)).splitlines():
            if line.startswith("chargeops_heap_refreezes_total ") and float(line.split()[1]) >= 1:
                await asyncio.sleep(1)  # the pause is over once the counter moved: let the loop catch up
                return round(time.perf_counter() - started, 1)
        await asyncio.sleep(1)
    return None


@contextlib.asynccontextmanager
async def measured(pid: int, http: int) -> AsyncIterator[dict[str, Any]]:
    """A phase's figures besides its own: CPU seconds of the server and of this process (on two cores they
    share the machine with Postgres), the server's histograms over the phase, this process's GC pauses."""
    figures: dict[str, Any] = {}
    before = await scrape(http)
    cpu0, own0 = cpu_seconds(pid), time.process_time()
    with own_pauses() as pauses:
        yield figures
    figures["server_cpu_s"] = round(cpu_seconds(pid) - cpu0, 2)
    figures["load_generator_cpu_s"] = round(time.process_time() - own0, 2)
    figures["load_generator_gc_pauses_over_50ms"] = sum(p > 0.05 for p in pauses)
    figures["server"] = server_figures(minus(await scrape(http), before))


def phase(name: str) -> None:
    """On stderr, as each measured phase starts: a profiler can attach to the server for one phase."""
    print(f"{name} starts", file=sys.stderr, flush=True)


async def run(
    args: argparse.Namespace, server: subprocess.Popen[bytes], port: int, http: int, db: str
) -> dict[str, Any]:
    await wait_for_port(port)
    await asyncio.sleep(0.5)
    url = f"ws://127.0.0.1:{port}/ocpp"
    base_rss = rss_kib(server.pid)
    t0 = time.perf_counter()
    first = await open_clients(url, 0, min(1000, args.chargers))
    connect_1000 = time.perf_counter() - t0
    rest = (
        await open_clients(url, len(first), args.chargers - len(first)) if args.chargers > len(first) else []
    )
    clients = first + rest
    # The load generator holds as many connections as the server: without the server's interpreter tuning
    # its own full collections (100+ ms with 10,000 connections) were counted as the server's round trips.
    tune_interpreter()
    await asyncio.sleep(2)
    settled = await heap_settled(http, 45.0) if args.chargers >= 1000 else None
    loaded_rss = rss_kib(server.pid)
    result: dict[str, Any] = {
        "chargers_connected": len(clients),
        "connect_first_1000_s": round(connect_1000, 2),
        "server_rss_base_kib": base_rss,
        "server_rss_connected_kib": loaded_rss,
        "kib_per_charger": round((loaded_rss - base_rss) / len(clients), 1),
        "heap_settled_after_s": settled,
    }
    active = clients[: args.active]
    phase("saturated")
    await closed_loop(active, 2)  # warm-up
    async with measured(server.pid, http) as sat:
        sat.update(await closed_loop(active, args.duration))
    result["saturated"] = sat
    phase("fixed_rate")
    async with measured(server.pid, http) as fixed:
        fixed.update(await open_loop(clients, args.rate, args.duration, probe_machine=True))
    result["fixed_rate"] = fixed
    phase("overload_2x")
    async with measured(server.pid, http) as over:
        over.update(await open_loop(clients, 2 * sat["calls_per_s"], args.duration))
    over["share_of_saturated"] = round(over["answered_per_s"] / max(1, sat["calls_per_s"]), 2)
    result["overload_2x"] = over
    for c in clients:
        c.reader.cancel()
    await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    result["database"] = db.split(":", 1)[0]
    result["server"] = server_figures(await scrape(http))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chargers", type=int, default=10_000, help="connected chargers")
    p.add_argument("--active", type=int, default=500, help="chargers calling in the saturation run")
    p.add_argument("--rate", type=float, default=2500, help="calls/s for the fixed-rate latency run")
    p.add_argument("--duration", type=float, default=10, help="seconds per run")
    p.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    args = p.parse_args()
    server, port, http, db = start_server(args.database_url)
    print(f"server pid {server.pid}", file=sys.stderr, flush=True)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop, as the server
            print(json.dumps(runner.run(run(args, server, port, http, db)), indent=2))
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
