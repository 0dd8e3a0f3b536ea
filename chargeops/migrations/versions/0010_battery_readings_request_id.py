"""battery readings name the swap they came from

`GET /api/batteries/{serial}` found a pack's swap records by scanning the latest swaps of the whole fleet
for its serial, so a pack's older swaps dropped out as the fleet swapped on. A reading taken from a swap now
keeps the swap's requestId: the pack's swaps are a semi-join on (station, requestId) through the pack's
readings (index on serial). Readings stored before this migration have none.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("battery_readings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("battery_readings", schema=None) as batch_op:
        batch_op.drop_column("request_id")
