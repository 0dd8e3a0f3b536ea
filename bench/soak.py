"""Soak benchmark (issue 12, "Soak"): a steady simulated fleet against one `chargeops serve` on Postgres for
hours, to see whether memory, open files, latency or the tables drift while nothing changes.

Starts `chargeops serve` in its own process on a throwaway Postgres database (created here, dropped at the
end), runs a mixed 1.6 / 2.0.1 fleet of `firmware_stubs` chargers in this process (boots, heartbeats,
sessions with authorization, meter values, status changes and faults) held at about ``--rate`` calls per
second, and every ``--interval`` seconds records the server's RSS and open files, the client-side round
trip (CALL sent -> CALLRESULT handled) p50 / p99 of that interval, calls per second, errors, reconnects and
the row counts. Prints one JSON document: the samples and a summary (RSS growth after warm-up, its slope).

    python -m bench.soak --hours 1.0 > soak.json
    python -m bench.soak --hours 0.05 --chargers 100 --interval 10 --warmup-minutes 1   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any, ClassVar

import asyncpg

from bench import soak_db
from bench.gateway import cpu_seconds, free_port, rss_kib, wait_for_port
from bench.soak_db import create_database, drop_database, row_counts, seed_id_tokens
from firmware_stubs.charger import SimulatedCharger
from firmware_stubs.fleet import FleetConfig, build_fleet, report, run_fleet

ROOT = Path(__file__).resolve().parent.parent
# overall latency histogram: 0.1 ms buckets up to 1 s, then 10 ms buckets up to 60 s (bounded memory for
# any run length, unlike keeping every round trip)
FINE, COARSE = 10_000, 5_900


class LatencyRecorder:
    """Round trips of the fleet's calls: exact per interval, bucketed over the whole run."""

    def __init__(self) -> None:
        self.interval: list[float] = []
        self.buckets = [0] * (FINE + COARSE + 1)
        self.answered = 0
        self.call_errors = 0  # CALLERROR answers (timeouts are in the chargers' call_errors)
        self.periodic = 0  # meter values the sample interval drives (the part of the rate we steer)

    def record(self, seconds: float, ok: bool, periodic: bool) -> None:
        ms = seconds * 1000.0
        self.interval.append(ms)
        self.answered += 1
        self.call_errors += not ok
        self.periodic += periodic
        i = int(ms * 10) if ms < 1000 else FINE + min(COARSE, int((ms - 1000) / 10))
        self.buckets[i] += 1

    def reset_overall(self) -> None:
        """At the end of warm-up: the overall figures are of the steady state, not the boot storm."""
        self.buckets = [0] * (FINE + COARSE + 1)

    def take_interval(self) -> list[float]:
        out, self.interval = self.interval, []
        out.sort()
        return out

    def overall(self, q: float) -> float | None:
        """Upper edge (ms) of the bucket holding quantile ``q`` of every round trip so far."""
        total = sum(self.buckets)
        if not total:
            return None
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= q * total:
                return (i + 1) / 10 if i < FINE else 1000 + (i - FINE + 1) * 10
        return None


class ServerLog:
    """Reads the server's log lines, passes the first few of each kind on to stderr and counts every kind
    (level, logger, message with ids and numbers blanked): warnings over hours are a soak figure too."""

    SHOWN = 20

    def __init__(self, stream: IO[bytes]) -> None:
        self.kinds: Counter[str] = Counter()
        self.warnings = 0
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            parts = line.split(" ", 4)  # date, time, level, logger, message
            if len(parts) == 5 and parts[2] in ("WARNING", "ERROR", "CRITICAL"):
                kind = " ".join([*parts[2:4], re.sub(r"cp=\S+ |\[\S+\] |\d+", "", parts[4])[:90]])
                self.warnings += 1
            else:
                kind = "other"
            self.kinds[kind] += 1
            if self.kinds[kind] <= self.SHOWN * (10 if kind == "other" else 1):  # tracebacks are "other"
                print(line, file=sys.stderr, flush=True)


class TimedCharger(SimulatedCharger):
    """A simulated charger that reports each answer's round trip (its class is swapped in after
    `build_fleet`, so the fleet's seeded hardware mix stays exactly the one `chargeops simulate` makes)."""

    __slots__ = ()
    recorder: ClassVar[LatencyRecorder]

    def _on_reply(self, frame: list[Any]) -> None:
        item = self._outstanding
        if item is not None and frame[1] == item.uid:
            sent = item.deadline - self.env.call_timeout  # `_send_call` set deadline = send time + timeout
            periodic = (
                item.action == "MeterValues" or item.payload.get("triggerReason") == "MeterValuePeriodic"
            )
            self.recorder.record(asyncio.get_running_loop().time() - sent, frame[0] == 3, periodic)
        super()._on_reply(frame)


def pct(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None


def process_tree(pid: int) -> list[int]:
    """The server and its descendants (via /proc/PID/task/*/children), so a spawned helper is counted."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    """One run: server process, fleet, rate steering and the sampler."""

    def __init__(
        self, args: argparse.Namespace, server: subprocess.Popen[bytes], port: int, log: ServerLog
    ) -> None:
        self.args = args
        self.log = log
        self.server = server
        self.port = port
        self.recorder = LatencyRecorder()
        TimedCharger.recorder = self.recorder
        self.config = FleetConfig(
            csms_url=f"ws://127.0.0.1:{port}/ocpp",
            chargers=args.chargers,
            protocol="mixed",
            session_rate=args.session_rate,
            fault_rate=args.fault_rate,
            time_scale=args.time_scale,
            sample_interval=30.0,
            connect_rate=50.0,
            seed=args.seed,
        )
        self.fleet = build_fleet(self.config)
        for cp in self.fleet:
            cp.__class__ = TimedCharger
        self.sample_interval = 30.0
        self.samples: list[dict[str, Any]] = []

    def steer(self, other_per_s: float) -> None:
        """Hold the total near --rate: meter values come from every running session once per sample
        interval, so the interval is (sessions running) / (rate left after boots, heartbeats, session and
        status messages). Changed in each charger's configuration, it applies from its next sample, so the
        chargers' sampling never falls into step."""
        busy = sum(c.tx is not None for cp in self.fleet for c in cp.connectors[1:])
        room = max(self.args.rate - other_per_s, 0.2 * self.args.rate)
        self.sample_interval = min(600.0, max(1.0, busy / room))
        value = f"{self.sample_interval:.2f}"
        for cp in self.fleet:
            cp.config.put("MeterValueSampleInterval", value)

    async def run(self, db: asyncpg.Connection) -> dict[str, Any]:
        args = self.args
        duration = args.hours * 3600
        warmup = min(args.warmup_minutes * 60, duration / 3)
        loop = asyncio.get_running_loop()
        pid = self.server.pid
        await asyncio.sleep(1.0)
        await seed_id_tokens(db, self.fleet[0].env.id_tags)
        base = {"rss_kib": self.rss(), "fds": open_fds(pid)}
        fleet_task = asyncio.ensure_future(run_fleet(self.config, self.fleet))
        own_cpu, srv_cpu = time.process_time(), cpu_seconds(pid)
        started = last = loop.time()
        answered = periodic = errors = warnings = 0
        interrupted = False
        try:
            while (now := loop.time()) < started + duration:
                tick = min(args.interval, started + duration - now)
                steps = max(1, round(tick / args.steer_every))  # steer several times per sample
                for _ in range(steps):
                    p0, a0 = self.recorder.periodic, self.recorder.answered
                    await asyncio.sleep(tick / steps)
                    self.steer((self.recorder.answered - a0 - (self.recorder.periodic - p0)) * steps / tick)
                now = loop.time()
                if not self.samples or self.samples[-1]["t_s"] < warmup <= now - started:
                    self.recorder.reset_overall()
                lat = self.recorder.take_interval()
                fleet = report(self.fleet)
                cpu1, srv1 = time.process_time(), cpu_seconds(pid)
                dt = now - last
                self.samples.append(
                    {
                        "t_s": round(now - started),
                        "rss_kib": self.rss(),
                        "fds": sum(open_fds(p) for p in process_tree(pid)),
                        "calls_per_s": round((self.recorder.answered - answered) / dt, 1),
                        "meter_values_per_s": round((self.recorder.periodic - periodic) / dt, 1),
                        "p50_ms": pct(lat, 0.50),
                        "p99_ms": pct(lat, 0.99),
                        "max_ms": pct(lat, 1.0),
                        "errors": fleet.errors - errors,
                        "server_warnings": self.log.warnings - warnings,
                        "connected": fleet.connected,
                        "reconnects": sum(max(0, cp.connected_count - 1) for cp in self.fleet),
                        "sessions_running": sum(
                            c.tx is not None for cp in self.fleet for c in cp.connectors[1:]
                        ),
                        "sessions_started": fleet.sessions_started,
                        "sample_interval_s": round(self.sample_interval, 2),
                        "server_cpu": round((srv1 - srv_cpu) / dt, 3),
                        "loadavg_1m": round(os.getloadavg()[0], 2),  # the other jobs on the machine
                        "load_generator_cpu": round((cpu1 - own_cpu) / dt, 3),
                        "rows": await self.rows(db),
                    }
                )
                print(json.dumps(self.samples[-1]), file=sys.stderr, flush=True)
                answered, periodic, errors = self.recorder.answered, self.recorder.periodic, fleet.errors
                warnings = self.log.warnings
                own_cpu, srv_cpu, last = cpu1, srv1, now
        except asyncio.CancelledError:
            interrupted = True  # SIGTERM / Ctrl-C: still stop everything and print what was measured
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        fleet_task.cancel()
        final = await asyncio.gather(fleet_task, return_exceptions=True)
        fleet_report = final[0] if not isinstance(final[0], BaseException) else report(self.fleet)
        return {
            "config": {
                k: getattr(args, k)
                for k in ("hours", "chargers", "rate", "interval", "warmup_minutes", "time_scale")
            }
            | {"warmup_s_used": round(warmup), "database": "postgresql"},
            "baseline": base,
            "samples": self.samples,
            "summary": summarize(self.samples, warmup, self.recorder, base)
            | {
                "interrupted": interrupted,
                "sessions_started": fleet_report.sessions_started,
                "sessions_completed": fleet_report.sessions_completed,
                "calls_sent": fleet_report.calls_sent,
                "server_log_kinds": dict(self.log.kinds.most_common(12)),
                "rows_exact_end": await row_counts(db, exact=True),
            },
        }

    async def rows(self, db: asyncpg.Connection) -> dict[str, int | str]:
        """Row counts; a failed query is recorded, it does not end a run of hours."""
        try:
            return dict(await row_counts(db))
        except (asyncpg.PostgresError, OSError) as exc:
            return {"error": repr(exc)}

    def rss(self) -> int:
        total = 0
        for p in process_tree(self.server.pid):
            try:
                total += rss_kib(p)
            except (OSError, RuntimeError):
                pass
        return total


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600 if var else None


def summarize(
    samples: list[dict[str, Any]], warmup: float, rec: LatencyRecorder, base: dict[str, int]
) -> dict[str, Any]:
    """RSS growth from the end of warm-up to the last sample, its fitted slope, latency, fds, errors."""
    if not samples:
        return {"samples": 0}
    times = [s["t_s"] for s in samples]
    i = min(bisect.bisect_left(times, warmup), len(samples) - 1)
    after = samples[i:]
    rss0, rss1 = after[0]["rss_kib"], samples[-1]["rss_kib"]
    slope = slope_per_hour([(s["t_s"], s["rss_kib"]) for s in after])
    steady = samples[i + 1 :] or after  # intervals that began after warm-up
    p99s = [(s["p99_ms"], s["t_s"]) for s in steady if s["p99_ms"] is not None]
    worst = max(p99s, default=(None, None))
    return {
        "samples": len(samples),
        "rss_kib_baseline_idle": base["rss_kib"],
        "rss_kib_end_of_warmup": rss0,
        "rss_kib_end": rss1,
        "rss_kib_max_after_warmup": max(s["rss_kib"] for s in after),
        "rss_growth_after_warmup_pct": round((rss1 - rss0) / rss0 * 100, 2),
        "rss_slope_kib_per_h": None if slope is None else round(slope),
        "rss_slope_pct_per_h": None if slope is None else round(slope / rss0 * 100, 2),
        "fds_baseline_idle": base["fds"],
        "fds_start": samples[0]["fds"],
        "fds_end_of_warmup": after[0]["fds"],
        "fds_end": samples[-1]["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "p50_ms_overall": rec.overall(0.50),
        "p99_ms_overall": rec.overall(0.99),
        "p999_ms_overall": rec.overall(0.999),
        "p99_ms_worst_interval_after_warmup": worst[0],
        "p99_ms_worst_interval_t_s": worst[1],
        "p99_ms_median_interval_after_warmup": sorted(p for p, _ in p99s)[len(p99s) // 2] if p99s else None,
        "calls_per_s_after_warmup": round(sum(s["calls_per_s"] for s in steady) / len(steady), 1),
        "calls_answered": rec.answered,
        "errors": sum(s["errors"] for s in samples),
        "callerror_answers": rec.call_errors,
        "reconnects": samples[-1]["reconnects"],
        "connected_end": samples[-1]["connected"],
        "server_cpu_after_warmup": round(sum(s["server_cpu"] for s in steady) / len(steady), 3),
        "loadavg_1m_after_warmup": round(sum(s["loadavg_1m"] for s in steady) / len(steady), 2),
    }


def start_server(database_url: str, heartbeat: int, time_scale: float) -> tuple[subprocess.Popen[bytes], int]:
    """`chargeops serve` in its own process; its log is read by `ServerLog` so stdout stays one JSON. The
    fleet's simulated time runs `time_scale` times faster, so are its meters: the plausibility ceiling
    (400 kW) is scaled as `chargeops demo` scales it, or every session would be flagged as a meter fault."""
    port, http = free_port(), free_port()
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--accept-unknown", "--ocpp-port", str(port)]
    cmd += ["--http-port", str(http), "--database-url", database_url, "--heartbeat-interval", str(heartbeat)]
    cmd += ["--meter-max-power-kw", str(400.0 * max(1.0, time_scale))]
    env = {**os.environ, "CHARGEOPS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), port


def stop_server(server: subprocess.Popen[bytes]) -> int:
    """SIGTERM (the graceful path is part of what is soaked), SIGKILL if it does not exit in 40 s."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            return server.wait(40)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait()


async def measure(args: argparse.Namespace, server: subprocess.Popen[bytes], port: int, url: str) -> Any:
    """Wait for the server, run the soak; SIGTERM / Ctrl-C end it early with what was measured."""
    me = asyncio.current_task()
    assert me is not None and server.stdout is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, me.cancel)
    log = ServerLog(server.stdout)
    async with asyncio.timeout(180):  # migrations of a fresh database on a busy machine take a while
        while server.poll() is None:
            with contextlib.suppress(TimeoutError):
                await wait_for_port(port, attempts=10)
                break
    if server.poll() is not None:
        raise RuntimeError(f"chargeops serve exited with {server.returncode} before it listened")
    db = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return await Soak(args, server, port, log).run(db)
    finally:
        await db.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="length of the run, warm-up included")
    p.add_argument("--chargers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="calls per second the fleet is held near")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--warmup-minutes", type=float, default=10.0, help="capped at a third of the run")
    p.add_argument("--database-url", default=None, help="default: a throwaway database on --admin-url")
    p.add_argument("--admin-url", default=soak_db.ADMIN_URL, help="Postgres to create / drop the database on")
    p.add_argument("--time-scale", type=float, default=30.0, help="simulated seconds per wall second")
    p.add_argument("--session-rate", type=float, default=0.02, help="EV arrivals per free connector per min")
    p.add_argument("--fault-rate", type=float, default=0.05, help="faults per charger per simulated hour")
    p.add_argument("--heartbeat-interval", type=int, default=300, help="told to chargers at boot (s)")
    p.add_argument("--steer-every", type=float, default=15.0, help="seconds between rate adjustments")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    logging.getLogger("firmware_stubs").setLevel(logging.ERROR)  # faults are meant; errors are counted
    name, url = None, args.database_url
    if url is None:
        name = f"chargeops_soak_{os.getpid()}"
        url = asyncio.run(create_database(args.admin_url, name))
    server, port = start_server(url, args.heartbeat_interval, args.time_scale)
    try:
        result = asyncio.run(measure(args, server, port, url))
    finally:  # outside the event loop, with signals ignored: a second Ctrl-C cannot skip the clean-up
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = stop_server(server)
        if name is not None:
            asyncio.run(drop_database(args.admin_url, name))
    result["summary"]["server_exit_code"] = code
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
