"""tariffs, where they apply, and the cost of each transaction (OCPP 2.0.1 block I)

`tariffs` holds the prices (net amounts, tax added at `tax_pct`); `tariff_assignments` which tariff prices
the sessions at a site and / or of an id-token group ('' = any; ('', '') the default). A transaction keeps
the tariff that prices it as it was when chosen (`tariff`, JSON), how long it charged (`charging_s`, the
open spell since `charging_since`) and its final cost (`total_cost`). Transactions of before this migration
have no tariff: they are not priced.

Revision ID: 0018
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PRICE = sa.Numeric(12, 6)
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tariffs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("per_kwh", PRICE, nullable=False),
        sa.Column("per_minute_charging", PRICE, nullable=False),
        sa.Column("per_minute_idle", PRICE, nullable=False),
        sa.Column("idle_grace_minutes", sa.Integer(), nullable=False),
        sa.Column("session_fee", PRICE, nullable=False),
        sa.Column("min_cost", PRICE, nullable=True),
        sa.Column("max_cost", PRICE, nullable=True),
        sa.Column("tax_pct", sa.Numeric(7, 3), nullable=False),
        sa.Column("display_text", sa.String(length=512), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tariff_assignments",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column("tariff_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["tariff_id"], ["tariffs.id"]),
        sa.PrimaryKeyConstraint("site", "group_id"),
    )
    op.create_index("ix_tariff_assignments_tariff_id", "tariff_assignments", ["tariff_id"])
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tariff", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("charging_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("charging_since", TZ, nullable=True))
        batch_op.add_column(sa.Column("total_cost", sa.Numeric(14, 4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_column("total_cost")
        batch_op.drop_column("charging_since")
        batch_op.drop_column("charging_s")
        batch_op.drop_column("tariff")
    op.drop_index("ix_tariff_assignments_tariff_id", table_name="tariff_assignments")
    op.drop_table("tariff_assignments")
    op.drop_table("tariffs")
