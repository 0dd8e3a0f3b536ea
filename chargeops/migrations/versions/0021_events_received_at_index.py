"""an index on events.received_at, for event retention

Retention deletes the oldest prunable events a slice at a time (`telemetry/retention.py`): without an index
on the time alone each slice would scan the whole table (`ix_events_charger_time` leads with the charger).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_events_received_at", "events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_events_received_at", table_name="events")
