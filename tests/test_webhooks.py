"""Webhooks: a receiver that is down misses nothing, gets every event once it is up, in order, signed; the API
refuses private URLs and never shows a secret after creation. Every test runs on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.ops_models import OutboxMessage
from chargeops.events import utcnow
from chargeops.settings import Settings
from ops.api import create_app
from ops.outbox import enqueue
from ops.webhooks import WebhookDispatcher
from telemetry.bus import InProcessBus
from tests.conftest import migrated_sessions
from tests.test_api_support import ADMIN_TOKEN, assert_error, bearer, issue_token
from tests.waiting import until

Sessions = async_sessionmaker[AsyncSession]


class Receiver:
    """A minimal HTTP server recording every request; answers `status`. Down until `start()`."""

    def __init__(self) -> None:
        with socket.socket() as s:  # a port nobody listens on: the receiver is down
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()

    def delivered(self) -> list[tuple[dict[str, str], bytes]]:
        """Requests the receiver acknowledged, first of each delivery id only (receivers dedupe on it)."""
        seen: dict[str, tuple[dict[str, str], bytes]] = {}
        for headers, body in self.requests:
            seen.setdefault(headers["x-chargeops-delivery"], (headers, body))
        return list(seen.values())


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does (README): HMAC-SHA256 over `timestamp.body`, compared in constant time."""
    expected = hmac.new(
        secret.encode(), f"{headers['x-chargeops-timestamp']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["x-chargeops-signature"], f"sha256={expected}")


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[Sessions]:
    async with migrated_sessions(db_url) as made:
        yield made


def make_app(sessions: Sessions, allow_private_urls: bool) -> FastAPI:
    settings = Settings(admin_token=SecretStr(ADMIN_TOKEN), allow_private_urls=allow_private_urls)
    return create_app(sessions, InProcessBus(), settings)


@contextlib.asynccontextmanager
async def client(sessions: Sessions, allow_private_urls: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(sessions, allow_private_urls))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers=bearer(ADMIN_TOKEN)
    ) as c:
        yield c


@contextlib.asynccontextmanager
async def dispatching(sessions: Sessions, count: int = 1, **options: Any) -> AsyncIterator[None]:
    """`count` dispatchers (as if in as many ops processes) with test-sized backoff; `options` go to each."""
    settings = Settings(allow_private_urls=True)
    dispatchers = [
        WebhookDispatcher(
            sessions,
            settings,
            poll_interval=0.02,
            timeout=2.0,
            backoff_base=0.05,
            backoff_cap=0.2,
            batch_size=4,
            **options,
        )
        for _ in range(count)
    ]
    for d in dispatchers:
        d.start()
    try:
        yield
    finally:
        for d in dispatchers:
            await d.stop()


async def subscribe(sessions: Sessions, url: str, **body: Any) -> dict[str, Any]:
    async with client(sessions) as api:
        r = await api.post("/api/webhooks", json={"url": url, **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def queue(sessions: Sessions, events: list[str]) -> None:
    """One transaction per event, as ticket changes make them."""
    for n, event in enumerate(events):
        async with sessions.begin() as session:
            await enqueue(session, event, {"ticket": {"id": 7, "status": event.split(".")[1]}, "n": n})


async def outbox(sessions: Sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def all_delivered(sessions: Sessions) -> bool:
    return all(m.delivered_at is not None for m in await outbox(sessions))


async def set_rows(sessions: Sessions, ids: list[int], **values: Any) -> None:
    async with sessions.begin() as session:
        await session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(**values))


EVENTS = ["ticket.created", "ticket.assigned", "ticket.in_progress", "ticket.resolved", "ticket.closed"]


async def test_receiver_down_then_up_gets_everything_in_order_signed(sessions: Sessions) -> None:
    receiver = Receiver()
    sub = await subscribe(sessions, receiver.url)
    other = await subscribe(sessions, receiver.url.replace("/hook", "/resolved"), events=["ticket.resolved"])
    await queue(sessions, EVENTS)
    delivered_before = metric("chargeops_webhook_deliveries_total", {"outcome": "delivered"})
    async with dispatching(sessions):

        async def retried_while_down() -> bool:
            heads = [m for m in await outbox(sessions) if m.attempts >= 3]
            return {m.subscription_id for m in heads} == {sub["id"], other["id"]}

        await until(retried_while_down)
        rows = await outbox(sessions)
        assert all(m.delivered_at is None for m in rows)
        # Only each subscription's oldest message is tried: nothing overtakes it.
        assert sum(1 for m in rows if m.attempts) == 2
        assert all(m.last_error and "ConnectError" in m.last_error for m in rows if m.attempts)

        assert metric("chargeops_webhook_outbox_pending") == len(rows)

        await receiver.start()
        try:
            await until(lambda: all_delivered(sessions))
            await until(lambda: metric("chargeops_webhook_outbox_pending") == 0)
        finally:
            await receiver.stop()

    rows = await outbox(sessions)
    assert len(rows) == len(EVENTS) + 1
    per_sub: dict[str, list[int]] = {}
    for headers, body in receiver.delivered():
        row = next(m for m in rows if str(m.id) == headers["x-chargeops-delivery"])
        secret = sub["secret"] if row.subscription_id == sub["id"] else other["secret"]
        assert verify(secret, headers, body)
        assert not verify("wrong-secret-wrong-secret", headers, body)
        assert headers["content-type"] == "application/json"
        assert headers["x-chargeops-event"] == row.event_type
        assert abs(int(headers["x-chargeops-timestamp"]) - time.time()) < 60
        assert json.loads(body) == row.payload
        per_sub.setdefault(str(row.subscription_id), []).append(row.id)
    assert per_sub == {
        str(sub["id"]): [m.id for m in rows if m.subscription_id == sub["id"]],
        str(other["id"]): [m.id for m in rows if m.subscription_id == other["id"]],
    }
    assert metric("chargeops_webhook_deliveries_total", {"outcome": "delivered"}) - delivered_before == 6


async def test_failing_receiver_gets_retries_until_it_answers_2xx(sessions: Sessions) -> None:
    receiver = Receiver()
    receiver.status = 500
    sub = await subscribe(sessions, receiver.url)
    await queue(sessions, EVENTS[:2])
    await receiver.start()
    try:
        async with dispatching(sessions):
            await until(lambda: len(receiver.requests) >= 3)
            head = (await outbox(sessions))[0]
            assert head.delivered_at is None and head.attempts >= 2 and head.last_error == "HTTP 500"
            assert {h["x-chargeops-delivery"] for h, _ in receiver.requests} == {str(head.id)}

            async with client(sessions) as api:
                r = await api.get(f"/api/webhooks/{sub['id']}/deliveries")
            assert r.status_code == 200
            assert [(d["status"], d["last_error"]) for d in r.json()["items"]] == [
                ("pending", None),
                ("retrying", "HTTP 500"),
            ]

            receiver.status = 204
            await until(lambda: all_delivered(sessions))
    finally:
        await receiver.stop()
    assert [h["x-chargeops-delivery"] for h, _ in receiver.delivered()] == [
        str(m.id) for m in await outbox(sessions)
    ]
    async with client(sessions) as api:
        items = (await api.get(f"/api/webhooks/{sub['id']}/deliveries")).json()["items"]
    assert [d["status"] for d in items] == ["delivered", "delivered"]
    assert items[1]["attempts"] >= 2 and items[1]["delivered_at"]


async def test_two_dispatchers_send_each_message_once_and_in_order(sessions: Sessions) -> None:
    receiver = Receiver()
    subs = [await subscribe(sessions, f"{receiver.url}/{n}") for n in range(3)]
    await queue(sessions, EVENTS * 3)
    await receiver.start()
    try:
        async with dispatching(sessions, count=2):
            await until(lambda: all_delivered(sessions))
    finally:
        await receiver.stop()
    rows = await outbox(sessions)
    ids = [h["x-chargeops-delivery"] for h, _ in receiver.requests]
    assert sorted(ids, key=int) == [str(m.id) for m in rows] and len(rows) == 45
    for sub in subs:
        mine = [str(m.id) for m in rows if m.subscription_id == sub["id"]]
        assert [i for i in ids if i in mine] == mine


async def test_api_refuses_private_urls_and_hides_secrets(sessions: Sessions) -> None:
    async with client(sessions, allow_private_urls=False) as api:
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest",
            "http://localhost/hook",
            "http://[::1]/hook",
            "ftp://93.184.216.34/hook",
        ):
            assert_error(await api.post("/api/webhooks", json={"url": url}), 422, "url_refused")
        assert_error(
            await api.post("/api/webhooks", json={"url": "http://93.184.216.34/h", "events": ["Bad Event"]}),
            422,
            "invalid_request",
        )
        assert_error(
            await api.post("/api/webhooks", json={"url": "http://93.184.216.34/h", "secret": "short"}),
            422,
            "invalid_request",
        )

        given = "a-receiver-chosen-secret-0123456789"
        r = await api.post(
            "/api/webhooks",
            json={
                "url": "http://93.184.216.34/h",
                "events": ["ticket.resolved", "ticket.created"],
                "secret": given,
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["secret"] == given and created["active"] is True
        assert created["events"] == ["ticket.created", "ticket.resolved"]
        r = await api.post("/api/webhooks", json={"url": "https://93.184.216.34/all"})
        generated = r.json()["secret"]
        assert r.status_code == 201 and len(generated) >= 32

        async with sessions.begin() as session:
            assert await enqueue(session, "ticket.resolved", {"ticket": {"id": 1}}) == 2
            assert await enqueue(session, "ticket.assigned", {"ticket": {"id": 1}}) == 1

        listing = await api.get("/api/webhooks")
        deliveries = await api.get(f"/api/webhooks/{created['id']}/deliveries")
        for response in (listing, deliveries):
            assert response.status_code == 200
            assert given not in response.text and generated not in response.text
            assert "secret" not in response.text
        assert set(listing.json()["items"][0]) == {"id", "url", "events", "active", "created_at"}
        assert [d["event_type"] for d in deliveries.json()["items"]] == ["ticket.resolved"]

        assert (await api.delete(f"/api/webhooks/{created['id']}")).status_code == 204
        assert [s["active"] for s in (await api.get("/api/webhooks")).json()["items"]] == [False, True]
        assert_error(await api.delete("/api/webhooks/999"), 404, "not_found")
        assert_error(await api.get("/api/webhooks/999/deliveries"), 404, "not_found")
        async with sessions.begin() as session:
            assert await enqueue(session, "ticket.resolved", {"ticket": {"id": 1}}) == 1

        operator = bearer(await issue_token(api, "operator"))
        assert_error(await api.get("/api/webhooks", headers=operator), 403, "forbidden")
        assert_error(
            await api.post("/api/webhooks", json={"url": "http://93.184.216.34/h"}, headers=operator),
            403,
            "forbidden",
        )


DAY = timedelta(days=1)


async def test_pruning_removes_only_old_delivered_messages_and_delivery_goes_on(sessions: Sessions) -> None:
    receiver = Receiver()
    subs = [await subscribe(sessions, f"{receiver.url}/{n}") for n in range(2)]
    await queue(sessions, [*EVENTS, "ticket.repeated"])
    rows = await outbox(sessions)
    assert len(rows) == 12
    old, recent, pending = rows[:6], rows[6:8], rows[8:]
    now = utcnow()
    await set_rows(sessions, [m.id for m in old], delivered_at=now - 8 * DAY)
    await set_rows(sessions, [m.id for m in recent], delivered_at=now - DAY / 2)
    # Undelivered messages stay whatever their age (a receiver down for a month).
    await set_rows(sessions, [m.id for m in pending], created_at=now - 30 * DAY)

    # Two dispatchers prune at once, in chunks of two, while the receiver is down.
    async with dispatching(sessions, count=2, retention=DAY, prune_chunk=2, prune_interval=0.05):
        kept = [m.id for m in recent + pending]
        await until(lambda: _ids(sessions, kept))
        await receiver.start()
        try:
            await until(lambda: all_delivered(sessions))
            await queue(sessions, ["ticket.closed"])  # queued after the prune: sent after the others
            await until(lambda: all_delivered(sessions))
        finally:
            await receiver.stop()

    rows = await outbox(sessions)
    assert [m.id for m in rows[:6]] == kept and len(rows) == 8
    sent = [int(h["x-chargeops-delivery"]) for h, _ in receiver.delivered()]
    for sub in subs:
        mine = [m.id for m in rows[2:] if m.subscription_id == sub["id"]]  # all but the recent two
        assert [i for i in sent if i in mine] == mine and len(mine) == 3
    assert sorted(sent) == [m.id for m in pending] + [m.id for m in rows[6:]]


async def _ids(sessions: Sessions, expected: list[int]) -> bool:
    return [m.id for m in await outbox(sessions)] == expected


async def test_prune_deletes_in_chunks_and_never_the_newest_message(sessions: Sessions) -> None:
    await subscribe(sessions, "http://93.184.216.34/h")
    await queue(sessions, EVENTS)
    ids = [m.id for m in await outbox(sessions)]
    await set_rows(sessions, ids, delivered_at=utcnow() - 2 * DAY)
    dispatcher = WebhookDispatcher(sessions, Settings(), retention=DAY, prune_chunk=3)

    assert [await dispatcher.prune() for _ in range(3)] == [3, 1, 0]
    assert [m.id for m in await outbox(sessions)] == ids[-1:]
    # SQLite hands out the highest id again once it is deleted: a new message must not reuse a delivery id.
    await queue(sessions, ["ticket.created"])
    assert [m.id for m in await outbox(sessions)][-1] > ids[-1]


@pytest.mark.postgres
async def test_prune_skips_rows_another_pruner_holds(pg_url: str) -> None:
    async with migrated_sessions(pg_url) as sessions:
        await subscribe(sessions, "http://93.184.216.34/h")
        await queue(sessions, EVENTS)
        ids = [m.id for m in await outbox(sessions)]
        await set_rows(sessions, ids, delivered_at=utcnow() - 2 * DAY)
        dispatcher = WebhookDispatcher(sessions, Settings(), retention=DAY)
        async with sessions.begin() as other:  # another process, midway through deleting the first two
            await other.execute(
                select(OutboxMessage.id).where(OutboxMessage.id.in_(ids[:2])).with_for_update()
            )
            assert await asyncio.wait_for(dispatcher.prune(), timeout=5) == 2
        assert [m.id for m in await outbox(sessions)] == [*ids[:2], ids[-1]]
        assert await dispatcher.prune() == 2
