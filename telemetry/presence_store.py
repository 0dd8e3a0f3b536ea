"""Presence rows inside ingest's batch transaction: which gateway and session a charger is connected
through, and when it went offline."""

from __future__ import annotations

import itertools

from sqlalchemy import Table, and_, bindparam, update
from sqlalchemy.ext.asyncio import AsyncConnection

from chargeops.db.models import Charger
from chargeops.events import Connected, Disconnected, Event

CHARGERS: Table = Charger.__table__  # type: ignore[assignment]


_connected = (
    update(CHARGERS)
    .where(CHARGERS.c.id == bindparam("cid"))
    .values(
        connected=True,
        protocol=bindparam("protocol"),
        gateway_id=bindparam("gateway"),
        gateway_instance=bindparam("instance"),
        session_id=bindparam("session"),
    )
)
# Only the session that is still the current one may mark the charger offline (a takeover's new session may
# have connected before the old one's close was stored).
_disconnected = (
    update(CHARGERS)
    .where(and_(CHARGERS.c.id == bindparam("cid"), CHARGERS.c.session_id == bindparam("session")))
    .values(connected=False)
)


async def apply_presence(conn: AsyncConnection, events: list[Event]) -> None:
    """Connects and disconnects in the order the gateway saw them; a run of the same kind (a reconnect
    storm's connects) is one executemany, not a round trip per charger."""
    for connects, run in itertools.groupby(events, key=lambda ev: isinstance(ev.body, Connected)):
        if connects:
            params = [
                {
                    "cid": ev.charger_id,
                    "protocol": b.protocol,
                    "gateway": b.gateway_id,
                    "instance": b.instance or None,
                    "session": b.session_id,
                }
                for ev in run
                if isinstance(b := ev.body, Connected)
            ]
            await conn.execute(_connected, params)
        else:
            gone = [
                {"cid": ev.charger_id, "session": b.session_id}
                for ev in run
                if isinstance(b := ev.body, Disconnected)
            ]
            if gone:
                await conn.execute(_disconnected, gone)
