"""battery packs, swaps, site telemetry and charger limits

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batteries",
        sa.Column("serial", sa.String(length=50), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("location", sa.String(length=16), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("soc", sa.Float(), nullable=True),
        sa.Column("soh", sa.Float(), nullable=True),
        sa.Column("cycles", sa.Integer(), nullable=True),
        sa.Column("production_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("swaps", sa.Integer(), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )
    with op.batch_alter_table("batteries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batteries_station_id"), ["station_id"], unique=False)

    op.create_table(
        "battery_readings",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("serial", sa.String(length=50), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("soc", sa.Float(), nullable=True),
        sa.Column("soh", sa.Float(), nullable=True),
        sa.Column("cycles", sa.Integer(), nullable=True),
        sa.Column("cell_temp_min", sa.Float(), nullable=True),
        sa.Column("cell_temp_max", sa.Float(), nullable=True),
        sa.Column("cell_volt_min", sa.Float(), nullable=True),
        sa.Column("cell_volt_max", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("event_id", "serial"),
    )
    with op.batch_alter_table("battery_readings", schema=None) as batch_op:
        batch_op.create_index("ix_battery_readings_serial_at", ["serial", "at"], unique=False)

    op.create_table(
        "battery_swaps",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("station_id", sa.String(length=48), nullable=False),
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("id_token", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested", sa.Boolean(), nullable=False),
        sa.Column("batteries_in", sa.JSON(), nullable=False),
        sa.Column("batteries_out", sa.JSON(), nullable=False),
        sa.Column("in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("station_id", "request_id", name="uq_battery_swaps_station_request"),
    )
    with op.batch_alter_table("battery_swaps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_battery_swaps_station_id"), ["station_id"], unique=False)

    op.create_table(
        "charger_limits",
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("limit_w", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("charger_id"),
    )
    with op.batch_alter_table("charger_limits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_charger_limits_site_id"), ["site_id"], unique=False)

    op.create_table(
        "site_telemetry",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pv_w", sa.Float(), nullable=True),
        sa.Column("storage_soc", sa.Float(), nullable=True),
        sa.Column("storage_w", sa.Float(), nullable=True),
        sa.Column("grid_w", sa.Float(), nullable=True),
        sa.Column("load_w", sa.Float(), nullable=True),
        sa.Column("charging_w", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("site_id", "at"),
    )
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pv_peak_kw", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("storage_kwh", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("storage_max_kw", sa.Float(), nullable=True))
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("subject")
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("storage_max_kw")
        batch_op.drop_column("storage_kwh")
        batch_op.drop_column("pv_peak_kw")

    op.drop_table("site_telemetry")
    with op.batch_alter_table("charger_limits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_charger_limits_site_id"))

    op.drop_table("charger_limits")
    with op.batch_alter_table("battery_swaps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battery_swaps_station_id"))

    op.drop_table("battery_swaps")
    with op.batch_alter_table("battery_readings", schema=None) as batch_op:
        batch_op.drop_index("ix_battery_readings_serial_at")

    op.drop_table("battery_readings")
    with op.batch_alter_table("batteries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batteries_station_id"))

    op.drop_table("batteries")
