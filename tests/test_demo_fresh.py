"""Issue 13: `chargeops demo --fresh` starts over on an empty embedded database and never drops another one,
and the demo narrates: its start-up steps on stderr, each ticket as it opens on stdout. Real processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "demo-fresh-token"
OPENED = re.compile(r"^ticket \d+ opened: P\d \S+ at DEMO\d{5}", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chargeops(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHARGEOPS_DATABASE_URL"}
    cmd = [sys.executable, "-m", "ops.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def test_fresh_refuses_a_server_database(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://chargeops:s3cret-pw@127.0.0.1:1/production"
    line = one_error(chargeops("demo", "--fresh", "--database-url", url, *ports(), cwd=tmp_path))
    assert "will not drop postgresql+asyncpg://chargeops:***@127.0.0.1:1/production" in line, line
    assert "s3cret-pw" not in line


def test_fresh_removes_no_sqlite_file_but_a_chargeops_database(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    other.write_bytes(b"not a database, and not the demo's to remove" * 10)
    url = f"sqlite+aiosqlite:///{other}"
    line = one_error(chargeops("demo", "--fresh", "--database-url", url, *ports(), cwd=tmp_path))
    assert "is not a chargeops database" in line and other.exists()


def ports() -> list[str]:
    return ["--http-port", str(free_port()), "--ocpp-port", str(free_port())]


def test_fresh_demo_starts_empty_and_prints_tickets_as_they_open(tmp_path: Path) -> None:
    """A charger registered before (in the default `./chargeops.db`, which the demo uses too) is gone after
    `demo --fresh`; with faults frequent, `ticket N opened: …` lines come within seconds."""
    added = chargeops("chargers", "add", "CP-BEFORE", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "chargeops.db").exists()
    http_port = free_port()
    args = ["demo", "--fresh", "--chargers", "4", "--fault-rate", "120", "--time-scale", "60"]
    args += ["--http-port", str(http_port), "--ocpp-port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if k != "CHARGEOPS_DATABASE_URL"}
    env["CHARGEOPS_ADMIN_TOKEN"] = TOKEN
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        cmd = [sys.executable, "-m", "ops.cli", *args]
        demo = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=err)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and demo.poll() is None and not OPENED.search(out_path.read_text()):
            time.sleep(1)
        stdout, stderr = out_path.read_text(), err_path.read_text()
        assert demo.poll() is None, stdout + stderr
        assert OPENED.search(stdout), stdout + stderr
        chargers = [c["id"] for c in api.get("/api/chargers").json()["items"]]
        assert "CP-BEFORE" not in chargers and any(c.startswith("DEMO") for c in chargers), chargers
        assert api.get("/api/chargers/CP-BEFORE").status_code == 404
        opened = int(OPENED.findall(stdout)[0].split()[1])
        ticket = api.get(f"/api/tickets/{opened}").json()  # the line names a ticket the API has
        assert ticket["kind"] == "maintenance" and ticket["charger_id"].startswith("DEMO"), ticket
        assert "fleet: " in stdout and "simulated chargers and stations connected" in stdout
        # the start-up steps, as bare lines, though the demo logs at WARNING
        lines = stderr.splitlines()
        steps = ("--fresh: removed", "is empty: migrating it to", "starting ops", "connecting 8 simulated")
        for step in steps:
            assert any(step in line and "WARNING" not in line for line in lines), (step, stderr)
        assert "Traceback" not in stderr
    finally:
        api.close()
        demo.terminate()
        demo.wait(30)
