"""The monitoring side of docker/ checked without a running stack: promtool accepts the Prometheus config
and the alert rules and their unit tests pass, the dashboards are valid Grafana JSON, the files compose and
the Dockerfile refer to exist, and metric names carry their units. The live checks are test_monitoring.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from tests.grafana_dashboards import (
    DOCKER,
    POSTGRES_UID,
    PROM_DIR,
    PROMETHEUS_UID,
    ROOT,
    iter_panels,
    load_dashboards,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real promtool; its absence is a failure (the brief: prove it), never a skip."""
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install Debian's `prometheus` package"
    return subprocess.run([exe, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    """Offline, site-offline, ingest-lag, ingest-stalled, fault-spike and broker alerts on crafted series."""
    text = (PROM_DIR / "alerts_test.yml").read_text()
    for alert in ("ChargeopsChargersOffline", "ChargeopsSiteOffline", "ChargeopsIngestLagHigh"):
        assert f"alertname: {alert}" in text
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_are_valid_grafana_json() -> None:
    boards = load_dashboards()
    assert {b.uid for b in boards} == {
        "chargeops-fleet-overview",
        "chargeops-charger-detail",
        "chargeops-pipeline",
        "chargeops-operations",
        "chargeops-swaps",
        "chargeops-sites",
    }
    for board in boards:
        doc = board.doc
        assert board.title and isinstance(doc.get("schemaVersion"), int), board.uid
        panels = list(iter_panels(doc["panels"]))
        assert panels, board.uid
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{board.uid}: duplicate panel ids"
        variables = {v["name"] for v in doc.get("templating", {}).get("list", [])}
        for panel in panels:
            where = f"{board.uid} / {panel.get('title')!r}"
            assert panel.get("title") and panel.get("type") and panel.get("gridPos"), where
            ds = panel.get("datasource") or {}
            assert ds.get("uid") in (PROMETHEUS_UID, POSTGRES_UID), where
            targets = panel.get("targets") or []
            assert targets, f"{where}: no targets"
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), where
            for target in targets:
                assert (target.get("datasource") or ds).get("uid") == ds["uid"], where
                key = "expr" if ds["uid"] == PROMETHEUS_UID else "rawSql"
                assert target.get(key), f"{where}: target without {key}"
                used = set(re.findall(r"\$\{?([a-z]\w*)", target[key])) - {"__rate_interval"}
                assert used <= variables, f"{where}: undefined template variable(s) {used - variables}"
        for query in board.queries:
            if query.datasource == PROMETHEUS_UID:
                names = set(re.findall(r"\bchargeops_[a-z0-9_]+", query.text))
                assert names or "up{" in query.text, f"{query.where()}: no chargeops metric"
    # The panels' datasource uids are the ones Grafana is provisioned with.
    provisioned = (DOCKER / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    assert f"uid: {PROMETHEUS_UID}" in provisioned and f"uid: {POSTGRES_UID}" in provisioned


def test_charger_detail_is_postgres_and_no_per_charger_prometheus_label() -> None:
    """10,000 chargers must not become 10,000 series: per-charger panels (charger detail, the fleet
    overview's list of offline and faulted chargers) read PostgreSQL, and no Prometheus query names a
    charger."""
    for board in load_dashboards():
        for query in board.queries:
            if board.uid == "chargeops-charger-detail":
                assert query.datasource == POSTGRES_UID, query.where()
            elif query.datasource == PROMETHEUS_UID:
                assert "charger_id" not in query.text and "$charger" not in query.text, query.where()


def test_compose_and_dockerfile_refer_to_existing_files() -> None:
    """Docker cannot run here: at least every host path the compose file mounts and the Dockerfile copies
    exists, and each chargeops role is its own service."""
    compose = (DOCKER / "compose.yaml").read_text()
    for rel in re.findall(r"^\s*-\s*(\./[^:\s]+):", compose, flags=re.M):
        assert (DOCKER / rel).exists(), f"compose.yaml mounts missing {rel}"
    for service in (
        "postgres",
        "mosquitto",
        "prometheus",
        "grafana",
        "migrate",
        "ingest",
        "gateway",
        "ops",
        "api",
        "simulator",
    ):
        assert re.search(rf"^  {service}:\s*$", compose, flags=re.M), f"no service {service}"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    mosquitto = (DOCKER / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", mosquitto, flags=re.M)
    assert re.search(r"^max_queued_messages 0$", mosquitto, flags=re.M)


def test_the_gateway_spool_outlives_its_container() -> None:
    """Events the chargers were answered for wait in the gateway's spool while the broker is away: compose
    keeps it on a named volume (a recreated container must not lose them), owned by the image's user."""
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    spool = gateway["environment"]["CHARGEOPS_SPOOL_DIR"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in gateway["volumes"]}
    assert mounts.get(spool) in compose["volumes"], (spool, mounts)
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(rf"install -d -o chargeops -g chargeops {re.escape(spool)}", dockerfile)


def test_metric_names_carry_their_units_and_no_created_series() -> None:
    """Issue 13: energy in `_watt_hours_total`, 0-1 quantities as `_ratio`, no `_created` twins."""
    from prometheus_client import REGISTRY, generate_latest

    import telemetry.metrics as m

    m.SITE_ENERGY.labels("unit-test-site").inc(0)
    text = generate_latest(REGISTRY).decode()
    assert "chargeops_site_energy_watt_hours_total{" in text
    assert "_created" not in text
    names = {metric.name for metric in REGISTRY.collect() if metric.name.startswith("chargeops_")}
    assert not {n for n in names if n.endswith(("_percent", "_wh", "_kw"))}, names
