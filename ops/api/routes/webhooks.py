"""Webhook subscriptions: who is told about ticket events (delivery: `ops.webhooks`).

The secret that signs deliveries is shown once, in the answer that creates the subscription, and never again:
a receiver that lost it gets a new subscription. URLs are checked like firmware URLs (SPEC §8), so the API
cannot be used to make the ops process call into the operator's own network.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from chargeops.db.ops_models import OutboxMessage, WebhookSubscription
from chargeops.urls import url_refusal
from ops.api.auth import Admin
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import IdPath, Input, Items, UtcTime

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses=documented(401, 403, 422))

EventType = Annotated[str, Field(pattern=r"^[a-z_]+\.[a-z_]+$", max_length=64, examples=["ticket.created"])]
SubscriptionId = IdPath


class WebhookCreate(Input):
    url: str = Field(min_length=1, max_length=500, description="http(s) URL the events are POSTed to")
    events: list[EventType] = Field(
        default_factory=list, max_length=50, description="event types to send; empty or left out: all"
    )
    secret: str | None = Field(
        default=None, min_length=16, max_length=200, description="HMAC key; generated if left out"
    )


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    active: bool
    created_at: UtcTime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="signs every delivery; shown only in this answer")


class DeliveryOut(BaseModel):
    id: int = Field(description="the X-Chargeops-Delivery header")
    event_type: str
    status: Literal["delivered", "pending", "retrying"]
    attempts: int = Field(description="failed attempts so far")
    last_error: str | None
    created_at: UtcTime
    next_attempt_at: UtcTime | None
    delivered_at: UtcTime | None


async def _one(db: Db, subscription_id: int) -> WebhookSubscription:
    row = await db.get(WebhookSubscription, subscription_id)
    if row is None:
        raise ApiError(404, "not_found", f"no webhook subscription {subscription_id}")
    return row


@router.post("", status_code=201, dependencies=[Admin])
async def create_webhook(body: WebhookCreate, db: Db, ctx: Ctx) -> WebhookCreated:
    """Subscribe a receiver; loopback, link-local and private addresses are refused (422 `url_refused`)
    unless the configuration allows private URLs."""
    if urlsplit(body.url).scheme.lower() not in ("http", "https"):
        raise ApiError(422, "url_refused", "url: a webhook URL must be http or https")
    refusal = await url_refusal(body.url, ctx.settings.allow_private_urls)
    if refusal:
        raise ApiError(422, "url_refused", f"url: {refusal}")
    row = WebhookSubscription(
        url=body.url,
        secret=body.secret or secrets.token_urlsafe(32),
        events=sorted(set(body.events)),
        active=True,
    )
    db.add(row)
    await db.flush()
    out = WebhookCreated.model_validate(row, from_attributes=True)
    await db.commit()
    return out


@router.get("", dependencies=[Admin])
async def list_webhooks(db: Db) -> Items[WebhookOut]:
    rows = (await db.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id))).all()
    return Items(items=[WebhookOut.model_validate(r, from_attributes=True) for r in rows])


@router.delete("/{subscription_id}", status_code=204, dependencies=[Admin], responses=documented(404))
async def delete_webhook(subscription_id: SubscriptionId, db: Db) -> None:
    """Deactivate: nothing more is queued or sent to it; its delivery history stays readable."""
    (await _one(db, subscription_id)).active = False
    await db.commit()


@router.get("/{subscription_id}/deliveries", dependencies=[Admin], responses=documented(404))
async def list_deliveries(
    subscription_id: SubscriptionId,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Items[DeliveryOut]:
    """The most recent messages queued for the subscription, newest first."""
    await _one(db, subscription_id)
    rows = (
        await db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.subscription_id == subscription_id)
            .order_by(OutboxMessage.id.desc())
            .limit(limit)
        )
    ).all()
    return Items(items=[_delivery(r) for r in rows])


def _delivery(row: OutboxMessage) -> DeliveryOut:
    status: Literal["delivered", "pending", "retrying"] = (
        "delivered" if row.delivered_at else "retrying" if row.attempts else "pending"
    )
    return DeliveryOut(
        id=row.id,
        event_type=row.event_type,
        status=status,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        next_attempt_at=None if row.delivered_at else row.next_attempt_at,
        delivered_at=row.delivered_at,
    )
