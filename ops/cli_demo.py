"""`chargeops demo`: `serve` plus a simulated fleet with faults (`ops.demo`), and `--fresh` to start over.

The demo narrates on the terminal whatever `--log-level` says (that only governs log records, WARNING by
default): its start-up steps on stderr (`ops.progress`), then the guide, the fleet connecting and every ticket
opened, resolved or closed on stdout (`ops.demo_watch`). A problem the operator can fix is one line and exit
2, as for `serve` (`ops.startup.fail`).

`--fresh` removes the demo's embedded SQLite database (by default `./chargeops.db`, the `--database-url`
default) before starting, so the demo recreates it empty. It never drops a server database: with any other
`--database-url` it is refused, and so is an SQLite file that holds no chargeops schema.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import typer

from chargeops.settings import ROLES, DemoSettings
from ops.cli_loop import run
from ops.cli_options import DatabaseUrl, EnvOpt, LogLevel, Opt, env_name, given, given_settings, start_logging

# What SQLite keeps beside a database file (write-ahead log, shared memory, rollback journal).
SIDE_FILES = ("-wal", "-shm", "-journal")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def _is_chargeops(db: Path) -> bool:
    """The file is an SQLite database with chargeops's schema (or empty: SQLite creates files that way)."""
    if db.stat().st_size == 0:
        return True
    try:  # read-write, so a write-ahead log a killed demo left is read too (a SELECT writes nothing)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone()
    except sqlite3.DatabaseError:
        return False
    return found is not None


def start_over(database_url: str) -> str:
    """`--fresh`: removes the embedded SQLite database at `database_url` and its side files, so the demo
    starts on an empty one; says what it did. Any other database is a StartupError (nothing is dropped)."""
    from sqlalchemy.engine import make_url

    from ops.startup import StartupError

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        where = url.render_as_string(hide_password=True)
        raise StartupError(
            f"--fresh starts over only on the demo's embedded SQLite database and will not drop {where}: "
            "drop and recreate that database yourself, or leave out --database-url"
        )
    path = url.database or ""
    if path in ("", ":memory:") or url.query.get("mode") == "memory":
        return "--fresh: the database is in memory, empty at every start"
    db = Path(path)
    if not db.exists():
        return f"--fresh: no database at {db} yet"
    if not _is_chargeops(db):
        raise StartupError(f"{db} is not a chargeops database: --fresh removes nothing but the demo's own")
    for name in (db, *(db.with_name(db.name + side) for side in SIDE_FILES)):
        name.unlink(missing_ok=True)
    return f"--fresh: removed {db}; starting on an empty database"


def DemoOpt(field: str, help: str) -> Any:
    """A `demo` flag, twin of `CHARGEOPS_DEMO_<FIELD>` (`chargeops.settings.DemoSettings`)."""
    return EnvOpt(env_name(field, "CHARGEOPS_DEMO_"), help)


def demo(
    chargers: Annotated[int | None, DemoOpt("chargers", "simulated chargers (20)")] = None,
    fault_rate: Annotated[
        float | None, DemoOpt("fault_rate", "faults per charger per simulated hour (0.5)")
    ] = None,
    time_scale: Annotated[
        float | None, DemoOpt("time_scale", "simulated seconds per real second (30)")
    ] = None,
    ocpp_port: Annotated[int | None, Opt("ocpp_port", "OCPP WebSocket port (default 9000)")] = None,
    http_port: Annotated[int | None, Opt("http_port", "HTTP API port (default 8000)")] = None,
    database_url: DatabaseUrl = None,
    fresh: Annotated[
        bool | None,
        DemoOpt("fresh", "start over: remove the demo's SQLite database first (refused for any other)"),
    ] = None,
    log_level: LogLevel = None,
) -> None:
    """`serve` plus a simulated fleet with faults; prints where to look, then each ticket as it opens.
    Logs at WARNING unless --log-level / CHARGEOPS_LOG_LEVEL says otherwise."""
    from ops import progress
    from ops.startup import fail, probe_ports

    settings = None
    try:
        start_logging(log_level, default="WARNING")
        progress.narrate()
        options = given(
            DemoSettings, chargers=chargers, fault_rate=fault_rate, time_scale=time_scale, fresh=fresh
        )
        settings = given_settings(
            ocpp_port=ocpp_port, http_port=http_port, database_url=database_url, accept_unknown=True
        )
        probe_ports(settings, set(ROLES))  # a demo already running on this database is not pulled from under
        if options.fresh:
            progress.log.info("%s", start_over(settings.database_url))
        from ops.demo import run_demo

        run(
            run_demo(
                settings,
                chargers=options.chargers,
                fault_rate=options.fault_rate,
                time_scale=options.time_scale,
            )
        )
    except Exception as exc:
        fail(exc, settings)
