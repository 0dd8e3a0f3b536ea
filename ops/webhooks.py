"""Webhook delivery from the outbox (`ops.outbox`): signed, retried until the receiver acknowledges, in order.

An event is queued in the transaction that made the change, and a message is retried with capped exponential
backoff until the receiver answers 2xx, never given up: a receiver that is down for hours gets everything
once it is back. Delivery is at least once (a crash between the receiver's 2xx and our commit sends it
again), so receivers dedupe on `X-Chargeops-Delivery`.

Order and claiming: only the oldest undelivered message of a subscription (its head) is ever sent. A process
claims a head by leasing it (moving `next_attempt_at` past the longest one send can take; on Postgres under
`FOR UPDATE SKIP LOCKED`), and hands the lease on to the next message in the transaction that records the
delivery. So two ops processes never send to one receiver at once, no event overtakes an earlier one, no
transaction stays open during HTTP (SQLite has one writer), and the lease of a crashed process runs out.

Retention: delivered messages are kept `RETENTION` (the deliveries API shows them), then pruned by the
dispatcher in small chunks; an undelivered message is never pruned, whatever its age.

Signature: `X-Chargeops-Signature: sha256=HEX`, the HMAC-SHA256 with the subscription's secret over
`f"{X-Chargeops-Timestamp}.{raw body}"` (see `sign`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from chargeops.db.ops_models import OutboxMessage, WebhookSubscription
from chargeops.events import utcnow
from chargeops.settings import Settings
from chargeops.urls import destination
from telemetry.metrics import DATABASE_ERRORS, WEBHOOK_DELIVERIES, WEBHOOK_OUTBOX_PENDING
from telemetry.periodic import Background

log = logging.getLogger(__name__)

# Beyond the HTTP timeout, what a lease allows for the URL check (DNS) and waiting for the database.
_LEASE_MARGIN = 60.0
_ERROR_CHARS = 500

# How long delivered messages are kept; at fleet scale the outbox would otherwise grow without bound.
RETENTION = timedelta(days=7)
# Seconds between prunes once one found nothing more to delete, and the rows one transaction deletes
# (small, so a prune never holds its locks long, nor the dispatcher's loop).
_PRUNE_INTERVAL = 300.0
_PRUNE_CHUNK = 1000

_earlier = aliased(OutboxMessage)
# No undelivered message of the same subscription was queued before this one (ix_webhook_outbox_undelivered).
_IS_HEAD = ~exists().where(
    _earlier.subscription_id == OutboxMessage.subscription_id,
    _earlier.delivered_at.is_(None),
    _earlier.id < OutboxMessage.id,
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Chargeops-Signature` value; the timestamp is signed too, so a captured delivery cannot be
    replayed later with a fresh timestamp."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failures: doubling from `base` up to `cap`, jittered
    into [½, 1] of that so senders do not all hit a receiver that comes back at the same instant."""
    return min(cap, base * 2.0 ** min(attempts - 1, 62)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Message:
    id: int
    subscription_id: int
    event_type: str
    payload: dict[str, Any]
    url: str
    secret: str


class WebhookDispatcher(Background):
    """Sends due outbox messages; `start()` in the ops role, `await stop()` on shutdown.

    Each pass claims up to `batch_size` subscription heads and sends, per subscription, up to `batch_size`
    messages in order (stopping at the first failure); subscriptions are served concurrently, so one slow
    receiver does not hold up the others' messages. A pass that sent nothing waits `poll_interval`."""

    name = "webhooks"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        timeout: float = 10.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 600.0,
        retention: timedelta = RETENTION,
        prune_interval: float = _PRUNE_INTERVAL,
        prune_chunk: int = _PRUNE_CHUNK,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._lease = timedelta(seconds=timeout + _LEASE_MARGIN)
        self._retention = retention
        self._prune_interval = prune_interval
        self._prune_chunk = prune_chunk
        self._prune_at = 0.0  # monotonic; the first pass prunes

    def start(self) -> None:
        # httpx logs every request's full URL at INFO, and a webhook URL can itself be a credential.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        super().start()

    async def _run(self) -> None:
        # No redirects: a receiver could otherwise bounce a delivery to an address the URL check refused.
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            while True:
                sent = 0
                try:
                    heads = await self._claim()
                    sent = sum(await asyncio.gather(*(self._drain(client, m) for m in heads)))
                    await self._count_pending()
                    await self._prune_if_due()
                except Exception as exc:
                    DATABASE_ERRORS.labels("webhooks").inc()
                    log.warning("webhook delivery pass failed: %s", exc)
                if not sent:
                    await asyncio.sleep(self._poll_interval)

    async def _claim(self) -> list[_Message]:
        """Lease the due heads of active subscriptions; rows another process has locked are skipped."""
        now = utcnow()
        stmt = (
            select(OutboxMessage, WebhookSubscription)
            .join(WebhookSubscription, WebhookSubscription.id == OutboxMessage.subscription_id)
            .where(
                WebhookSubscription.active,
                OutboxMessage.delivered_at.is_(None),
                OutboxMessage.next_attempt_at <= now,
                _IS_HEAD,
            )
            .order_by(OutboxMessage.id)
            .limit(self._batch_size)
            .with_for_update(skip_locked=True, of=OutboxMessage)
        )
        async with self._sessions.begin() as session:
            rows = (await session.execute(stmt)).all()
            for msg, _sub in rows:
                msg.next_attempt_at = now + self._lease
        return [_message(msg, sub) for msg, sub in rows]

    async def _drain(self, client: httpx.AsyncClient, head: _Message) -> int:
        """Send one subscription's messages in order from its claimed head; returns how many got through."""
        msg: _Message | None = head
        sent = 0
        try:
            while msg is not None:
                error = await self._send(client, msg)
                WEBHOOK_DELIVERIES.labels("failed" if error else "delivered").inc()
                now = utcnow()
                async with self._sessions.begin() as session:
                    if error is None:
                        await session.execute(
                            update(OutboxMessage).where(OutboxMessage.id == msg.id).values(delivered_at=now)
                        )
                        sent += 1
                        done = sent >= self._batch_size  # the next pass claims the rest
                        msg = None if done else await self._lease_next(session, msg.subscription_id, now)
                    else:
                        await self._failed(session, msg, error, now)
                        msg = None
        except Exception as exc:  # the database: the lease runs out and the message is sent again
            DATABASE_ERRORS.labels("webhooks").inc()
            log.warning("webhook delivery to subscription %s failed: %s", head.subscription_id, exc)
        return sent

    async def _lease_next(
        self, session: AsyncSession, subscription_id: int, now: datetime
    ) -> _Message | None:
        """The subscription's next message, leased in the transaction that recorded the previous one."""
        row = (
            await session.execute(
                select(OutboxMessage, WebhookSubscription)
                .join(WebhookSubscription, WebhookSubscription.id == OutboxMessage.subscription_id)
                .where(
                    OutboxMessage.subscription_id == subscription_id,
                    OutboxMessage.delivered_at.is_(None),
                    WebhookSubscription.active,
                )
                .order_by(OutboxMessage.id)
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        msg, sub = row
        msg.next_attempt_at = now + self._lease
        return _message(msg, sub)

    async def _failed(self, session: AsyncSession, msg: _Message, error: str, now: datetime) -> None:
        row = await session.get_one(OutboxMessage, msg.id)
        row.attempts += 1
        row.last_error = error
        row.next_attempt_at = now + timedelta(
            seconds=backoff(row.attempts, self._backoff_base, self._backoff_cap)
        )
        log.warning(
            "webhook %s to subscription %s failed (attempt %s): %s",
            msg.id,
            msg.subscription_id,
            row.attempts,
            error,
        )

    async def _send(self, client: httpx.AsyncClient, msg: _Message) -> str | None:
        """None if the receiver took the message (2xx), else why not. The URL is checked again at each send
        (a name that resolved to a public address when the subscription was made may not any more) and the
        request goes to the address that was checked, not to a second lookup's answer."""
        dest = await destination(msg.url, self._settings.allow_private_urls)
        if isinstance(dest, str):
            return f"url refused: {dest}"
        body = orjson.dumps(msg.payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Chargeops-Event": msg.event_type,
            "X-Chargeops-Delivery": str(msg.id),
            "X-Chargeops-Timestamp": str(timestamp),
            "X-Chargeops-Signature": sign(msg.secret, timestamp, body),
            "Host": dest.host,
        }
        extensions = {"sni_hostname": dest.sni} if dest.sni else None
        try:
            async with asyncio.timeout(self._timeout):  # httpx times each phase; this bounds the whole send
                response = await client.post(dest.url, content=body, headers=headers, extensions=extensions)
        except (httpx.HTTPError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS].rstrip(": ")
        return None if response.is_success else f"HTTP {response.status_code}"

    async def _prune_if_due(self) -> None:
        # A full chunk means more may be waiting (a backlog after an upgrade): the next pass goes on.
        if time.monotonic() >= self._prune_at and await self.prune() < self._prune_chunk:
            self._prune_at = time.monotonic() + self._prune_interval

    async def prune(self) -> int:
        """Delete up to one chunk of messages delivered more than the retention ago; returns how many.

        Rows another process is pruning are skipped, not waited for (Postgres), so two dispatchers
        pruning at once neither block nor deadlock each other. The newest message is always kept: SQLite
        reuses the highest id once it is deleted, and a reused id is a reused `X-Chargeops-Delivery`,
        which receivers would drop as a duplicate."""
        newest = aliased(OutboxMessage)
        chunk = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.delivered_at < utcnow() - self._retention,
                OutboxMessage.id < select(func.max(newest.id)).scalar_subquery(),
            )
            .limit(self._prune_chunk)
            .with_for_update(skip_locked=True)
        )
        async with self._sessions.begin() as session:
            deleted = await session.scalars(
                delete(OutboxMessage).where(OutboxMessage.id.in_(chunk)).returning(OutboxMessage.id)
            )
            return len(deleted.all())

    async def _count_pending(self) -> None:
        async with self._sessions() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .join(WebhookSubscription, WebhookSubscription.id == OutboxMessage.subscription_id)
                .where(WebhookSubscription.active, OutboxMessage.delivered_at.is_(None))
            )
        WEBHOOK_OUTBOX_PENDING.set(pending or 0)


def _message(msg: OutboxMessage, sub: WebhookSubscription) -> _Message:
    return _Message(msg.id, msg.subscription_id, msg.event_type, msg.payload, sub.url, sub.secret)
