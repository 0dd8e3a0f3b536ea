"""`chargeops status` and `chargeops chargers list` (issue 13) as an operator runs them (their own process),
on a Postgres database holding a small fleet: what they print is what is stored; bad input is one line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from chargeops.db.ops_models import Ticket
from ops.registry import FleetDoc, apply_fleet
from tests.conftest import migrated_sessions
from tests.test_api_fleet_summary import FLEET, open_fault, seed_reports

ROOT = Path(__file__).resolve().parent.parent


async def chargeops(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `chargeops ARGS`; a wide terminal, so no line is wrapped."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ops.cli", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and out == "", err
    (line,) = err.splitlines()
    assert line.startswith("error: "), line
    return line


async def test_status_and_list_print_what_the_database_holds(pg_url: str) -> None:
    async with migrated_sessions(pg_url) as sessions:
        async with sessions.begin() as session:
            await apply_fleet(session, FleetDoc.model_validate(FLEET))
        await seed_reports(sessions)
        await open_fault(sessions, "N1", "GroundFailure", ago=9)  # P1, past its 8 h SLA
        ticket = await open_fault(sessions, "S1", "ReaderFailure", ago=1)  # P3
        async with sessions.begin() as session:
            row = await session.get(Ticket, ticket)
            assert row is not None
            row.assignee = "alice"
    db = ("--database-url", pg_url)

    code, out, err = await chargeops("status", *db)
    assert code == 0, err
    assert out.splitlines() == [
        "chargers         5: 3 connected, 2 offline",
        "  status         Faulted 2, Charging 1, Available 1, (none) 1",
        "  protocol       ocpp1.6 2, ocpp2.0.1 2, (none) 1",
        "  site           north-1 2, north-2 1, south-1 1, (none) 1",
        "maintenance      2 open (P1 1, P2 0, P3 1, P4 0), 1 past SLA, 1 unassigned",
        "supply warnings  2 in force (critical 1, warning 1, watch 0)",
    ]
    code, out, err = await chargeops("status", "--json", *db)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["chargers"]["by_connection"] == {"connected": 3, "offline": 2}
    assert summary["maintenance_tickets"]["past_sla"] == 1

    code, out, err = await chargeops("chargers", "list", *db)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "SITE", "PROTOCOL", "STATUS", "CONNECTED", "LAST", "SEEN"]
    assert [r.split() for r in rows] == [
        ["N1", "north-1", "ocpp1.6", "Faulted", "yes", "2026-03-01", "08:00:00Z"],
        ["N2", "north-1", "ocpp2.0.1", "Charging", "yes", "2026-03-01", "08:00:00Z"],
        ["N3", "north-2", "ocpp2.0.1", "Available", "no", "never"],
        ["S1", "south-1", "ocpp1.6", "Faulted", "yes", "2026-03-01", "08:00:00Z"],
        ["X1", "-", "-", "-", "no", "never"],
    ]
    code, out, err = await chargeops(
        "chargers", "list", "--status", "faulted", "--site", "north-1", "--json", *db
    )
    assert code == 0, err
    assert out.index('"status"') < out.index('"connected"')  # the table's order
    assert json.loads(out) == [
        {
            "id": "N1",
            "site": "north-1",
            "protocol": "ocpp1.6",
            "status": "Faulted",
            "connected": True,
            "last_seen": "2026-03-01T08:00:00Z",
        }
    ]
    code, out, err = await chargeops("chargers", "list", "--offline", *db)
    assert code == 0, err
    assert [r.split()[0] for r in out.splitlines()[1:]] == ["N3", "X1"]
    code, out, err = await chargeops("chargers", "list", "--status", "Occupied", *db)
    assert (code, out, err.strip()) == (0, "", "no chargers match")  # N2's Occupied is behind its Charging


async def test_bad_input_is_one_line_with_the_fix(pg_url: str, tmp_path: Path) -> None:
    line = one_line_error(
        *await chargeops("chargers", "list", "--status", "Broken", "--database-url", pg_url)
    )
    assert "unknown status 'Broken'" in line and "Faulted" in line and "SuspendedEVSE" in line
    # An empty database is the wrong one: not migrated, not read as an empty fleet.
    line = one_line_error(*await chargeops("status", "--database-url", pg_url))
    assert "holds no chargeops data" in line and "--database-url" in line
    missing = tmp_path / "nothing-here.db"
    line = one_line_error(*await chargeops("status", "--database-url", f"sqlite+aiosqlite:///{missing}"))
    assert f"no database at {missing}" in line
    assert not missing.exists()
    line = one_line_error(*await chargeops("status", "--database-url", "postgres://postgres@127.0.0.1/x"))
    assert "postgresql+asyncpg://" in line
