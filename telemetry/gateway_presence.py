"""Gateway liveness applied to the chargers' connection state (ingest role; docs/bus.md, "Gateway presence").

A gateway run that is lost (its Will: `offline`, sent by the broker after a kill -9 or a lost network, or its
own `offline` on a clean stop) or replaced (`online` from a new run of the same gateway id) leaves chargers
recorded `connected` that no Disconnected event will ever clear. For each such charger this publishes the
event a normal disconnect publishes, `Disconnected(reason="gateway_lost")` with the session the database
holds, so it takes the same path (stored by ingest, seen by ops) and the same rule: a disconnect applies
only to the session still recorded, so a charger that reconnected elsewhere meanwhile is left alone.

Each presence reaches one ingest process (a shared subscription on a persistent session: one queued while
all are down, none of the retained ones); a presence seen twice (redelivered after a crash) publishes the
same events again, with the same ids, stored once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger
from chargeops.events import Disconnected, Event
from chargeops.settings import Settings
from telemetry.metrics import GATEWAY_LOST_CHARGERS
from telemetry.mqtt.client import Broker
from telemetry.mqtt.consumer import ONE_BY_ONE, DurableConsumer
from telemetry.mqtt.presence import GatewayPresence
from telemetry.mqtt.topics import Topics
from telemetry.periodic import Background

log = logging.getLogger(__name__)

REASON = "gateway_lost"
SESSION_EXPIRY = 7 * 86400  # s, as ingest's own session: a Will sent while every ingest is down waits
OP_TIMEOUT = 10.0
_IDS = uuid.UUID("0b8f3c52-2d0e-4d55-9f7c-6f1f3a0c9a41")

Publish = Callable[[Sequence[Event]], Awaitable[None]]


def lost_event(charger_id: str, gateway_id: str, session_id: str) -> Event:
    """The disconnect of one session whose gateway run was lost: one id per session, however often made."""
    event_id = str(uuid.uuid5(_IDS, f"{charger_id}\x00{session_id}"))
    return Event(charger_id, Disconnected(gateway_id, session_id, REASON), event_id=event_id)


async def stranded(sessions: async_sessionmaker[AsyncSession], presence: GatewayPresence) -> list[Event]:
    """What a presence leaves to clear: for `offline`, the chargers recorded connected on that very run and
    broker connection (after a reconnect the gateway announced the ones it still holds under the next one);
    for `online`, those recorded connected on any other run of the same gateway id."""
    run = Charger.gateway_instance
    same_run = run == presence.instance
    other_run = or_(run.is_(None), ~run.startswith(f"{presence.run}.", autoescape=True))
    query = select(Charger.id, Charger.session_id).where(
        Charger.connected.is_(True),
        Charger.gateway_id == presence.gateway_id,
        other_run if presence.online else same_run,
    )
    async with sessions() as session:
        rows = (await session.execute(query.order_by(Charger.id))).all()
    return [lost_event(cid, presence.gateway_id, sid) for cid, sid in rows if sid is not None]


async def apply_presence(
    sessions: async_sessionmaker[AsyncSession], presence: GatewayPresence, publish: Publish
) -> int:
    """Publishes the disconnects `presence` implies; returns how many. Raises when the database or the bus
    fails (nothing is lost: the presence is applied again)."""
    events = await stranded(sessions, presence)
    if events:
        await publish(events)
        GATEWAY_LOST_CHARGERS.labels("restarted" if presence.online else "offline").inc(len(events))
    return len(events)


class GatewayPresenceSubscriber(Background):
    """Takes every gateway's presence (one ingest process each) and publishes the disconnects it implies."""

    name = "gateway-presence"

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], settings: Settings, publish: Publish
    ) -> None:
        if not settings.mqtt_url:
            raise ValueError("gateway presence needs CHARGEOPS_MQTT_URL")
        self._sessions = sessions
        self._publish = publish
        broker = Broker.from_settings(settings)
        self.client_id = f"{broker.root}-ingest-presence-{settings.node_id}"
        self.topic_filter = Topics(broker.root).shared_gateways("ingest")
        self._consumer: DurableConsumer[GatewayPresence] = DurableConsumer(
            broker,
            self.client_id,
            [self.topic_filter],
            _decode,
            self._apply,
            ONE_BY_ONE,
            session_expiry=SESSION_EXPIRY,
            op_timeout=OP_TIMEOUT,
            name="gateway presence",
        )
        self.subscribed = self._consumer.ready

    async def _run(self) -> None:
        await self._consumer.run()

    async def _apply(self, presences: list[GatewayPresence]) -> None:
        """Raises when the database or the broker fails: the consumer retries, nothing is acked meanwhile."""
        for presence in presences:
            cleared = await apply_presence(self._sessions, presence, self._publish)
            log.info(
                "gateway %s run %s is %s: %d chargers left connected by a lost run marked disconnected",
                presence.gateway_id,
                presence.instance,
                "online" if presence.online else "offline",
                cleared,
            )


def _decode(payload: bytes, _topic: str) -> list[GatewayPresence]:
    presence = GatewayPresence.decode(payload)
    return [] if presence is None else [presence]
