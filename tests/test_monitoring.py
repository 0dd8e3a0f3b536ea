"""The monitoring side of docker/: alert rules, Prometheus config and Grafana dashboards, proved against a
real Prometheus (Debian `prometheus` package) scraping a running chargeops with a simulated fleet.

Docker does not run on the test machine, so the compose stack itself is not started here; what is proved
on a live stack: the rules evaluate without error on real series, every dashboard panel's query returns data
(Prometheus panels through Prometheus, the charger-detail panels' SQL on the real PostgreSQL schema, as
Grafana's read-only role). The checks that need no stack are test_monitoring_files.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.grafana_dashboards import DOCKER, POSTGRES_UID, PROM_DIR, PROMETHEUS_UID, Query, load_dashboards

PG_ADMIN_DSN = os.environ.get("CHARGEOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Panels whose query ends in `or vector(0)` so Grafana shows 0 instead of "No data" for a healthy system.
# The test strips the fallback and demands real data, except for these metrics, which a healthy
# single-process run cannot produce (no broker, no database failure): for them the test checks the name is
# exposed by chargeops (so the query would match) and that the query with its fallback returns data.
ZERO_WHEN_HEALTHY = {
    "chargeops_bus_errors_total": "the test stack runs the in-process bus: there is no broker to fail",
    "chargeops_database_errors_total": "the test database does not fail",
}
FALLBACK = " or vector(0)"

SITES = ("north", "south", "harbour")
CHARGERS = 20
V2X = ("V2X00000", "V2X00001")  # `simulate --v2x-chargers 2` names them so
NEVER_CONNECTED = ("YARD00001", "YARD00002")  # registered, never connected: the fleet has offline chargers
ADMIN_TOKEN = "monitoring-test-admin-token"


# -- the live stack ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


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
    pg_admin(f'CREATE DATABASE "{db}"')
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
        pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        pg_admin(f'DROP ROLE IF EXISTS "{reader}"')


def grant_reader(dsn: str, reader: str) -> None:
    """What the compose stack does for Grafana: a read-only login role (as postgres/10-grafana-reader.sh
    creates it), then docker/postgres/grants.sql run by psql on the migrated schema."""
    pg_admin(
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


def substitute_promql(expr: str) -> str:
    """Grafana's variables as a user would have them: all sites / depots, a short rate window."""
    for var, value in {
        "$__rate_interval": "5s",
        "$__interval": "2s",
        "$__range": "60s",
        "$site": ".*",
        "$depot": ".*",
    }.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def substitute_sql(sql: str, charger_id: str) -> str:
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 > now() - interval '1 hour'", sql)
    quoted = "'" + charger_id.replace("'", "''") + "'"
    sql = sql.replace("${charger:sqlstring}", quoted).replace("$charger", quoted)
    assert "$" not in sql, f"unsubstituted macro in {sql}"
    return sql


# What Grafana sends PostgreSQL for the panels outside charger detail. A variable's value: a list of the
# selected values, or ALL.
ALL = None
Selection = list[str] | None


def escape_regex(value: str) -> str:
    """Grafana's `escapeRegex` (@grafana/data): a backslash before every regex metacharacter."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m[0], value)


def grafana_sql(
    board: dict[str, Any],
    sql: str,
    variables: dict[str, Selection],
    start: datetime,
    end: datetime,
    interval_ms: int = 60_000,
) -> str:
    """The panel's SQL as Grafana interpolates it: `${var:regex}` is the variable's custom allValue,
    unformatted, for All (Grafana skips formatting a custom all value), one value regex-escaped, several as
    (a|b); the SQL macros $__timeFrom() / $__timeTo() (quoted RFC 3339, UTC), $__timeFilter(col) and
    $__interval_ms."""
    defined = {v["name"]: v for v in board.get("templating", {}).get("list", [])}

    def variable(m: re.Match[str]) -> str:
        name, fmt = m[1], m[2]
        assert fmt == "regex", f"${{{name}:{fmt}}}: only the regex format is tested"
        selected = variables[name]
        if selected is ALL:
            all_value: str = defined[name]["allValue"]
            return all_value
        assert selected and (len(selected) == 1 or defined[name].get("multi")), (name, selected)
        escaped = [escape_regex(v) for v in selected]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    def instant(t: datetime) -> str:
        return "'" + t.astimezone(UTC).isoformat().replace("+00:00", "Z") + "'"

    sql = re.sub(r"\$\{(\w+):(\w+)\}", variable, sql)
    frm, to = instant(start), instant(end)
    sql = re.sub(r"\$__timeFilter\(([\w.]+)\)", lambda m: f"{m[1]} BETWEEN {frm} AND {to}", sql)
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
    sql = sql.replace("$__interval_ms", str(interval_ms))
    assert not re.search(r"\$[\w{]", sql), f"unsubstituted macro or variable in {sql}"
    return sql


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


def prometheus_queries() -> list[Query]:
    return [q for b in load_dashboards() for q in b.queries if q.datasource == PROMETHEUS_UID]


def test_every_prometheus_panel_returns_data(stack: Stack) -> None:
    """Every Prometheus panel target of the served dashboards, against a real Prometheus that scraped a live
    stack. Queries with an `or vector(0)` fallback must return data without it too (except the metrics in
    ZERO_WHEN_HEALTHY)."""
    queries = prometheus_queries()
    # Every query is valid PromQL to this Prometheus, including the operations dashboard's.
    for q in queries:
        body = prom_query(stack.prometheus, substitute_promql(q.text))
        assert body.get("status") == "success", f"{q.where()}: {body}"

    checks: list[tuple[Query, str]] = []
    for q in queries:
        expr = substitute_promql(q.text)
        names = set(re.findall(r"\bchargeops_[a-z0-9_]+", expr))
        if expr.endswith(FALLBACK) and not names & set(ZERO_WHEN_HEALTHY):
            expr = expr.removesuffix(FALLBACK)
        checks.append((q, expr))

    missing: list[str] = []
    deadline = time.monotonic() + 75
    while True:
        missing = [
            f"{q.where()}: {expr}" for q, expr in checks if not has_data(prom_query(stack.prometheus, expr))
        ]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    exposed = exposed_names(stack.chargeops)
    unexposed = sorted(
        {n for q, _ in checks for n in re.findall(r"\bchargeops_[a-z0-9_]+", q.text)} - exposed
    )
    assert not unexposed, f"metric names chargeops does not expose: {unexposed}"
    assert not missing, "panels without data after 75 s:\n" + "\n".join(missing)


def test_every_charger_detail_panel_returns_rows(stack: Stack) -> None:
    """The charger-detail dashboard's SQL, macros substituted, on the live stack's database, for a charger
    that has charged and faulted."""
    board = next(b for b in load_dashboards() if b.uid == "chargeops-charger-detail")
    pick = """
        SELECT charger_id FROM meter_samples WHERE measurand = 'Power.Active.Import'
        INTERSECT SELECT charger_id FROM meter_samples WHERE measurand = 'Energy.Active.Import.Register'
        INTERSECT SELECT charger_id FROM events WHERE kind = 'fault_reported'
        INTERSECT SELECT charger_id FROM transactions
        ORDER BY 1 LIMIT 1
    """
    rows: list[asyncpg.Record] = []

    def found() -> bool:
        rows[:] = pg_fetch(stack.dsn, pick)
        return bool(rows)

    wait_until("a charger with power, energy, faults and sessions", found, 75)
    charger_id = rows[0]["charger_id"]
    empty = []
    for q in board.queries:
        assert q.datasource == POSTGRES_UID
        # As Grafana's read-only role: the grants are enough for every panel.
        result = pg_fetch(stack.reader_dsn, substitute_sql(q.text, charger_id))
        if not result:
            empty.append(q.where())
    assert not empty, f"panels without rows for {charger_id}: {empty}"
    # The charger variable's query lists it.
    var = board.doc["templating"]["list"][0]
    assert charger_id in [r[0] for r in pg_fetch(stack.reader_dsn, var["query"])]


def test_every_other_postgres_panel_runs_as_grafanas_role(stack: Stack) -> None:
    """The PostgreSQL panels outside charger detail (offline and faulted chargers, open tickets by depot,
    battery tickets) run on the live stack's schema as Grafana's read-only role, every variable at All; the
    two chargers that never connected are listed offline. Their results on known data:
    tests/test_dashboard_sql.py."""
    now = datetime.now(UTC)
    ran: dict[tuple[str, str], list[asyncpg.Record]] = {}
    for board in load_dashboards():
        if board.uid == "chargeops-charger-detail":
            continue
        variables: dict[str, Selection] = {v["name"]: ALL for v in board.doc["templating"]["list"]}
        for q in board.queries:
            if q.datasource == POSTGRES_UID:
                sql = grafana_sql(board.doc, q.text, variables, now - timedelta(hours=1), now)
                ran[(board.uid, q.panel)] = pg_fetch(stack.reader_dsn, sql)
    assert len(ran) >= 6, sorted(ran)
    listed = ran[("chargeops-fleet-overview", "Offline and faulted chargers")]
    assert set(NEVER_CONNECTED) <= {r["charger"] for r in listed if r["state"] == "offline"}, listed


def test_grafana_role_cannot_read_secrets_or_write(stack: Stack) -> None:
    """docker/postgres/grants.sql: no password hash, no API token hashes, no ticket texts or people, no
    writes for Grafana."""
    for sql in (
        "SELECT password_hash FROM chargers",
        "SELECT * FROM chargers",
        "SELECT token_sha256 FROM api_tokens",
        "SELECT * FROM id_tokens",
        "SELECT description FROM tickets",
        "SELECT assignee FROM tickets",
        "SELECT actor, note FROM ticket_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            pg_fetch(stack.reader_dsn, sql)
    with pytest.raises(asyncpg.PostgresError):  # read-only transaction, and no UPDATE grant
        pg_fetch(stack.reader_dsn, "UPDATE connectors SET status = 'x'")


def test_alert_rules_evaluate_on_live_series(stack: Stack) -> None:
    """Prometheus loaded alerts.yml and evaluated every rule on the live series without an error."""

    def rules() -> list[dict[str, Any]]:
        body = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]

    # Health is "unknown" until a rule's first evaluation (every second here).
    wait_until("every rule evaluated", lambda: all(r["health"] != "unknown" for r in rules()), 20)
    evaluated = rules()
    assert len(evaluated) >= 10
    bad = {r["name"]: r.get("lastError") for r in evaluated if r.get("health") != "ok"}
    assert not bad, f"rules that failed to evaluate: {bad}"
