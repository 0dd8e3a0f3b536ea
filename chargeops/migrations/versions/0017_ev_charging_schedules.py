"""ISO 15118 charging schedules: the ones ops offered an EV's session and the one the EV chose

`ev_charging_schedules` holds, per transaction, the TxProfiles ops computed from the EV's charging needs
(`source` csms, with the charger's answer) and the schedules EVs reported by NotifyEVChargingSchedule
(`source` ev). Before this migration NotifyEVChargingSchedule was stored as sent (a `reported` event); those
are carried over as `ev` rows, with the transaction that ran on the EVSE at their timeBase.

Revision ID: 0017
Revises: 0015
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    table = op.create_table(
        "ev_charging_schedules",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("charger_id", sa.String(length=48), nullable=False),
        sa.Column("transaction_id", sa.String(length=64), nullable=True),
        sa.Column("evse_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("rate_unit", sa.String(length=2), nullable=False),
        sa.Column("periods", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_ev_charging_schedules_tx", "ev_charging_schedules", ["charger_id", "transaction_id"])
    _carry_over_reported_schedules(table)


def _utc(at: datetime | None) -> datetime | None:
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def _carry_over_reported_schedules(table: sa.Table) -> None:
    conn = op.get_bind()
    action = "data->>'action'" if conn.dialect.name == "postgresql" else "json_extract(data, '$.action')"
    events = sa.text(
        f"SELECT event_id, charger_id, data, received_at FROM events "
        f"WHERE kind = 'reported' AND {action} = 'NotifyEVChargingSchedule'"
    ).columns(event_id=sa.String, charger_id=sa.String, data=sa.JSON, received_at=TZ)
    transactions = sa.table(
        "transactions",
        sa.column("charger_id", sa.String),
        sa.column("evse_id", sa.Integer),
        sa.column("transaction_id", sa.String),
        sa.column("started_at", TZ),
        sa.column("stopped_at", TZ),
    )
    rows: list[dict[str, Any]] = []
    for event_id, charger_id, data, received_at in conn.execute(events):
        p = (data or {}).get("payload") or {}
        schedule = p.get("chargingSchedule") or {}
        try:
            starts = datetime.fromisoformat(str(schedule.get("startSchedule") or p["timeBase"]))
            periods = [
                {"start_s": x["startPeriod"], "limit": x.get("limit")}
                | ({"phases": x["numberPhases"]} if x.get("numberPhases") is not None else {})
                for x in schedule["chargingSchedulePeriod"]
            ]
            evse_id = int(p["evseId"])
        except (KeyError, TypeError, ValueError):
            continue  # not a schedule we can read: it stays in the event log only
        starts = _utc(starts) or starts
        candidates = conn.execute(
            sa.select(
                transactions.c.transaction_id, transactions.c.started_at, transactions.c.stopped_at
            ).where(transactions.c.charger_id == charger_id, transactions.c.evse_id == evse_id)
        ).all()
        running = [
            (_utc(started), tx)
            for tx, started, stopped in candidates
            if started is not None
            and (_utc(started) or starts) <= starts
            and (stopped is None or (_utc(stopped) or starts) >= starts)
        ]
        rows.append(
            {
                "event_id": event_id,
                "charger_id": charger_id,
                "transaction_id": max(running, key=lambda r: r[0] or starts)[1] if running else None,
                "evse_id": evse_id,
                "source": "ev",
                "starts_at": starts,
                "duration_s": schedule.get("duration"),
                "rate_unit": str(schedule.get("chargingRateUnit", "W"))[:2],
                "periods": periods,
                "status": None,
                "created_at": _utc(received_at) or starts,
            }
        )
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_index("ix_ev_charging_schedules_tx", table_name="ev_charging_schedules")
    op.drop_table("ev_charging_schedules")
