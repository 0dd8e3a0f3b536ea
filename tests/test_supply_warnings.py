"""Warnings as records on SQLite and Postgres: a level opens, escalates, holds through a dip, clears after
the calm days, each change stored with its figures and queued as a webhook in the same transaction; all
on the ops clock, replayed here day by day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from chargeops import clock
from chargeops.db.ops_models import OutboxMessage, SupplyWarning, SupplyWarningLog, WebhookSubscription
from ops.planning.risk import Risk, raw_level
from ops.supply_warnings import CALM_DAYS, refresh
from tests.conftest import migrated_sessions

START = datetime(2026, 3, 1, 8, tzinfo=UTC)


def risk(p: float, available: int = 2) -> Risk:
    return Risk(
        "D1",
        "PM-30KW",
        raw_level(p, available < 0),
        p,
        reasons=[{"code": "stockout_risk", "text": f"{p:.0%} chance"}],
        figures={"available": available, "stockout_probability": p},
        actions=[{"action": "order", "qty": 2, "text": "order 2 more now"}] if p >= 0.5 else [],
    )


async def test_levels_are_stored_logged_and_sent(db_url: str) -> None:
    # Day by day: quiet (0), a warning (1), critical (2); 0.3 is under critical's clearing line (0.4) but a
    # relapse (4) resets the calm; 0.3 for CALM_DAYS more (5-8) lowers it to the warning 0.3 still holds
    # (its clearing line is 0.25); calm below that for CALM_DAYS (9-12) clears it.
    assert CALM_DAYS == 3
    days = [0.05, 0.6, 0.9, 0.3, 0.45, 0.3, 0.3, 0.3, 0.3, 0.01, 0.01, 0.01, 0.01]
    expected = ["opened", "escalated", "deescalated", "cleared"]
    async with migrated_sessions(db_url) as sessions:
        async with sessions() as session, session.begin():
            session.add(WebhookSubscription(url="https://example.com/hook", secret="s", events=[]))
        day_clock = clock.ManualClock(START)
        with clock.use(day_clock):
            for n, p in enumerate(days):
                day_clock.set(START + timedelta(days=n))
                async with sessions() as session, session.begin():
                    await refresh(session, [risk(p)])
        async with sessions() as session:
            log = (await session.scalars(select(SupplyWarningLog).order_by(SupplyWarningLog.id))).all()
            sent = (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
            now = await session.get(SupplyWarning, ("D1", "PM-30KW"))
    assert [e.change for e in log] == expected
    assert [(e.from_level, e.to_level) for e in log] == [
        ("ok", "warning"),
        ("warning", "critical"),
        ("critical", "warning"),
        ("warning", "ok"),
    ]
    assert [(e.at.replace(tzinfo=UTC) - START).days for e in log] == [1, 2, 8, 12]
    assert log[1].figures["stockout_probability"] == 0.9 and log[1].actions[0]["action"] == "order"
    assert [m.event_type for m in sent] == [f"supply_warning.{c}" for c in expected]
    assert sent[0].payload["data"]["warning"]["level"] == "warning"
    assert sent[-1].payload["data"]["change"]["to"] == "ok"
    assert now is not None and now.level == "ok" and now.opened_at is None
