"""Applies the Alembic migrations shipped inside the package (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    """Bring the database at `engine` to the newest revision (or to `target`).

    On SQLite foreign keys are not enforced while migrating: batch mode re-creates a table to alter it, and
    dropping a parent with enforcement on would cascade to its children. What a migration leaves is checked
    (`PRAGMA foreign_key_check`) before enforcement is turned back on for the connection."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"

    def _upgrade(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, target)
        if sqlite:
            broken = sync_conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows without their parent: {broken[:10]}")

    async with engine.connect() as conn:
        if sqlite:  # outside a transaction, or SQLite ignores it
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            await conn.run_sync(_upgrade)
            await conn.commit()
        finally:
            if sqlite:
                await conn.rollback()
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()


async def is_empty(engine: AsyncEngine) -> bool:
    """True when no chargeops table exists yet (a fresh embedded database)."""
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return "alembic_version" not in names


def head() -> str:
    """The newest revision this chargeops ships (what `upgrade` brings a database to)."""
    revision = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision is not None
    return revision


async def revision(engine: AsyncEngine) -> str | None:
    """The revision the database at `engine` is at (None: no chargeops schema yet)."""
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
