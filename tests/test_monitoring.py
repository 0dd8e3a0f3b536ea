"""The monitoring side of docker/: alert rules, Prometheus config and Grafana dashboards, proved against a
real Prometheus (Debian `prometheus` package) scraping a running chargeops with a simulated fleet.

Docker does not run on the test machine, so the compose stack itself is not started here; what is proved
on a live stack: the rules evaluate without error on real series, every dashboard panel's query returns data
(Prometheus panels through Prometheus, the charger-detail panels' SQL on the real PostgreSQL schema, as
Grafana's read-only role). The checks that need no stack are test_monitoring_files.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.grafana_dashboards import (
    ALL,
    POSTGRES_UID,
    Query,
    Selection,
    grafana_sql,
    load_dashboards,
    prometheus_queries,
    substitute_promql,
    substitute_sql,
)
from tests.monitoring_stack import (
    NEVER_CONNECTED,
    Stack,
    exposed_names,
    has_data,
    pg_fetch,
    prom_query,
    wait_until,
)

pytest_plugins = ("tests.monitoring_stack",)

# Panels whose query ends in `or vector(0)` so Grafana shows 0 instead of "No data" for a healthy system.
# The test strips the fallback and demands real data, except for these metrics, which a healthy
# single-process run cannot produce (no broker, no database failure): for them the test checks the name is
# exposed by chargeops (so the query would match) and that the query with its fallback returns data.
ZERO_WHEN_HEALTHY = {
    "chargeops_bus_errors_total": "the test stack runs the in-process bus: there is no broker to fail",
    "chargeops_database_errors_total": "the test database does not fail",
}
FALLBACK = " or vector(0)"


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
