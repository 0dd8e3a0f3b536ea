"""The Alembic migrations build exactly the schema the models describe (nothing left for autogenerate)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

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


async def test_0019_repairs_dangling_references_says_so_and_then_enforces_them(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13: foreign keys where they belong. Old rows that break one are repaired as the key would have
    treated them (unknown depot / part / region: created; a movement's unknown ticket: NULL; log lines and
    deliveries of what does not exist: deleted), each repair logged; afterwards a dangling write is refused,
    on SQLite too (PRAGMA foreign_keys stays on after migrating)."""
    engine = make_engine(db_url)
    at = datetime(2026, 5, 1, 9, tzinfo=UTC)
    try:
        await upgrade(engine, "0018")
        async with engine.begin() as conn:
            for sql in (
                "INSERT INTO regions (id, name) VALUES ('north', 'North')",
                "INSERT INTO depots (id, name, region_id) VALUES ('D1', 'Depot 1', 'south')",
                "INSERT INTO sites (id, name, kind, region_id, depot_id) "
                "VALUES ('s1', 'S', 'charging', 'north', 'D9')",
                "INSERT INTO stock (depot_id, sku, on_hand, reserved, on_order, updated_at) "
                "VALUES ('D1', 'GHOST-SKU', 3, 0, 0, :at)",
                "INSERT INTO tickets (id, kind, status, priority, parts, occurrences, received_qty, "
                "created_at, updated_at) VALUES (1, 'maintenance', 'open', 'P2', '[]', 1, 0, :at, :at)",
                "INSERT INTO stock_movements (depot_id, sku, kind, qty, ticket_id, at) VALUES "
                "('D1', 'GHOST-SKU', 'reserve', 1, 1, :at), ('D1', 'GHOST-SKU', 'reserve', 1, 99, :at)",
                "INSERT INTO ticket_log (ticket_id, at, actor, action) VALUES (1, :at, 'a', 'opened'), "
                "(98, :at, 'a', 'opened')",
                "INSERT INTO ticket_occurrences (ticket_id, event_id) VALUES (98, 'e1')",
                "INSERT INTO webhook_outbox (subscription_id, event_type, payload, created_at, attempts, "
                "next_attempt_at) VALUES (5, 'ticket.opened', '{}', :at, 0, :at)",
            ):
                await conn.execute(text(sql), {"at": at})
        with caplog.at_level(logging.WARNING, logger="chargeops.migrations"):
            await upgrade(engine)
        said = "\n".join(r.getMessage() for r in caplog.records if r.name == "chargeops.migrations")
        async with engine.connect() as conn:

            async def rows(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in (await conn.execute(text(sql))).all()]

            assert await rows("SELECT id, name FROM regions ORDER BY id") == [
                ("north", "North"),
                ("south", "south"),
            ]
            assert await rows("SELECT id, name FROM depots ORDER BY id") == [("D1", "Depot 1"), ("D9", "D9")]
            assert await rows("SELECT sku, name, category FROM parts") == [
                ("GHOST-SKU", "GHOST-SKU", "unknown")
            ]
            assert await rows("SELECT ticket_id FROM stock_movements ORDER BY id") == [(1,), (None,)]
            assert await rows("SELECT ticket_id FROM ticket_log") == [(1,)]
            assert await rows("SELECT * FROM ticket_occurrences") == []
            assert await rows("SELECT * FROM webhook_outbox") == []
        for line in (
            "depots.region_id named 1 unknown regions (south)",
            "sites.depot_id named 1 unknown depots (D9)",
            "stock.sku named 1 unknown parts (GHOST-SKU)",
            "stock_movements.ticket_id named unknown tickets 99: set to NULL",
            "deleted 1 ticket_log rows of unknown tickets 98",
            "deleted 1 webhook_outbox rows of unknown webhook_subscriptions 5",
        ):
            assert line in said, said
        for dangling in (
            "INSERT INTO sites (id, name, kind, depot_id) VALUES ('s2', 'S', 'charging', 'D-nowhere')",
            "INSERT INTO ticket_log (ticket_id, at, actor, action) VALUES (77, :at, 'a', 'opened')",
            "INSERT INTO stock (depot_id, sku, on_hand, reserved, on_order, updated_at) "
            "VALUES ('D-nowhere', 'GHOST-SKU', 1, 0, 0, :at)",
        ):
            with pytest.raises(IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(text(dangling), {"at": at})
        async with engine.begin() as conn:  # deleting a ticket takes its log along (ON DELETE CASCADE)
            await conn.execute(text("DELETE FROM tickets WHERE id = 1"))
            assert (await conn.execute(text("SELECT count(*) FROM ticket_log"))).scalar_one() == 0
            assert (await conn.execute(text("SELECT ticket_id FROM stock_movements"))).all() == [
                (None,),
                (None,),
            ]
    finally:
        await engine.dispose()


async def test_0019_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await upgrade(engine)
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        async with engine.begin() as conn:

            def down(sync: Any) -> None:
                cfg.attributes["connection"] = sync
                command.downgrade(cfg, "0018")

            await conn.run_sync(down)
            await conn.execute(
                text("INSERT INTO ticket_log (ticket_id, at, actor, action) VALUES (5, :at, 'a', 'x')"),
                {"at": datetime.now(UTC)},
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM ticket_log"))).scalar_one() == 0
    finally:
        await engine.dispose()
