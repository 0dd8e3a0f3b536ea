"""The command line (SPEC §3): flags with environment twins read by the settings alone, registry commands,
role checks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from sqlalchemy import select
from typer.testing import CliRunner

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import head
from chargeops.db.models import Charger
from chargeops.settings import DemoSettings, LogSettings, Settings, SimSettings
from firmware_stubs import SimEnvironment
from ops.cli import app
from ops.cli_options import given_settings
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


SAMPLE = {  # a value differing from the default, per type, to see the environment reach the settings
    int: ("7", 7),
    float: ("2.5", 2.5),
    bool: ("true", True),
    str: ("x1", "x1"),
    SecretStr: ("s3cret", "s3cret"),
}


def _sample(name: str, cls: type[BaseSettings]) -> tuple[str, Any]:
    special = {
        "roles": ("ops", "ops"),
        "registration_policy": ("pending", "pending"),
        "log_level": ("error", "ERROR"),
        "log_format": ("json", "json"),
        "api_rate_limit": ("off", "off"),
        "trusted_proxies": ("10.0.0.0/8",) * 2,
        "protocol": ("mixed", "mixed"),
    }
    if name in special:
        return special[name]
    annotation = cls.model_fields[name].annotation
    for kind, pair in SAMPLE.items():
        if annotation is kind or annotation == kind | None:
            return pair
    return "/tmp/x.pem", Path("/tmp/x.pem")  # the Path settings


@pytest.mark.parametrize(
    ("cls", "prefix"),
    [(Settings, "CHARGEOPS_"), (SimSettings, "CHARGEOPS_SIM_"), (DemoSettings, "CHARGEOPS_DEMO_")],
)
def test_the_settings_classes_alone_read_every_environment_twin(
    cls: type[BaseSettings], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: one reader of `CHARGEOPS_*`. Setting CHARGEOPS_X changes the settings' x, and no command
    line option reads the environment itself (typer would be a second reader, with its own parsing)."""
    for key in [k for k in os.environ if k.startswith("CHARGEOPS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CHARGEOPS_SIM_CSMS", "ws://x")  # required
    for name in cls.model_fields:
        raw, value = _sample(name, cls)
        monkeypatch.setenv(f"{prefix}{name.upper()}", raw)
        got = getattr(cls(), name)
        got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
        assert got == value, name
    for command in _commands(typer.main.get_command(app)):
        for param in command.params:
            assert not getattr(param, "envvar", None), f"{command.name} {param.name}: {param.envvar}"


def _commands(group: Any) -> Iterator[Any]:
    yield group
    for sub in getattr(group, "commands", {}).values():
        yield from _commands(sub)


@pytest.mark.parametrize(
    ("command", "cls", "prefix"),
    [
        ("serve", Settings, "CHARGEOPS_"),
        ("simulate", SimSettings, "CHARGEOPS_SIM_"),
        ("demo", DemoSettings, "CHARGEOPS_DEMO_"),
    ],
)
def test_every_setting_has_a_flag_and_its_help_names_the_environment_twin(
    command: str, cls: type[BaseSettings], prefix: str
) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
    assert result.exit_code == 0
    for name in set(cls.model_fields) - SECRET_ONLY_IN_ENVIRONMENT:
        assert f"--{name.replace('_', '-')}" in result.output, name
        env = prefix + name.upper() if name not in LogSettings.model_fields else f"CHARGEOPS_{name.upper()}"
        assert env in result.output, name


def test_a_flag_beats_the_environment_which_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGEOPS_HEARTBEAT_INTERVAL", raising=False)
    assert given_settings().heartbeat_interval == 300
    monkeypatch.setenv("CHARGEOPS_HEARTBEAT_INTERVAL", "120")
    assert given_settings(heartbeat_interval=None).heartbeat_interval == 120  # not given on the command line
    assert given_settings(heartbeat_interval=60).heartbeat_interval == 60
    monkeypatch.setenv("CHARGEOPS_HEARTBEAT_INTERVAL", "often")  # a bad value a flag overrides is not used
    assert given_settings(heartbeat_interval=60).heartbeat_interval == 60


@pytest.mark.parametrize(
    ("command", "env", "flag", "level"),
    [
        (["serve"], None, None, logging.INFO),
        (["serve"], "error", None, logging.ERROR),
        (["serve"], "error", "WARNING", logging.WARNING),
        (["demo", "--fresh"], None, None, logging.WARNING),  # the demo's own default
        (["demo", "--fresh"], "ERROR", None, logging.ERROR),
        (["demo", "--fresh"], "ERROR", "debug", logging.DEBUG),
    ],
)
def test_the_log_level_is_the_flag_else_the_environment_else_the_commands_default(
    command: list[str], env: str | None, flag: str | None, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run stops on a database the demo refuses to drop / a subset of roles without a bus: exit 2 after
    logging was set up."""
    monkeypatch.delenv("CHARGEOPS_MQTT_URL", raising=False)
    monkeypatch.delenv("CHARGEOPS_LOG_LEVEL", raising=False)
    if env is not None:
        monkeypatch.setenv("CHARGEOPS_LOG_LEVEL", env)
    args = [*command, "--http-port", "0", "--ocpp-port", "0"]
    args += (
        ["--roles", "gateway"] if command == ["serve"] else ["--database-url", "postgresql+asyncpg://h/db"]
    )
    result = runner.invoke(app, args + (["--log-level", flag] if flag else []))
    assert result.exit_code == 2, result.output
    assert logging.getLogger().level == level


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (
            ["serve", "--roles", "ops"],
            {"CHARGEOPS_HTTP_PORT": "eighty"},
            "http_port: Input should be a valid integer",
        ),
        (["serve"], {"CHARGEOPS_LOG_LEVEL": "loud"}, "log_level: Input should be"),
        (["simulate"], {}, "csms: Field required"),
        (["simulate", "--csms", "ws://h"], {"CHARGEOPS_SIM_CHARGERS": "many"}, "chargers: Input should be"),
        (["demo"], {"CHARGEOPS_DEMO_TIME_SCALE": "0"}, "time_scale: Input should be greater than 0"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("CHARGEOPS_SIM_CSMS", "CHARGEOPS_LOG_LEVEL"):
        monkeypatch.delenv(key, raising=False)
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and says in errors[0], result.output


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
