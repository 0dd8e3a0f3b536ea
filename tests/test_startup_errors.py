"""Issue 13: a start-up problem the operator can fix is one line that says the fix, exit code 2, no traceback
(`ops/startup.py`); ports are found taken before any role starts. Real `chargeops serve` processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def serve(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--http-port", "0", "--ocpp-port", "0", *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def test_a_missing_database_says_createdb(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/chargeops_no_such_db"
    line = one_line(serve("--database-url", missing))
    assert 'database "chargeops_no_such_db" does not exist' in line and "createdb" in line


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgres://postgres@127.0.0.1/chargeops", "postgresql+asyncpg://"),
        ("postgresql://postgres@127.0.0.1/chargeops", "async driver"),
        ("not a url", "cannot parse the database URL"),
        ("postgresql+asyncpg://postgres@127.0.0.1:1/chargeops", "cannot reach the database at 127.0.0.1:1"),
    ],
)
def test_a_wrong_database_url_says_what_to_write(url: str, says: str) -> None:
    assert says in one_line(serve("--database-url", url))


def test_a_taken_port_is_named_before_any_role_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "second.db"
        line = one_line(serve("--ocpp-port", str(port), "--database-url", f"sqlite+aiosqlite:///{db}"))
    assert f"port {port} on 127.0.0.1 is in use" in line and "--ocpp-port" in line
    assert not db.exists()  # nothing was started: no database created, no role writing into it


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--registration-policy", "maybe"], "registration_policy"),
        (["--api-rate-limit", "lots"], "not a rate limit"),
        (["--roles", "gateway,kitchen"], "unknown role(s): kitchen"),
        (["--roles", "gateway"], "needs a shared bus"),
    ],
)
def test_bad_settings_are_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    assert says in one_line(serve(*args, "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db"))


def test_debug_still_shows_the_traceback(tmp_path: Path) -> None:
    result = serve("--database-url", "not a url", "--log-level", "DEBUG")
    assert result.returncode == 2 and "Traceback" in result.stderr and "error: cannot parse" in result.stderr
