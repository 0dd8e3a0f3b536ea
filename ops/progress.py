"""What a starting chargeops is doing, in short lines (issue 13).

`serve` and `demo` say when they connect to the broker, migrate the database, seed the catalogue and start
each role; `db upgrade` says which revisions it went between. The start-up steps are INFO records on the
`chargeops.startup` logger, so `serve` shows them among its other log lines (its default `--log-level INFO`;
`WARNING` or above keeps start-up as quiet as every other INFO line). `chargeops demo` logs at WARNING by
default yet narrates its start: `narrate()` prints this logger's records as bare lines on stderr, whatever
`--log-level` says.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncEngine

from chargeops.db.migrate import head, revision, upgrade

log = logging.getLogger("chargeops.startup")


def narrate(stream: TextIO | None = None) -> None:
    """Print start-up steps as bare lines on `stream` (stderr) at any root log level, and only there."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def where(engine: AsyncEngine) -> str:
    """The database's URL without its password."""
    return engine.url.render_as_string(hide_password=True)


async def migrate(engine: AsyncEngine) -> str:
    """Bring the database to the newest revision; says what that took: `migrated 0009 → 0015`,
    `migrated (empty) → 0015` or `already at 0015`."""
    before, target = await revision(engine), head()
    if before == target:
        return f"already at {target}"
    await upgrade(engine)
    return f"migrated {before or '(empty)'} → {target}"


async def check_database(engine: AsyncEngine, *, empty: bool) -> None:
    """`serve` start-up: an empty database is migrated (said first: the first migration takes a moment);
    one at another revision than this chargeops's is a warning, since `serve` does not migrate data."""
    if empty:
        log.info("database %s is empty: migrating it to %s", where(engine), head())
        await upgrade(engine)
        return
    at, newest = await revision(engine), head()
    if at == newest:
        log.info("database %s at revision %s", where(engine), at)
    else:
        fix = "`chargeops db upgrade` migrates an older one"
        log.warning(
            "database %s at revision %s, this chargeops expects %s (%s)", where(engine), at, newest, fix
        )
