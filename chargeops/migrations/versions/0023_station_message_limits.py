"""a 2.x station's message limits, kept across its connections

`chargers.message_limits` holds the ItemsPerMessage / BytesPerMessage a station reported (NotifyReport or a
GetVariables answer) as {action: {kind: limit or null}}, so a list request on a later connection is split
to fit them (OCTT TC_B_08); NULL: none reported, or forgotten at a boot with other firmware.

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_limits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("message_limits")
