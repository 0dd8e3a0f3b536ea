"""measured supply, parts used, early warnings as records

A supply ticket becomes one purchase order: supplier, order date, promised date and what has been received so
far (receipts may be partial), so realised lead times and overdue orders can be measured. Several orders may
be open per depot and SKU (the reorder check works on the inventory position), so supply tickets no longer
hold an `open_key`. A maintenance ticket keeps the parts its crew reported using. Early warnings are stored:
the level in force per depot and SKU, and every change of it.

Existing open supply tickets are carried over: ordered when they were created, from the part's first
supplier, promised after its catalogue lead time, with what their receipts already booked.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts_used", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("supplier", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("ordered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("promised_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("received_qty", sa.Integer(), nullable=False, server_default="0"))
    _carry_over_supply_tickets()

    op.create_table(
        "supply_warnings",
        sa.Column("depot_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("level_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("calm_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("depot_id", "sku"),
    )
    op.create_table(
        "supply_warning_log",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("depot_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("from_level", sa.String(length=16), nullable=False),
        sa.Column("to_level", sa.String(length=16), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("supply_warning_log", schema=None) as batch_op:
        batch_op.create_index("ix_supply_warning_log_depot_sku_at", ["depot_id", "sku", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_supply_warning_log_at"), ["at"], unique=False)


def _carry_over_supply_tickets() -> None:
    conn = op.get_bind()
    tickets = sa.table(
        "tickets",
        sa.column("id", BigId),
        sa.column("kind", sa.String),
        sa.column("sku", sa.String),
        sa.column("open_key", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("supplier", sa.String),
        sa.column("ordered_at", sa.DateTime(timezone=True)),
        sa.column("promised_at", sa.DateTime(timezone=True)),
        sa.column("received_qty", sa.Integer),
    )
    parts = sa.table(
        "parts",
        sa.column("sku", sa.String),
        sa.column("suppliers", sa.JSON),
        sa.column("lead_time_days", sa.Float),
    )
    moves = sa.table(
        "stock_movements",
        sa.column("ticket_id", BigId),
        sa.column("kind", sa.String),
        sa.column("qty", sa.Integer),
    )
    catalogue = {
        sku: (sup, lead)
        for sku, sup, lead in conn.execute(sa.select(parts.c.sku, parts.c.suppliers, parts.c.lead_time_days))
    }
    received = dict(
        conn.execute(
            sa.select(moves.c.ticket_id, sa.func.sum(moves.c.qty))
            .where(moves.c.kind == "receipt", moves.c.ticket_id.is_not(None))
            .group_by(moves.c.ticket_id)
        ).all()
    )
    rows = conn.execute(
        sa.select(tickets.c.id, tickets.c.sku, tickets.c.created_at).where(tickets.c.kind == "supply")
    ).all()
    for ticket_id, sku, created in rows:
        suppliers, lead = catalogue.get(sku, ([], 14.0))
        conn.execute(
            tickets.update()
            .where(tickets.c.id == ticket_id)
            .values(
                supplier=(suppliers or [None])[0],
                ordered_at=created,
                promised_at=created + timedelta(days=float(lead or 0)),
                received_qty=int(received.get(ticket_id) or 0),
            )
        )
    conn.execute(tickets.update().where(tickets.c.kind == "supply").values(open_key=None))


def downgrade() -> None:
    op.drop_table("supply_warning_log")
    op.drop_table("supply_warnings")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        for name in ("received_qty", "promised_at", "ordered_at", "supplier", "parts_used"):
            batch_op.drop_column(name)
