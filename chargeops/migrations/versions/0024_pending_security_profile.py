"""a security profile a station agreed to move to (A05)

`chargers.pending_security_profile`: the higher security profile a station accepted in a SetNetworkProfile
(2.x) or a ChangeConfiguration SecurityProfile (1.6) and has not connected with yet. Its first connection
that proves that profile makes it the charger's `security_profile` (and clears this); from then on the lower
one is refused (OCTT TC_A_19). NULL: no upgrade under way. A new nullable column: no data to carry over.

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_security_profile", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chargers", schema=None) as batch_op:
        batch_op.drop_column("pending_security_profile")
