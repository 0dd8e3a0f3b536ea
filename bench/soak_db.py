"""The soak's throwaway Postgres database: created and dropped by name, the simulated drivers' id tokens
seeded, and the row counts of the main tables read cheaply while the run goes on."""

from __future__ import annotations

import asyncpg

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = ("events", "transactions", "connectors", "chargers", "meter_rollup_1m", "meter_rollup_1h", "tickets")
# meter_samples is partitioned by day: its rows are the sum over the partitions
ROW_COUNTS = f"""
SELECT CASE WHEN relname LIKE 'meter\\_samples\\_%' THEN 'meter_samples' ELSE relname END, sum(n_live_tup)
FROM pg_stat_user_tables
WHERE relname IN ({", ".join(f"'{t}'" for t in TABLES)}) OR relname LIKE 'meter\\_samples%'
GROUP BY 1 ORDER BY 1
"""


async def create_database(admin_url: str, name: str) -> str:
    """Create `name` and return its SQLAlchemy URL (asyncpg driver)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def seed_id_tokens(conn: asyncpg.Connection, tags: tuple[str, ...]) -> None:
    """The simulated drivers' tokens, all accepted: a simulated EV whose token is refused stays plugged in
    for good (the driver never leaves), so with `chargeops demo`'s one in ten blocked the connectors
    fill up with them and the sessions running fall from ~680 to ~200 within an hour: no steady state."""
    await conn.executemany(
        "INSERT INTO id_tokens (id_token, type, status, updated_at)"
        " VALUES ($1, 'ISO14443', 'Accepted', now()) ON CONFLICT DO NOTHING",
        [(tag,) for tag in tags],
    )


async def row_counts(conn: asyncpg.Connection, exact: bool = False) -> dict[str, int]:
    """Rows per main table: the statistics counters while running (no scan that would load the shared
    machine every interval), exact `count(*)` at the end."""
    stats = {str(r[0]): int(r[1]) for r in await conn.fetch(ROW_COUNTS)}
    if exact:
        for table in stats:  # names from the fixed list above
            stats[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    size = await conn.fetchval("SELECT pg_database_size(current_database())")
    stats["db_size_mib"] = round(int(size) / 2**20)
    return stats
