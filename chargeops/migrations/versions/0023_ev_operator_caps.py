"""operators' caps on ISO 15118 sessions

`ev_operator_caps`: per running transaction, the limit an operator set on its charging schedule when asking
for a renegotiation (K16 on demand); ops plans every later TxProfile of the session within it and deletes the
row when the transaction ends. A new table: no data to carry over.

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
    op.create_table(
        "ev_operator_caps",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("limit_w", sa.Float(), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", "transaction_id"),
    )


def downgrade() -> None:
    op.drop_table("ev_operator_caps")
