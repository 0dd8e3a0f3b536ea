"""foreign keys between the registry, stock, tickets and webhook deliveries (issue 13)

Before each key is made, the rows that would break it are repaired the way the key itself would have
treated them, and each repair is logged as a WARNING on `chargeops.migrations` (the upgrade never fails on
old data, nor changes it silently):

- a reference to a region, depot or part that does not exist (no ON DELETE: the code never deletes those)
  creates it, named after its id (a part gets the catalogue's defaults), for the operator to complete;
- a stock movement of a ticket that does not exist loses the ticket reference (ON DELETE SET NULL);
- log lines and counted events of a ticket that does not exist, and deliveries to a subscription that
  does not exist, are deleted (ON DELETE CASCADE).

Tickets' placement columns (charger, site, depot, region, SKU) and supply warnings keep no key: they are a
snapshot taken when the ticket or warning was written, history that outlives what it names.

Parents are altered before their children: on SQLite batch mode re-creates a table, and with foreign keys
enforced dropping a parent would cascade to children keyed to it already.

Revision ID: 0019
Revises: 0015
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("chargeops.migrations")

# (table, column, parent table, parent column, ON DELETE), parents first
KEYS: list[tuple[str, str, str, str, str | None]] = [
    ("depots", "region_id", "regions", "id", None),
    ("sites", "region_id", "regions", "id", None),
    ("sites", "depot_id", "depots", "id", None),
    ("stock", "depot_id", "depots", "id", None),
    ("stock", "sku", "parts", "sku", None),
    ("stock_movements", "depot_id", "depots", "id", None),
    ("stock_movements", "sku", "parts", "sku", None),
    ("stock_movements", "ticket_id", "tickets", "id", "SET NULL"),
    ("ticket_occurrences", "ticket_id", "tickets", "id", "CASCADE"),
    ("ticket_log", "ticket_id", "tickets", "id", "CASCADE"),
    ("webhook_outbox", "subscription_id", "webhook_subscriptions", "id", "CASCADE"),
]

# what a parent created for a dangling reference holds besides its id (NOT NULL columns)
PLACEHOLDER = {
    "regions": lambda key: {"id": key, "name": key},
    "depots": lambda key: {"id": key, "name": key},
    "parts": lambda key: {
        "sku": key,
        "name": key,
        "category": "unknown",
        "annual_failure_rate": 0.05,
        "lead_time_days": 14.0,
        "lead_time_sd_days": 0.0,
        "suppliers": [],
        "service_level_z": 1.65,
        "cover_days": 30.0,
    },
}
SHOWN = 20  # ids named in one log line


def fk_name(table: str, column: str) -> str:
    return f"fk_{table}_{column}"


def _dangling(table: str, column: str, parent: str, parent_column: str) -> list[object]:
    rows = op.get_bind().execute(
        sa.text(
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL AND {column} NOT IN "
            f"(SELECT {parent_column} FROM {parent}) ORDER BY {column}"
        )
    )
    return [r[0] for r in rows]


def _repair(table: str, column: str, parent: str, parent_column: str, ondelete: str | None) -> None:
    missing = _dangling(table, column, parent, parent_column)
    if not missing:
        return
    shown = ", ".join(map(str, missing[:SHOWN])) + (
        f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
    )
    where = f"{column} IS NOT NULL AND {column} NOT IN (SELECT {parent_column} FROM {parent})"
    if ondelete is None:
        columns = PLACEHOLDER[parent](missing[0]).keys()
        target = sa.table(parent, *(sa.column(c, sa.JSON() if c == "suppliers" else None) for c in columns))
        op.bulk_insert(target, [PLACEHOLDER[parent](str(key)) for key in missing])
        log.warning(
            "0019: %s.%s named %d unknown %s (%s): created, named after the id; complete them in the fleet "
            "document",
            table,
            column,
            len(missing),
            parent,
            shown,
        )
    elif ondelete == "SET NULL":
        op.execute(sa.text(f"UPDATE {table} SET {column} = NULL WHERE {where}"))
        log.warning("0019: %s.%s named unknown %s %s: set to NULL", table, column, parent, shown)
    else:
        count = op.get_bind().execute(sa.text(f"DELETE FROM {table} WHERE {where}")).rowcount
        log.warning("0019: deleted %d %s rows of unknown %s %s", count, table, parent, shown)


def upgrade() -> None:
    for table, column, parent, parent_column, ondelete in KEYS:
        _repair(table, column, parent, parent_column, ondelete)
    tables = dict.fromkeys(t for t, *_ in KEYS)  # in order, parents first
    for table in tables:
        with op.batch_alter_table(table) as batch_op:
            for t, column, parent, parent_column, ondelete in KEYS:
                if t == table:
                    batch_op.create_foreign_key(
                        fk_name(t, column), parent, [column], [parent_column], ondelete=ondelete
                    )


def downgrade() -> None:
    for table in reversed(dict.fromkeys(t for t, *_ in KEYS)):
        with op.batch_alter_table(table) as batch_op:
            for t, column, *_ in reversed(KEYS):
                if t == table:
                    batch_op.drop_constraint(fk_name(t, column), type_="foreignkey")
