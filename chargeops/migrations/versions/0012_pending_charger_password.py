"""a charger's new password, waiting for the charger to use it

A password change the charger accepted (1.6 ChangeConfiguration AuthorizationKey, 2.x SetVariables
SecurityCtrlr.BasicAuthPassword) is kept as `pending_password_hash`; the old one keeps working until the
charger connects with the new one, which then replaces it.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_password_hash", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("pending_password_hash")
