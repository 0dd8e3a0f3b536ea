"""The monitoring files of docker/ as the tests read them: paths, the Grafana dashboards with their panels'
queries flattened, and the datasource uids (shared by test_monitoring_files and test_monitoring)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
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
