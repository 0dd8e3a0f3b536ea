"""The live monitoring stack the monitoring tests run against: chargeops (all roles) on a fresh Postgres
database with Grafana's read-only role granted as docker/postgres/grants.sql says, a simulated fleet on
three sites, and the Debian Prometheus scraping it with the project's alert rules (the `stack` fixture: a
plugin, test modules name it in `pytest_plugins`); and how to ask Prometheus and chargeops about series."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import PG_ADMIN_DSN, _pg_admin
from tests.grafana_dashboards import DOCKER, PROM_DIR
from tests.private_services import free_port

SITES = ("north", "south", "harbour")
CHARGERS = 20
V2X = ("V2X00000", "V2X00001")  # `simulate --v2x-chargers 2` names them so
NEVER_CONNECTED = ("YARD00001", "YARD00002")  # registered, never connected: the fleet has offline chargers
ADMIN_TOKEN = "monitoring-test-admin-token"


def pg_fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def wait_until(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (clean shutdown), then SIGKILL; only the processes this module started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Stack:
    prometheus: str
    chargeops: str
    dsn: str
    reader_dsn: str  # Grafana's read-only role, with exactly the grants of docker/postgres/grants.sql
    logs: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """chargeops (all roles) on a fresh Postgres database, a simulated fleet of 20 chargers on 3 sites (plus
    2 registered chargers that never connect), and the Debian Prometheus scraping it every second with the
    project's alert rules loaded."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: install Debian's `prometheus` package"
    tmp = tmp_path_factory.mktemp("monitoring")
    db = f"chargeops_mon_{uuid.uuid4().hex[:12]}"
    reader = f"{db}_reader"
    _pg_admin(f'CREATE DATABASE "{db}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{db}"
    scheme, rest = base.split("://", 1)
    reader_dsn = f"{scheme}://{reader}@{rest.split('@', 1)[-1]}/{db}"
    ocpp_port, http_port, prom_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "CHARGEOPS_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
        "CHARGEOPS_ADMIN_TOKEN": ADMIN_TOKEN,
        "CHARGEOPS_FLEET_METRICS_INTERVAL": "1",
        "CHARGEOPS_OPS_INTERVAL": "1",
        "CHARGEOPS_SUPPLY_INTERVAL": "2",
        "CHARGEOPS_SITE_PLAN_INTERVAL": "2",
    }
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        serve = spawn(
            "serve", sys.executable, "-m", "ops.cli", "serve", "--accept-unknown",
            "--ocpp-host", "127.0.0.1", "--ocpp-port", str(ocpp_port),
            "--http-host", "127.0.0.1", "--http-port", str(http_port), "--log-level", "WARNING",
        )  # fmt: skip
        chargeops = f"http://127.0.0.1:{http_port}"
        wait_until(
            "chargeops /metrics", lambda: httpx.get(f"{chargeops}/metrics").status_code == 200, 30, serve
        )
        register_fleet(chargeops)
        grant_reader(dsn, reader)

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROM_DIR / "alerts.yml")],
            "scrape_configs": [
                {"job_name": "chargeops", "static_configs": [{"targets": [f"127.0.0.1:{http_port}"]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        prom = spawn(
            "prometheus", exe, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        )  # fmt: skip
        prometheus = f"http://127.0.0.1:{prom_port}"
        wait_until(
            "prometheus ready", lambda: httpx.get(f"{prometheus}/-/ready").status_code == 200, 30, prom
        )

        spawn(
            "simulate", sys.executable, "-m", "ops.cli", "simulate",
            "--csms", f"ws://127.0.0.1:{ocpp_port}/ocpp", "--chargers", str(CHARGERS),
            "--protocol", "mixed", "--fault-rate", "20", "--time-scale", "60", "--duration", "120",
            "--swap-stations", "2", "--v2x-chargers", str(len(V2X)),
            "--log-level", "WARNING",
        )  # fmt: skip
        provoke_refusals(ocpp_port)
        yield Stack(prometheus, chargeops, dsn, reader_dsn, tmp)
    finally:
        for proc in reversed(procs):
            stop(proc)
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        _pg_admin(f'DROP ROLE IF EXISTS "{reader}"')


def grant_reader(dsn: str, reader: str) -> None:
    """What the compose stack does for Grafana: a read-only login role (as postgres/10-grafana-reader.sh
    creates it), then docker/postgres/grants.sql run by psql on the migrated schema."""
    _pg_admin(
        f'CREATE ROLE "{reader}" LOGIN; ALTER ROLE "{reader}" SET default_transaction_read_only = on; '
        f"ALTER ROLE \"{reader}\" SET statement_timeout = '15s'"
    )
    psql = shutil.which("psql")
    assert psql, "psql not found (postgresql-client)"
    result = subprocess.run(
        [
            psql,
            dsn,
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"reader={reader}",
            "-f",
            str(DOCKER / "postgres" / "grants.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def register_fleet(chargeops: str) -> None:
    """Sites come from the registry: the simulated chargers SIM00000.. are spread over three sites; their
    drivers' id tokens are on the authorization list, so sessions start."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ids = [f"SIM{n:05d}" for n in range(CHARGERS)]
    # Each site served by a depot holding few of the parts the simulated faults need (operations dashboard:
    # crews wait for them, so supply warnings show).
    fleet = {
        "regions": [{"id": "west"}],
        "depots": [{"id": f"D-{site}", "region": "west"} for site in SITES],
        # The first site has PV, storage and a grid limit: its controller reports below.
        "sites": [
            {"id": site, "region": "west", "depot": f"D-{site}"}
            | (
                {
                    "kind": "pv_storage",
                    "grid_limit_kw": 150,
                    "grid_export_limit_kw": 50,
                    "pv_peak_kw": 60,
                    "storage_kwh": 100,
                }
                if n == 0
                else {}
            )
            for n, site in enumerate(SITES)
        ],
        "stock": [
            {"depot": f"D-{site}", "sku": sku, "on_hand": n}
            for site in SITES
            for sku, n in (("PM-30KW", 1), ("RCD-B-40A", 0), ("FAN-120", 0), ("CT-250A", 0))
        ],
    }
    with httpx.Client(base_url=chargeops, headers=headers, timeout=10) as client:
        r = client.post("/api/fleet", json=fleet)
        assert r.status_code == 200, r.text
        # What a site controller reports (over MQTT in production; this stack has no broker: the API).
        report = {"pv_w": 24_000, "storage_soc": 64, "storage_w": 5_000, "grid_w": 12_000, "load_w": 4_000}
        r = client.post(
            f"/api/sites/{SITES[0]}/telemetry", json={"at": datetime.now(UTC).isoformat(), **report}
        )
        assert r.status_code == 201, r.text
        for n, charger_id in enumerate(ids):
            r = client.post("/api/chargers", json={"id": charger_id, "site": SITES[n % len(SITES)]})
            assert r.status_code == 201, r.text
        for charger_id in V2X:  # bidirectional 2.1 chargers on the PV site (DER control, site energy)
            r = client.post("/api/chargers", json={"id": charger_id, "site": SITES[0]})
            assert r.status_code == 201, r.text
        for charger_id in NEVER_CONNECTED:
            r = client.post("/api/chargers", json={"id": charger_id, "site": "depot-yard"})
            assert r.status_code == 201, r.text
        # The simulated drivers' badges (firmware_stubs: SIMTAG0000..0099); every tenth is blocked, as in
        # `chargeops demo`, so refused authorizations happen too.
        for n in range(100):
            status = "Blocked" if n % 10 == 9 else "Accepted"
            r = client.put(f"/api/id-tokens/SIMTAG{n:04d}", json={"status": status})
            assert r.status_code in (200, 201), r.text


def provoke_refusals(ocpp_port: int) -> None:
    """What a real fleet also does now and then: a handshake on a wrong path (refused and counted) and a
    frame that is not JSON (rejected, answered with a CALLERROR)."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    ocpp16 = [Subprotocol("ocpp1.6")]
    with pytest.raises((InvalidStatus, InvalidHandshake)):
        connect(f"ws://127.0.0.1:{ocpp_port}/not-ocpp/X", subprotocols=ocpp16, open_timeout=5)
    with connect(f"ws://127.0.0.1:{ocpp_port}/ocpp/PROBE00001", subprotocols=ocpp16, open_timeout=5) as ws:
        ws.send("this is not json")
        ws.recv(timeout=5)


def prom_query(prometheus: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def has_data(body: dict[str, Any]) -> bool:
    """Success, a non-empty result, and at least one number that is not NaN (a quantile of nothing)."""
    if body.get("status") != "success":
        return False
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        result = [{"value": result}]
    values = [float(item["value"][1]) for item in result]
    return any(not math.isnan(v) for v in values)


def exposed_names(chargeops: str) -> set[str]:
    """Series names chargeops exposes, from the `# TYPE` lines (there even before a labelled child exists)."""
    names: set[str] = set()
    for line in httpx.get(f"{chargeops}/metrics").text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names
