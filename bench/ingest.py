"""Ingest benchmark (SPEC §7: 100,000 meter-sample rows/s from MQTT into Postgres for one ingest process;
end-to-end lag p99 < 2 s at 10,000 rows/s). Prints one JSON document.

    python -m bench.ingest                      # both parts
    python -m bench.ingest --skip-mqtt          # only store_events straight into Postgres
    python -m bench.ingest --mqtt-port 1883     # against a running broker instead of a private one

(a) `store_events` straight into Postgres: rows/s for large batches (COPY path), then one rollup pass over
    what was stored. (b) MQTT → Postgres: a `chargeops serve --roles ingest` subprocess on a fresh database
    and a unique topic root, on a private Mosquitto configured like docker/mosquitto (no in-flight cap, no
    queue limit: a stock broker caps ingest at 20 unacked messages and drops beyond 1000 queued); a paho
    publisher sends meter-value events (10 samples each) at a fixed rate, one per message (a gateway that is
    not busy sends each event on its own), and then as fast as it can with 1, 10 and 50 events per message
    (`--per-message`: a busy gateway sends what one event-loop iteration published as one message). The
    flat-out payloads are encoded before the clock starts (encoding is the gateway's cost, not ingest's),
    so `publish_rows_per_s` well above `stored_rows_per_s` shows the publisher was not the limit.
    Lag = commit time − publish time, taken two ways: the ingest's own
    `chargeops_ingest_lag_seconds` histogram (bucket resolution) and by polling the events table (each
    event's commit time ≈ the first poll that counts it; events commit in publish order).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.gateway import ROOT, free_port
from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.events import Event, MeterValues, Sample
from telemetry.ingest import store_events
from telemetry.mqtt import encode_batches
from telemetry.rollups import run_rollups
from tests.private_services import PrivateMosquitto

PG = os.environ.get("CHARGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SAMPLES_PER_EVENT = 10
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def meter_event(i: int, chargers: int, at: datetime) -> Event:
    """Event `i`: a charger's 10 samples (energy, power, current and voltage per phase, SoC, temperature)."""
    cp = f"BENCH{i % chargers:05d}"
    samples = [
        Sample("Energy.Active.Import.Register", 1000.0 + i, "Wh", sampled_at=at),
        Sample("Power.Active.Import", 7200.0, "W", sampled_at=at),
        *(Sample("Current.Import", 32.0, "A", phase=f"L{p}", sampled_at=at) for p in (1, 2, 3)),
        *(Sample("Voltage", 230.0, "V", phase=f"L{p}-N", sampled_at=at) for p in (1, 2, 3)),
        Sample("SoC", 50.0, "Percent", sampled_at=at),
        Sample("Temperature", 35.0, "Celsius", sampled_at=at),
    ]
    return Event(cp, MeterValues(1, 1, f"TX{i % chargers}", samples), reported_at=at, received_at=at)


@contextmanager
def database() -> Iterator[str]:
    """A fresh Postgres database (SQLAlchemy URL), dropped afterwards."""
    name = f"chargeops_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


MQTT_PORT = 1883  # set from --mqtt-port


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench_store(url: str, batch_events: list[int], rounds: int, chargers: int) -> dict[str, Any]:
    engine = make_engine(url)
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    base = datetime.now(UTC).replace(microsecond=0)
    out: dict[str, Any] = {}
    i = 0
    for size in batch_events:
        batches = []
        for _ in range(rounds):
            batches.append(
                [meter_event(i + k, chargers, base + timedelta(milliseconds=i + k)) for k in range(size)]
            )
            i += size
        started = time.perf_counter()
        for batch in batches:
            await store_events(sessions, batch)
        elapsed = time.perf_counter() - started
        rows = size * rounds * SAMPLES_PER_EVENT
        out[f"batch_{size}_events"] = {
            "rows": rows,
            "rows_per_s": round(rows / elapsed),
            "ms_per_batch": round(elapsed / rounds * 1000, 1),
        }
    redelivered = batches[-1]
    started = time.perf_counter()
    await store_events(sessions, redelivered)
    out["redelivered_batch_ms"] = round((time.perf_counter() - started) * 1000, 1)
    started = time.perf_counter()
    marks = await run_rollups(sessions)
    elapsed = time.perf_counter() - started
    out["rollup_pass"] = {"rows": i * SAMPLES_PER_EVENT, "marks": marks, "seconds": round(elapsed, 2)}
    await engine.dispose()
    return out


class Publisher:
    """A paho MQTT 5 client in its own thread, QoS 1, unlimited in flight; counts PUBACKs.

    In-flight limit 0, not 65535: with any limit paho rescans every unacked message on each PUBACK."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"bench-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", MQTT_PORT)
        self.client.loop_start()

    def _on_publish(self, *_args: Any) -> None:
        with self._lock:
            self.acked += 1

    def send(self, payload: bytes) -> None:
        self.client.publish(f"{self.root}/v2/events/bench", payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def end_session(client_id: str) -> None:
    """Drop the ingest's persistent session from the broker (clean start, expiry 0), as docs/bus.md says."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", MQTT_PORT, clean_start=True, properties=props)
    c.loop_start()
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()


def _lag_quantiles(lags: list[float]) -> dict[str, float]:
    lags = sorted(lags)
    return {f"p{q}": round(lags[min(len(lags) - 1, int(len(lags) * q / 100))], 3) for q in (50, 99)}


def _histogram(text: str) -> dict[float, float]:
    counts: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("chargeops_ingest_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            counts[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return counts


def _bucket_quantile(counts: dict[float, float], q: float) -> float:
    """Upper bound of the histogram bucket holding quantile `q`."""
    total = counts.get(float("inf"), 0.0)
    for le in sorted(counts):
        if counts[le] >= q * total:
            return le
    return float("inf")


async def _scrape(url: str) -> dict[float, float]:
    return _histogram(await _metrics_text(url))


async def _metrics_text(url: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
        response.raise_for_status()
        return response.text


def _sum_count(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram in Prometheus text."""
    values = {}
    for line in text.splitlines():
        for part in ("_sum", "_count"):
            if line.startswith(f"{name}{part} "):
                values[part] = float(line.rsplit(" ", 1)[1])
    return values.get("_sum", 0.0), values.get("_count", 0.0)


async def _run_phase(
    pub: Publisher,
    dsn: str,
    metrics_url: str,
    events: int,
    rate: float | None,
    chargers: int,
    offset: int,
    per_message: int = 1,
) -> dict[str, Any]:
    """Publish `events` (at `rate` events/s one per message, or flat out `per_message` per message) and poll
    the table until all are stored."""
    db = await asyncpg.connect(dsn)
    before = await _scrape(metrics_url)
    text0 = await _metrics_text(metrics_url)
    base_count = int(await db.fetchval("SELECT count(*) FROM events"))
    published: list[float] = []
    stop = asyncio.Event()
    polls: list[tuple[float, int]] = []

    async def poll() -> None:
        while not stop.is_set():
            n = int(await db.fetchval("SELECT count(*) FROM events")) - base_count
            polls.append((time.time(), n))
            if n >= events:
                stop.set()
            await asyncio.sleep(0.05)

    ready: list[tuple[bytes, int]] = []
    if rate is None:  # flat out: encoded beforehand, stamped with the start of publishing
        stamp = datetime.now(UTC)
        for i in range(0, events, per_message):
            n = min(per_message, events - i)
            ready += encode_batches([meter_event(offset + i + k, chargers, stamp) for k in range(n)])
    poller = asyncio.create_task(poll())
    started = time.time()
    if rate is not None:  # one event per message: what a gateway sends when it is not busy
        for i in range(events):
            delay = started + i / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            [(payload, _)] = encode_batches([meter_event(offset + i, chargers, datetime.now(UTC))])
            pub.send(payload)
            published.append(time.time())
    else:
        for payload, n in ready:
            pub.send(payload)
            published += [time.time()] * n
    publish_s = time.time() - started
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(60.0, events / 500))
    except TimeoutError:
        stop.set()
    await poller
    after = await _scrape(metrics_url)
    text1 = await _metrics_text(metrics_url)
    (b0, n0), (b1, n1) = (_sum_count(t, "chargeops_ingest_batch_events") for t in (text0, text1))
    (c0, _), (c1, _) = (_sum_count(t, "chargeops_ingest_commit_seconds") for t in (text0, text1))
    batches = max(1.0, n1 - n0)
    await db.close()
    stored = polls[-1][1]
    lags: list[float] = []
    k = 0
    for at, n in polls:
        while k < min(n, len(published)):
            lags.append(at - published[k])
            k += 1
    done_at = next((at for at, n in polls if n >= stored), polls[-1][0])
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    return {
        "events_per_message": 1 if rate is not None else per_message,
        "events_published": events,
        "events_stored": stored,
        "rows_stored": stored * SAMPLES_PER_EVENT,
        "publish_rows_per_s": round(events * SAMPLES_PER_EVENT / publish_s),
        "stored_rows_per_s": round(stored * SAMPLES_PER_EVENT / (done_at - started)),
        "lag_polled_s": _lag_quantiles(lags) if lags else None,
        "ingest_commits": int(n1 - n0),
        "ingest_events_per_commit": round((b1 - b0) / batches, 1),
        "ingest_ms_per_commit": round(1000 * (c1 - c0) / batches, 1),
        "lag_metric_bucket_upper_s": {
            "p50": _bucket_quantile(delta, 0.5),
            "p99": _bucket_quantile(delta, 0.99),
        },
    }


async def bench_mqtt(
    url: str, rate_rows: int, seconds: float, max_events: int, chargers: int, per_message: list[int]
) -> dict[str, Any]:
    root = f"bench-{uuid.uuid4().hex[:8]}"
    node = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()
    env = {**os.environ, "CHARGEOPS_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--roles", "ingest", "--database-url", url]
    cmd += ["--mqtt-url", f"mqtt://127.0.0.1:{MQTT_PORT}/{root}", "--http-port", str(port), "--node-id", node]
    cmd += ["--ocpp-port", str(free_port())]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    pub = Publisher(root)
    try:
        deadline = time.time() + 30
        while True:
            try:
                await _scrape(metrics_url)
                break
            except httpx.HTTPError:
                if time.time() > deadline or proc.returncode is not None:
                    raise RuntimeError("ingest process did not come up") from None
                await asyncio.sleep(0.2)
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        rate_events = rate_rows / SAMPLES_PER_EVENT
        fixed = await _run_phase(
            pub, dsn, metrics_url, int(rate_events * seconds), rate_events, chargers, offset=0
        )
        flat_out = {
            f"{k}_events_per_message": await _run_phase(
                pub, dsn, metrics_url, max_events, None, chargers, offset=10_000_000 * (j + 1), per_message=k
            )
            for j, k in enumerate(per_message)
        }
    finally:
        pub.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        end_session(f"{root}-ingest-{node}")
    return {f"fixed_{rate_rows}_rows_per_s": fixed, "max": flat_out}


@contextmanager
def private_broker() -> Iterator[int]:
    """A Mosquitto configured like docker/mosquitto on a free port; yields the port."""
    base = Path(tempfile.mkdtemp(prefix="chargeops-bench-"))
    base.chmod(0o755)
    broker = PrivateMosquitto(base)
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1000,5000", help="events per store_events batch (10 rows each)")
    parser.add_argument("--rounds", type=int, default=10, help="batches per size")
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10_000, help="rows/s for the fixed-rate MQTT phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the fixed-rate phase")
    parser.add_argument("--max-events", type=int, default=100_000, help="events per flat-out run")
    parser.add_argument(
        "--per-message",
        default="1,10,50",
        help="events per MQTT message in the flat-out runs (a gateway sends one loop iteration's events)",
    )
    parser.add_argument("--skip-mqtt", action="store_true")
    parser.add_argument(
        "--mqtt-port",
        type=int,
        help="use the broker on this 127.0.0.1 port (needs max_inflight_messages 0 and max_queued_messages 0 "
        "as in docker/mosquitto, or it caps and drops); default: a private one",
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"samples_per_event": SAMPLES_PER_EVENT, "cpus": os.cpu_count()}
    global MQTT_PORT
    sizes = [int(s) for s in args.batches.split(",")]
    with database() as url:
        result["store_events"] = asyncio.run(bench_store(url, sizes, args.rounds, args.chargers))
    if not args.skip_mqtt:
        with contextlib.ExitStack() as stack:
            MQTT_PORT = args.mqtt_port or stack.enter_context(private_broker())
            url = stack.enter_context(database())
            result["mqtt_to_postgres"] = asyncio.run(
                bench_mqtt(
                    url,
                    args.rate,
                    args.seconds,
                    args.max_events,
                    args.chargers,
                    [int(k) for k in args.per_message.split(",")],
                )
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
