"""Webhook outbox: an event is queued for every matching subscription in the transaction that made it,
so it is delivered if and only if the change committed (delivery: `ops.webhooks`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.ops_models import OutboxMessage, WebhookSubscription


async def enqueue(session: AsyncSession, event_type: str, data: dict[str, Any]) -> int:
    """Queues `event_type` for the active subscriptions that want it; returns how many."""
    subs = (await session.scalars(select(WebhookSubscription).where(WebhookSubscription.active))).all()
    wanted = [s for s in subs if not s.events or event_type in s.events]
    now = clock.now()
    for sub in wanted:
        session.add(
            OutboxMessage(
                subscription_id=sub.id,
                event_type=event_type,
                payload={"type": event_type, "at": now.isoformat(), "data": data},
                created_at=now,
                next_attempt_at=now,
                attempts=0,
            )
        )
    return len(wanted)
