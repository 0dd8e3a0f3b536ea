"""The command line (SPEC §3): flags with environment twins, registry commands, role checks."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import head
from chargeops.db.models import Charger
from chargeops.settings import Settings
from firmware_stubs import SimEnvironment
from ops.cli import app
from ops.demo import seed_id_tokens
from tests.conftest import StartRuntime

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
# on the command line a token or password shows in `ps`
SECRET_ONLY_IN_ENVIRONMENT = {"admin_token", "metrics_token", "mqtt_password"}


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """A command sets up logging on the runner's stderr, which is closed afterwards: later tests' log
    records would hit a closed stream ("Logging error")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_every_setting_has_a_serve_flag_with_its_environment_twin() -> None:
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert result.exit_code == 0
    for name in set(Settings.model_fields) - SECRET_ONLY_IN_ENVIRONMENT:
        assert f"--{name.replace('_', '-')}" in result.output, name
        assert f"CHARGEOPS_{name.upper()}" in result.output, name


def test_subset_of_roles_without_a_shared_bus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGEOPS_MQTT_URL", raising=False)
    result = runner.invoke(app, ["serve", "--roles", "gateway"])
    assert result.exit_code == 2 and "CHARGEOPS_MQTT_URL" in result.output


def test_chargers_add_registers_with_a_hashed_password(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    ok = runner.invoke(
        app,
        ["chargers", "add", "CP-CLI", "--password", "a-long-secret-key", "--site", "west"],
        env={"CHARGEOPS_DATABASE_URL": url},
    )
    assert ok.exit_code == 0, ok.output
    short = runner.invoke(
        app,
        ["chargers", "add", "CP-SHORT", "--password", "a-long-secret"],
        env={"CHARGEOPS_DATABASE_URL": url},
    )
    assert short.exit_code == 2 and "16-40 characters" in short.output  # OCPP's minimum, not our guess
    again = runner.invoke(app, ["chargers", "add", "CP-CLI"], env={"CHARGEOPS_DATABASE_URL": url})
    assert again.exit_code == 1 and "already exists" in again.output

    async def stored() -> Charger:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return (await session.execute(select(Charger))).scalar_one()
        finally:
            await engine.dispose()

    row = asyncio.run(stored())
    assert (row.id, row.site, row.security_profile) == ("CP-CLI", "west", 1)
    assert row.password_hash and "a-long-secret" not in row.password_hash  # and CP-SHORT is not there


def test_db_upgrade_on_postgres(pg_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", pg_url])
    assert result.exit_code == 0 and f"database migrated (empty) → {head()}" in result.output, result.output
    again = runner.invoke(app, ["db", "upgrade", "--database-url", pg_url])
    assert again.exit_code == 0 and f"database already at {head()}" in again.output, again.output


async def test_simulate_runs_a_strict_mixed_fleet_against_a_central_system(
    start_runtime: StartRuntime,
) -> None:
    """`chargeops simulate` as an operator runs it (its own process): every charger boots and charges,
    nothing breaks a schema, and the report is JSON on stdout."""
    runtime = await start_runtime(accept_unknown=True)
    assert runtime.gateway is not None
    await seed_id_tokens(runtime, SimEnvironment().id_tags)
    args = ["simulate", "--csms", f"ws://127.0.0.1:{runtime.gateway.port}/ocpp", "--chargers", "4"]
    args += ["--protocol", "mixed", "--duration", "4", "--time-scale", "600", "--session-rate", "0.2"]
    args += ["--sample-interval", "60", "--strict", "--seed", "5", "--log-level", "WARNING"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.cli", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    report = json.loads(out)
    assert report["chargers"] == 4 and report["boots_accepted"] >= 4, report
    assert report["sessions_started"] > 0 and report["energy_wh"] > 0, report
    assert report["schema_violations"] == [] and report["errors"] == 0, report


def test_fleet_load_refuses_dangling_references_and_loads_nothing(tmp_path: Any) -> None:
    """Issue 13: a site on an unknown region or depot, a charger on an unknown site, stock at an unknown
    depot: exit 2 naming each, and nothing of the document is loaded."""
    url = f"sqlite+aiosqlite:///{tmp_path}/fleet.db"
    doc = tmp_path / "fleet.yaml"
    doc.write_text(
        "regions: [{id: north}]\n"
        "depots: [{id: d-north, region: north}]\n"
        "sites:\n  - {id: s1, region: north, depot: d-nowhere}\n  - {id: s2, region: south}\n"
        "chargers: [{id: CP1, site: s1}, {id: CP2, site: s9}]\n"
        "stock: [{depot: d-gone, sku: CT-250A, on_hand: 3}]\n"
    )
    result = runner.invoke(app, ["fleet", "load", str(doc)], env={"CHARGEOPS_DATABASE_URL": url})
    assert result.exit_code == 2, result.output
    for problem in (
        "site s1: unknown depot d-nowhere",
        "site s2: unknown region south",
        "charger CP2: unknown site s9",
        "stock: unknown depot d-gone",
    ):
        assert problem in result.output
    assert "CP1" not in result.output

    async def chargers() -> list[str]:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                return list((await session.scalars(select(Charger.id))).all())
        finally:
            await engine.dispose()

    assert asyncio.run(chargers()) == []
    fixed = doc.read_text().replace("d-nowhere", "d-north").replace("south", "north").replace("s9", "s2")
    doc.write_text(fixed.replace("d-gone", "d-north"))
    ok = runner.invoke(app, ["fleet", "load", str(doc)], env={"CHARGEOPS_DATABASE_URL": url})
    assert ok.exit_code == 0, ok.output
    assert sorted(asyncio.run(chargers())) == ["CP1", "CP2"]
