"""The monitoring files of docker/ as the tests read them: paths, the Grafana dashboards with their panels'
queries flattened, the datasource uids (shared by test_monitoring_files and test_monitoring), and the
queries with Grafana's variables and macros substituted (test_monitoring, test_dashboard_sql)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROM_DIR = DOCKER / "prometheus"
DASHBOARDS = DOCKER / "grafana" / "dashboards"

PROMETHEUS_UID = "chargeops-prometheus"
POSTGRES_UID = "chargeops-postgres"


@dataclass
class Query:
    """One panel target, with where it came from (for failure messages)."""

    dashboard: str
    panel: str
    datasource: str
    text: str
    instant: bool = True

    def where(self) -> str:
        return f"{self.dashboard} / {self.panel!r}"


@dataclass
class Dashboard:
    uid: str
    title: str
    doc: dict[str, Any]
    queries: list[Query] = field(default_factory=list)


def load_dashboards() -> list[Dashboard]:
    """Every dashboard file, with its panels' targets flattened (rows may nest panels)."""
    boards = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text())
        board = Dashboard(doc.get("uid", ""), doc.get("title", ""), doc)
        for panel in iter_panels(doc.get("panels", [])):
            ds = (panel.get("datasource") or {}).get("uid", "")
            for target in panel.get("targets", []):
                text = target.get("expr") if ds == PROMETHEUS_UID else target.get("rawSql")
                board.queries.append(Query(board.uid, panel.get("title", ""), ds, text or ""))
        boards.append(board)
    return boards


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel.get("type") == "row":
            yield from iter_panels(panel.get("panels", []))
        else:
            yield panel


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


def prometheus_queries() -> list[Query]:
    return [q for b in load_dashboards() for q in b.queries if q.datasource == PROMETHEUS_UID]
