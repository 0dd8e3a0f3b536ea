"""meter plausibility: the last plausible reading per transaction, flagged readings, models' rated power

A transaction's energy register readings are judged against its last plausible one (register going
backwards, rising faster than the charger's rated power allows, stamped too far from the server clock).
`transactions.meter_good_wh` / `meter_good_at` keep the last plausible reading (what the session is billed
up to); `meter_flags` the implausible ones, once per reading and reason; `charger_models.max_power_kw` the
rated power the rise is judged by. Transactions of before this migration have no last plausible reading
and are billed as before until their next reading.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("meter_good_wh", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("meter_good_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("charger_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_power_kw", sa.Float(), nullable=True))
    op.create_table(
        "meter_flags",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("value_wh", sa.Float(), nullable=False),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_wh", sa.Float(), nullable=True),
        sa.Column("previous_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "charger_id", "transaction_id", "sampled_at", "value_wh", "reason", name="uq_meter_flags_reading"
        ),
    )


def downgrade() -> None:
    op.drop_table("meter_flags")
    with op.batch_alter_table("charger_models", schema=None) as batch_op:
        batch_op.drop_column("max_power_kw")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_column("meter_good_at")
        batch_op.drop_column("meter_good_wh")
