"""The boot-loop rule's evidence: how many times a charger booted lately on its own.

A boot the central system asked for is not the charger's doing: one it gives a requested reason for (2.x
RemoteReset, Triggered, ...), and for each reboot it agreed to (`RebootRequested`: Reset, TriggerMessage
BootNotification; 1.6 boots give no reason) the first boot after it. The history is read once per batch of
events (`recent_boots`), so a fleet rebooting at once costs one query, not one per charger.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.models import StoredEvent
from chargeops.events import Booted, Event, EventKind
from ops.rules import BootLoop

# Boots the charger says the central system asked for (OCPP 2.x BootReasonEnumType), and how long after a
# reboot the charger agreed to its next boot is taken as that reboot.
REQUESTED_BOOT_REASONS = frozenset({"RemoteReset", "Triggered", "ScheduledReset", "FirmwareUpdate"})
REBOOT_EXCUSE_MINUTES = 10
BootRow = tuple[str, str, datetime, object]  # a stored boot or reboot request: event id, kind, time, data


async def recent_boots(
    sessions: async_sessionmaker[AsyncSession], events: Sequence[Event], minutes: float
) -> dict[str, list[BootRow]]:
    """Stored boots and agreed reboots of the chargers that booted in `events`, within the last `minutes`
    and the excuse margin before them, per charger in time order: one query for the batch."""
    booted = {ev.charger_id for ev in events if isinstance(ev.body, Booted)}
    if not booted:
        return {}
    since = clock.now() - timedelta(minutes=minutes + REBOOT_EXCUSE_MINUTES)
    kinds = (EventKind.BOOTED.value, EventKind.REBOOT_REQUESTED.value)
    found: dict[str, list[BootRow]] = {}
    async with sessions() as session:
        rows = await session.execute(
            select(
                StoredEvent.charger_id,
                StoredEvent.event_id,
                StoredEvent.kind,
                StoredEvent.received_at,
                StoredEvent.data,
            )
            .where(
                StoredEvent.charger_id.in_(booted),
                StoredEvent.kind.in_(kinds),
                StoredEvent.received_at >= since,
            )
            .order_by(StoredEvent.received_at)
        )
        for charger_id, event_id, kind, at, data in rows:
            found.setdefault(charger_id, []).append((event_id, kind, stored_utc(at), data))
    return found


def is_loop(ev: Event, history: Sequence[BootRow], rule: BootLoop) -> bool:
    """Whether `ev` (a boot) makes `rule.boots` boots of the charger's own within `rule.minutes`, given its
    stored `history` (`recent_boots`)."""
    since = clock.now() - timedelta(minutes=rule.minutes)
    boots: dict[str, tuple[datetime, str | None]] = {}
    requests: list[datetime] = []
    for event_id, kind, at, data in history:
        if kind == EventKind.REBOOT_REQUESTED.value:
            requests.append(at)
        else:
            boots[event_id] = (at, data.get("reason") if isinstance(data, dict) else None)
    if isinstance(ev.body, Booted):
        boots.setdefault(ev.event_id, (ev.received_at, ev.body.reason))
    counted = 0
    excuses, grace = sorted(requests), timedelta(minutes=REBOOT_EXCUSE_MINUTES)
    for at, reason in sorted(boots.values(), key=lambda b: b[0]):
        excuse = next((r for r in excuses if r <= at <= r + grace), None)
        if excuse is not None:
            excuses.remove(excuse)
        elif reason not in REQUESTED_BOOT_REASONS and at >= since:
            counted += 1
    return counted >= rule.boots
