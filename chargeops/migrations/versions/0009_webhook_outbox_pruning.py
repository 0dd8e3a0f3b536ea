"""webhook outbox pruning: an index for the dispatcher's per-subscription lookups

The dispatcher now prunes delivered messages past their retention, and its "is there an earlier undelivered
message of this subscription" check (and the lease of a subscription's next message) had no index: it
scanned the outbox. The index is partial (undelivered rows only), so it is as small as the backlog.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNDELIVERED = sa.text("delivered_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_outbox_undelivered",
            ["subscription_id", "id"],
            unique=False,
            postgresql_where=_UNDELIVERED,
            sqlite_where=_UNDELIVERED,
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_outbox_undelivered")
