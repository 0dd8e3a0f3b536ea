"""the (transaction, seqNo) of every stored 2.x TransactionEvent

A late `offline: true` copy of a TransactionEvent already stored (same transaction and seqNo, a new message
id) added a second `transaction_updated` event row. The gateway now notes each (charger, transaction, seqNo)
once its events are stored and answers a copy without storing it again.

Nothing is filled in from the `events` table (that would scan every event: there is no index on its kind).
A copy of an event stored before this migration still adds no transaction or meter row (same event ids:
an update's id leaves its `offline` flag out), though it goes through the full handler once more. Duplicate
rows stored before this migration are left as they are (the history as it was received).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "transaction_seq_nos",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("seq_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", "transaction_id", "seq_no"),
    )


def downgrade() -> None:
    op.drop_table("transaction_seq_nos")
