"""Issue 13: `serve` says what it is doing while it starts (INFO lines on `chargeops.startup`), and the
database commands say what they did: `db upgrade` the revisions it went between, `fleet load` what it
migrated, seeded and upserted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from chargeops.db.engine import make_engine
from chargeops.db.migrate import head, revision, upgrade

ROOT = Path(__file__).resolve().parent.parent


def chargeops(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ops.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def at_revision(url: str, target: str | None = None) -> str | None:
    """The database's revision, after migrating it to `target` if given."""

    async def run() -> str | None:
        engine = make_engine(url)
        try:
            if target is not None:
                await upgrade(engine, target)
            return await revision(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_db_upgrade_says_from_which_revision_to_which(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/up.db"
    newest = head()
    assert at_revision(url, "0009") == "0009"
    first = chargeops("db", "upgrade", "--database-url", url)
    assert first.returncode == 0 and first.stdout.strip() == f"database migrated 0009 → {newest}", first
    again = chargeops("db", "upgrade", "--database-url", url)
    assert again.returncode == 0 and again.stdout.strip() == f"database already at {newest}", again
    empty = chargeops("db", "upgrade", "--database-url", f"sqlite+aiosqlite:///{tmp_path}/new.db")
    assert empty.stdout.strip() == f"database migrated (empty) → {newest}", empty
    assert at_revision(f"sqlite+aiosqlite:///{tmp_path}/new.db") == newest


def test_db_upgrade_of_a_wrong_url_is_one_line() -> None:
    result = chargeops("db", "upgrade", "--database-url", "postgres://postgres@127.0.0.1/chargeops")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "postgresql+asyncpg://" in result.stderr


def test_fleet_load_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fleet.db"
    doc = tmp_path / "fleet.yaml"
    doc.write_text(
        "regions: [{id: north}]\ndepots: [{id: d-north, region: north}]\n"
        "sites: [{id: s1, region: north, depot: d-north}]\n"
        "chargers: [{id: CP1, site: s1}, {id: CP2, site: s1}]\n"
    )
    first = chargeops("fleet", "load", str(doc), "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"database migrated (empty) → {head()}",
        "seeded the default spare-parts catalogue and charger models",
        "upserted by id: 1 regions, 1 depots, 1 sites, 2 chargers",
    ], first.stdout
    again = chargeops("fleet", "load", str(doc), "--database-url", url)
    assert again.stdout.splitlines() == ["upserted by id: 1 regions, 1 depots, 1 sites, 2 chargers"]


def test_serve_says_what_it_is_doing_while_it_starts(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--http-port", "0", "--ocpp-port", "0"]
    cmd += ["--database-url", f"sqlite+aiosqlite:///{db}"]
    env = {k: v for k, v in os.environ.items() if k != "CHARGEOPS_MQTT_URL"}
    err_path = tmp_path / "serve.err"
    with err_path.open("wb") as err:
        serve = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and serve.poll() is None and "started:" not in err_path.read_text():
            time.sleep(0.5)
        steps = [line for line in err_path.read_text().splitlines() if " chargeops.startup " in line]
        said = "\n".join(steps)
        assert serve.poll() is None, err_path.read_text()
        for step in (
            f"is empty: migrating it to {head()}",
            "seeded the default spare-parts catalogue",
            "starting ingest",
            "starting ops",
            "starting the OCPP gateway",
            "starting the HTTP API and /metrics",
            "started: gateway, ingest, ops, api",
        ):
            assert step in said, (step, said)
        assert all(" INFO " in line for line in steps), said  # --log-level WARNING hides them
    finally:
        serve.terminate()
        serve.wait(30)
