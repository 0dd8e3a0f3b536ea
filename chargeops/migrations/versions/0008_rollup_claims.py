"""rollup claims: the rollup task moves marks out of meter_rollup_dirty in a short transaction of its own

Recomputing claimed buckets inside the claiming transaction held the claimed marks' row locks for the whole
run, and every ingest commit marking the same (charger, minute) — the current minute, always — waited for it:
ingest lag grew with the fleet's rollup time. Claimed marks now wait in `meter_rollup_claimed` until their
buckets are recomputed (a failed or crashed run leaves them there for the next one).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "meter_rollup_claimed",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", "bucket"),
    )


def downgrade() -> None:
    op.execute("INSERT INTO meter_rollup_dirty SELECT * FROM meter_rollup_claimed ON CONFLICT DO NOTHING")
    op.drop_table("meter_rollup_claimed")
