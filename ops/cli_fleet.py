"""`chargeops status` and `chargeops chargers list`: the fleet in a terminal, without Grafana (issue 13).

Like `fleet load` and `db upgrade` they read the database (`--database-url`), not the HTTP API: no token to
hand out, and they work while `serve` is down. They print what `GET /api/fleet/summary` and
`GET /api/chargers` serve, through the same queries (`ops.fleet_summary`, `telemetry.fleet_state`).
A problem the operator can fix is one line with the fix and exit 2 (`ops.startup.fail`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from ops.cli_options import DatabaseUrl, given_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="print the raw JSON instead")]
DB_FLAG = "--database-url / CHARGEOPS_DATABASE_URL"


def register(app: typer.Typer, chargers_app: typer.Typer) -> None:
    app.command("status")(status)
    chargers_app.command("list")(chargers_list)


def _error(line: str) -> NoReturn:
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def _existing(database_url: str) -> None:
    """A read-only command must not create an SQLite file: a wrong path would read as an empty fleet."""
    from sqlalchemy.engine import make_url

    from ops.startup import StartupError

    url = make_url(database_url)
    path = url.database or ""
    if url.get_backend_name() == "sqlite" and path not in ("", ":memory:") and not Path(path).exists():
        raise StartupError(f"no database at {path}: point {DB_FLAG} at the one `chargeops serve` uses")


async def _read_with(database_url: str, read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`read` in a session on a chargeops database (an empty one is not migrated: it is the wrong one)."""
    from chargeops.db.engine import make_engine, make_sessionmaker
    from chargeops.db.migrate import is_empty
    from ops.startup import StartupError

    engine = make_engine(database_url)
    try:
        if await is_empty(engine):
            where = engine.url.render_as_string(hide_password=True)
            raise StartupError(f"{where} holds no chargeops data: point {DB_FLAG} at the one serve uses")
        async with make_sessionmaker(engine)() as session:
            return await read(session)
    finally:
        await engine.dispose()


def _read(database_url: str | None, read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from ops.startup import fail

    settings = None
    try:
        settings = given_settings(database_url=database_url)
        _existing(settings.database_url)
        return asyncio.run(_read_with(settings.database_url, read))
    except Exception as exc:
        fail(exc, settings)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items()) or "none"


def status(database_url: DatabaseUrl = None, as_json: AsJson = False) -> None:
    """The fleet at a glance: chargers by connection, status, protocol and site; open maintenance tickets;
    supply warnings in force."""
    from ops.fleet_summary import fleet_summary

    summary = _read(database_url, fleet_summary)
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
        return
    c, t, w = summary.chargers, summary.maintenance_tickets, summary.supply_warnings
    priorities = _counts(t.by_priority)
    lines = [
        ("chargers", f"{c.total}: {c.by_connection.connected} connected, {c.by_connection.offline} offline"),
        ("  status", _counts(c.by_status)),
        ("  protocol", _counts(c.by_protocol)),
        ("  site", _counts(c.by_site)),
        ("maintenance", f"{t.open} open ({priorities}), {t.past_sla} past SLA, {t.unassigned} unassigned"),
        ("supply warnings", f"{w.in_force} in force ({_counts(w.by_level)})"),
    ]
    width = max(shutil.get_terminal_size().columns, 60)
    for label, text in lines:
        lead = f"{label:<17}"
        typer.echo(textwrap.fill(text, width, initial_indent=lead, subsequent_indent=" " * len(lead)))


def _status_named(name: str) -> str:
    """The status as chargers report it, whatever its case; an unknown one is an error that lists them."""
    from telemetry.fleet_state import STATUSES

    for known in STATUSES:
        if known.lower() == name.lower():
            return known
    _error(f"unknown status {name!r}: use one of {', '.join(STATUSES)}")


def chargers_list(
    status: Annotated[str | None, typer.Option(help="only chargers with this status, e.g. Faulted")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="only chargers not connected")] = False,
    site: Annotated[str | None, typer.Option(help="only chargers at this site")] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List chargers by id: site, protocol, status (the worst its connectors report), connected, last seen."""
    from chargeops.db.engine import stored_iso
    from chargeops.db.models import Charger
    from telemetry.fleet_state import charger_states, status_is

    where: list[Any] = []
    if status is not None:
        where.append(status_is(_status_named(status)))
    if offline:
        where.append(Charger.connected.is_(False))
    if site is not None:
        where.append(Charger.site == site)
    rows = _read(database_url, lambda session: charger_states(session, *where))
    docs: list[dict[str, Any]] = [
        {"id": r.id, "site": r.site, "protocol": r.protocol, "status": r.status, "connected": r.connected}
        | {"last_seen": stored_iso(r.last_seen)}
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        typer.echo("no chargers match", err=True)
        return
    table: list[tuple[str, ...]] = [("ID", "SITE", "PROTOCOL", "STATUS", "CONNECTED", "LAST SEEN")]
    for d in docs:
        seen = d["last_seen"].replace("T", " ")[:19] + "Z" if d["last_seen"] else "never"
        cells = (d["id"], d["site"], d["protocol"], d["status"], "yes" if d["connected"] else "no", seen)
        table.append(tuple(cell or "-" for cell in cells))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
