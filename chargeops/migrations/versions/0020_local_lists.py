"""local authorization lists kept in step by the CSMS

`local_lists`: per charger, the local list version it last accepted from chargeops, its state (never,
in_step, stale, failed, unsupported), what it says it supports and how the last sync went;
`local_list_entries`: the tokens that confirmed list holds (differential updates are computed against them);
`ix_transactions_id_token`: the chargers a token was used at (their authorization caches are cleared when it
is blocked). New tables: no data to carry over; every charger starts as `never` (its first sync is Full).

Revision ID: 0020
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "local_lists",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("list_enabled", sa.Boolean(), nullable=True),
        sa.Column("max_length", sa.Integer(), nullable=True),
        sa.Column("items_per_message", sa.Integer(), nullable=True),
        sa.Column("cache_enabled", sa.Boolean(), nullable=True),
        sa.Column("settings_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_update", sa.String(length=16), nullable=True),
        sa.Column("last_result", sa.String(length=32), nullable=True),
        sa.Column("last_detail", sa.String(length=300), nullable=True),
        sa.Column("entries_sent", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("charger_id"),
    )
    op.create_table(
        "local_list_entries",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("id_token", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expiry", sa.DateTime(timezone=True), nullable=True),
        sa.Column("group_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("charger_id", "id_token"),
    )
    op.create_index("ix_local_list_entries_token", "local_list_entries", ["id_token"], unique=False)
    op.create_index("ix_transactions_id_token", "transactions", ["id_token"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transactions_id_token", table_name="transactions")
    op.drop_index("ix_local_list_entries_token", table_name="local_list_entries")
    op.drop_table("local_list_entries")
    op.drop_table("local_lists")
