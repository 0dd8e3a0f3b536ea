"""Alert rules (docker/prometheus/alerts.yml): promtool accepts them and their unit tests pass, every alert is
tested firing and not firing, carries a severity, summary, description and a runbook in the README, the
compose stack loads the file; and the ticket gauges the P1 alerts read hold the right values."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from chargeops import clock
from chargeops.db.ops_models import Ticket
from ops import tickets
from ops.engine import OpsEngine
from tests.conftest import migrated_sessions

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "docker" / "prometheus"
RUNBOOK_BASE = "https://github.com/chargeops/chargeops#"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """The real promtool (Debian's `prometheus` package); its absence is a failure, never a skip."""
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's `prometheus` package"
    return subprocess.run([exe, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120)


def load(name: str) -> Any:
    return yaml.safe_load((PROM_DIR / name).read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in load("alerts.yml")["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases: dict[str, set[bool]] = {}
    for test in load("alerts_test.yml")["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    names = [rule["alert"] for rule in alerts()]
    assert len(names) >= 21 and len(set(names)) == len(names)
    missing = {name: cases.get(name, set()) for name in names if cases.get(name) != {True, False}}
    assert not missing, f"alerts without both a firing and a quiet case (cases seen): {missing}"
    assert set(cases) <= set(names), f"tests of unknown alerts: {set(cases) - set(names)}"


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_annotations_and_a_runbook_in_the_readme() -> None:
    anchors = {github_slug(m[1]) for m in re.finditer(r"^#+ (.+)$", (ROOT / "README.md").read_text(), re.M)}
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert notes["runbook_url"] == f"{RUNBOOK_BASE}runbook-{name.lower()}", name
        assert f"runbook-{name.lower()}" in anchors, f"README has no runbook section for {name}"
    operations = {rule["alert"]: rule for rule in alerts()}
    for name in (
        "ChargeopsSupplyRiskCritical",
        "ChargeopsP1TicketOverdue",
        "ChargeopsP1TicketUnassigned",
        "ChargeopsWebhookBacklogGrowing",
        "ChargeopsSwapPacksLeftBehind",
    ):
        assert name in operations, name


def test_the_compose_prometheus_loads_the_rules_file() -> None:
    assert "alerts.yml" in load("prometheus.yml")["rule_files"]
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0 and "21 rules found" in config.stdout, config.stdout + config.stderr
    service = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    assert any(v.split(":")[:2] == ["./prometheus", "/etc/prometheus"] for v in service["volumes"])


def gauge(name: str, kind: str, priority: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"kind": kind, "priority": priority})


async def test_ticket_gauges_overdue_and_unassigned(db_url: str) -> None:
    """Overdue counts unresolved tickets past `sla_due_at`; unassigned counts status `open` and its age
    runs from creation or from being handed back (assigned -> open); every kind and priority is 0 if none."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    now = clock.ManualClock(t0)

    def ticket(n: int, priority: str, sla_hours: float) -> Ticket:
        return Ticket(
            kind="maintenance",
            priority=priority,
            charger_id=f"CP{n}",
            rule="test",
            sla_due_at=t0 + timedelta(hours=sla_hours),
        )

    async with migrated_sessions(db_url) as sessions:
        with clock.use(now):
            async with sessions() as session, session.begin():
                await tickets.create(session, ticket(1, "P1", 8), "test")  # open since t0, within SLA
                working = await tickets.create(session, ticket(2, "P1", 1), "test")
                await tickets.create(session, ticket(3, "P2", 2), "test")  # open and overdue
                done = await tickets.create(session, ticket(4, "P1", 1), "test")
                handed_back = await tickets.create(session, ticket(5, "P3", 72), "test")
                await tickets.step(session, working, "in_progress", "crew")  # overdue, not unassigned
                await tickets.step(session, done, "in_progress", "crew")
                await tickets.step(session, done, "resolved", "crew")  # past its SLA, but resolved
                await tickets.step(session, handed_back, "assigned", "crew")
                back_id = handed_back.id
            now.advance(timedelta(hours=3))
            async with sessions() as session, session.begin():
                back = await session.get(Ticket, back_id)
                assert back is not None
                await tickets.step(session, back, "open", "crew")
            now.advance(timedelta(minutes=20))
            await OpsEngine(sessions).refresh_gauges()

    waited = (3 * 60 + 20) * 60.0
    assert gauge("chargeops_tickets_overdue", "maintenance", "P1") == 1
    assert gauge("chargeops_tickets_overdue", "maintenance", "P2") == 1
    assert gauge("chargeops_tickets_overdue", "maintenance", "P3") == 0
    assert gauge("chargeops_tickets_unassigned", "maintenance", "P1") == 1
    assert gauge("chargeops_tickets_unassigned_max_age_seconds", "maintenance", "P1") == waited
    assert gauge("chargeops_tickets_unassigned", "maintenance", "P2") == 1
    assert gauge("chargeops_tickets_unassigned_max_age_seconds", "maintenance", "P2") == waited
    assert gauge("chargeops_tickets_unassigned", "maintenance", "P3") == 1
    assert gauge("chargeops_tickets_unassigned_max_age_seconds", "maintenance", "P3") == 20 * 60.0
    assert gauge("chargeops_tickets_open", "maintenance", "P1") == 2
    for name in (
        "chargeops_tickets_overdue",
        "chargeops_tickets_unassigned",
        "chargeops_tickets_unassigned_max_age_seconds",
    ):
        assert gauge(name, "maintenance", "P4") == 0
        for priority in ("P1", "P2", "P3", "P4"):
            assert gauge(name, "supply", priority) == 0


def test_swap_step_series_start_at_zero() -> None:
    """`increase()` of a series that appears at 1 is 0: the pack-left-behind alert needs it exported at 0."""
    for step in ("BatteryIn", "BatteryOut", "BatteryOutTimeout"):
        value = REGISTRY.get_sample_value("chargeops_battery_swap_events_total", {"event_type": step})
        assert value is not None, step
