"""chargers.gateway_instance: which run of its gateway holds a charger's session

A gateway process that dies (kill -9, lost network) is announced by its MQTT Will; ingest then marks
disconnected the chargers that run still holds (`telemetry/gateway_presence.py`). The gateway id alone
cannot tell a dead run from the next one started with the same id.

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("chargers", sa.Column("gateway_instance", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("chargers", "gateway_instance")
