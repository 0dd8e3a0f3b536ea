"""The Alembic migrations build exactly the schema the models describe (nothing left for autogenerate)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from chargeops.db.engine import make_engine
from chargeops.db.migrate import upgrade
from chargeops.db.models import Base


async def test_migrations_match_the_models(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert diff == []
