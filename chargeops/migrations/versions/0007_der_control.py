"""DER control: site export limit and the planner's discharge caps

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "discharge_limits",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("pct", sa.Float(), nullable=False),
        sa.Column("rated_w", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id"),
    )
    with op.batch_alter_table("discharge_limits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_discharge_limits_site_id"), ["site_id"], unique=False)
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grid_export_limit_kw", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("grid_export_limit_kw")
    with op.batch_alter_table("discharge_limits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_discharge_limits_site_id"))
    op.drop_table("discharge_limits")
