"""partitioned meter samples, rollups, energy counted per transaction

On Postgres `meter_samples` becomes range-partitioned by day on `sampled_at` (a TimescaleDB hypertable when
the `timescaledb` extension is installed in the database), with a default partition so no sample is ever
rejected; its key grows to (event_id, idx, sampled_at) because a partitioned table's key must contain the
partition column. SQLite keeps a plain table with the same key. Partitions beyond the first week are
created, and old ones dropped, by `telemetry.retention`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SAMPLE_COLUMNS = (
    "event_id, idx, charger_id, evse_id, connector_id, transaction_id, sampled_at, measurand, phase, "
    "location, context, unit, value"
)
# Daily partitions from yesterday to a week ahead; the maintenance task keeps the window moving.
PG_PARTITIONS = """
DO $$
DECLARE d date;
BEGIN
    FOR d IN SELECT generate_series(current_date - 1, current_date + 7, interval '1 day')::date LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF meter_samples FOR VALUES FROM (%L) TO (%L)',
            'meter_samples_p' || to_char(d, 'YYYYMMDD'), d::timestamp AT TIME ZONE 'UTC',
            (d + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$
"""


def _sample_columns() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("sampled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("measurand", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=True),
        sa.Column("location", sa.String(length=16), nullable=True),
        sa.Column("context", sa.String(length=32), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "idx", "sampled_at", name="meter_samples_pkey"),
    ]


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("measurand", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=8), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("avg", sa.Float(), nullable=False),
        sa.Column("last", sa.Float(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("energy_wh", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("charger_id", "evse_id", "measurand", "phase", "bucket"),
    )
    op.create_index(f"ix_{name}_bucket", name, ["bucket"])


def _site_rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("power_avg_w", sa.Float(), nullable=False),
        sa.Column("power_max_w", sa.Float(), nullable=False),
        sa.Column("energy_wh", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site", "bucket"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    timescale = (
        pg
        and bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first()
        is not None
    )

    op.add_column("transactions", sa.Column("energy_counted_wh", sa.Float(), nullable=True))

    # Rebuild meter_samples with the new key (and partitioned on Postgres), keeping its rows.
    op.drop_index("ix_meter_samples_charger_time", table_name="meter_samples")
    op.rename_table("meter_samples", "meter_samples_0001")
    if pg:
        op.execute(
            "ALTER TABLE meter_samples_0001 RENAME CONSTRAINT meter_samples_pkey TO meter_samples_old_pkey"
        )
    partitioned = pg and not timescale
    partition_by: dict[str, Any] = {"postgresql_partition_by": "RANGE (sampled_at)"} if partitioned else {}
    op.create_table("meter_samples", *_sample_columns(), **partition_by)
    if partitioned:
        op.execute("CREATE TABLE meter_samples_default PARTITION OF meter_samples DEFAULT")
        op.execute(PG_PARTITIONS)
    elif timescale:
        op.execute(
            "SELECT create_hypertable('meter_samples', 'sampled_at', chunk_time_interval => INTERVAL '1 day')"
        )
    op.execute(
        f"INSERT INTO meter_samples ({SAMPLE_COLUMNS}) SELECT {SAMPLE_COLUMNS} FROM meter_samples_0001"
    )
    op.drop_table("meter_samples_0001")
    op.create_index("ix_meter_samples_charger_time", "meter_samples", ["charger_id", "sampled_at"])

    op.create_table(
        "meter_rollup_dirty",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id", "bucket"),
    )
    _rollup_table("meter_rollup_1m")
    _rollup_table("meter_rollup_1h")
    _site_rollup_table("site_rollup_1m")
    _site_rollup_table("site_rollup_1h")
    # Existing samples get rolled up by the first maintenance run.
    op.execute(
        "INSERT INTO meter_rollup_dirty (charger_id, bucket) SELECT DISTINCT charger_id, "
        + ("date_trunc('minute', sampled_at)" if pg else "strftime('%Y-%m-%d %H:%M:00.000000', sampled_at)")
        + " FROM meter_samples"
    )


def downgrade() -> None:
    for name in ("site_rollup_1h", "site_rollup_1m", "meter_rollup_1h", "meter_rollup_1m"):
        op.drop_table(name)
    op.drop_table("meter_rollup_dirty")
    op.drop_index("ix_meter_samples_charger_time", table_name="meter_samples")
    op.rename_table("meter_samples", "meter_samples_0002")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE meter_samples_0002 RENAME CONSTRAINT meter_samples_pkey TO meter_samples_old_pkey"
        )
    columns = _sample_columns()[:-1]
    op.create_table("meter_samples", *columns, sa.PrimaryKeyConstraint("event_id", "idx"))
    op.execute(
        f"INSERT INTO meter_samples ({SAMPLE_COLUMNS}) SELECT {SAMPLE_COLUMNS} FROM meter_samples_0002 "
        "ON CONFLICT DO NOTHING"
    )
    op.drop_table("meter_samples_0002")
    op.create_index("ix_meter_samples_charger_time", "meter_samples", ["charger_id", "sampled_at"])
    with op.batch_alter_table("transactions") as batch_op:
        batch_op.drop_column("energy_counted_wh")
