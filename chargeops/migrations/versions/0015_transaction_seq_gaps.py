"""gaps in a 2.x transaction's TransactionEvent seqNos

`transactions.missing_seq_nos` keeps the seqNos a station skipped and has not delivered since, as inclusive
[first, last] ranges (NULL: none); `missing_seq_nos_queued` what the station answered to the
GetTransactionStatus the opening gap sent (does it still queue messages of the transaction). Transactions of
before this migration have no gaps recorded; their next events are compared with what is stored.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("missing_seq_nos", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("missing_seq_nos_queued", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_column("missing_seq_nos_queued")
        batch_op.drop_column("missing_seq_nos")
