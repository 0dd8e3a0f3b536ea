"""The Alembic migrations build exactly the schema the models describe (nothing left for autogenerate)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from chargeops.db.engine import make_engine, stored_utc
from chargeops.db.migrate import alembic_config, upgrade
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


async def test_0011_carries_open_supply_tickets_over_as_purchase_orders(db_url: str) -> None:
    """An open supply ticket of before 0011 (one per depot and SKU, `open_key` set, a partial receipt booked)
    becomes a purchase order: ordered when created, from the part's first supplier, promised after its
    catalogue lead time, with what was received; it no longer blocks a second order."""
    engine = make_engine(db_url)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    created = datetime(2026, 5, 1, 9, tzinfo=UTC)
    try:
        async with engine.begin() as conn:

            def to(revision: str) -> Callable[[Any], None]:
                def run(sync: Any) -> None:
                    cfg.attributes["connection"] = sync
                    command.upgrade(cfg, revision)

                return run

            await conn.run_sync(to("0010"))
            await conn.execute(
                text(
                    "INSERT INTO parts (sku, name, category, annual_failure_rate, lead_time_days, "
                    "lead_time_sd_days, suppliers, service_level_z, cover_days) VALUES "
                    "('PM', 'module', 'power_module', 0.04, 56, 14, '[\"Infypower\", \"Other\"]', 1.65, 30)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO tickets (id, kind, status, priority, open_key, depot, sku, qty, parts, "
                    "occurrences, created_at, updated_at) VALUES (7, 'supply', 'open', 'P2', 'supply:D1:PM', "
                    "'D1', 'PM', 5, '[]', 1, :at, :at)"
                ),
                {"at": created},
            )
            await conn.execute(
                text(
                    "INSERT INTO stock_movements (depot_id, sku, kind, qty, ticket_id, at) VALUES "
                    "('D1', 'PM', 'order', 5, 7, :at), ('D1', 'PM', 'receipt', 2, 7, :at)"
                ),
                {"at": created},
            )
            await conn.run_sync(to("head"))
            row = (
                await conn.execute(
                    text("SELECT open_key, supplier, ordered_at, promised_at, received_qty FROM tickets")
                )
            ).one()
    finally:
        await engine.dispose()
    open_key, supplier, ordered, promised, received = row
    assert open_key is None and supplier == "Infypower" and received == 2
    ordered, promised = (
        stored_utc(v if isinstance(v, datetime) else datetime.fromisoformat(v)) for v in (ordered, promised)
    )
    assert ordered == created and promised == created + timedelta(days=56)
