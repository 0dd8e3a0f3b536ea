"""meter samples without a unique key: the events table deduplicates them

Ingest stores a meter-values event's samples only when the event's row is new (`events.event_id` is the
key, `INSERT … ON CONFLICT DO NOTHING` in the same transaction), so the samples' own primary key checked
nothing twice-written rows could ever reach, while costing a second index on the busiest table: without it
the samples are COPYed straight into their partition. Events are never pruned before their samples, so a
re-delivered event always finds its row. The (charger, time) index stays; queries use it.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.drop_constraint("meter_samples_pkey", type_="primary")


def downgrade() -> None:
    with op.batch_alter_table("meter_samples", schema=None) as batch_op:
        batch_op.create_primary_key("meter_samples_pkey", ["event_id", "idx", "sampled_at"])
