"""Whether a security event a charger reports is expected: the central system asked for what it reports, or
a crew is at work on the charger. The rules (`ops/rules.yaml`, match key `expected`) open tickets for a
reset, a firmware change or a maintenance login only when nobody on our side explains it, so the reboot
after an operator's Reset or the new firmware of an update we sent raise no false alarm.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.models import StoredEvent
from chargeops.db.ops_models import Ticket
from chargeops.events import Event, EventKind, SecurityEvent

# The requests the charger agreed to (the gateway's `reboot_requested` events, by command) that explain a
# security event: a reset reboots; a firmware update installs the firmware and reboots.
EXPLAINED_BY_REQUEST: dict[str, frozenset[str]] = {
    "ResetOrReboot": frozenset({"reset", "firmware_update"}),
    "FirmwareUpdated": frozenset({"firmware_update"}),
}
# What a crew working on the charger (a ticket assigned or in progress) does on site: a local reset,
# firmware flashed by hand, logging in to the maintenance interface.
EXPLAINED_BY_CREW = frozenset({"ResetOrReboot", "FirmwareUpdated", "MaintenanceLoginAccepted"})
CREW_AT_WORK = ("assigned", "in_progress")


async def expected(session: AsyncSession, ev: Event, body: SecurityEvent, hours: float) -> bool:
    """True when a request that explains `body.type` reached the charger within `hours` before the event
    arrived (a scheduled reset or firmware update may run hours later), or a crew is at work on it."""
    commands = EXPLAINED_BY_REQUEST.get(body.type)
    if commands:
        since = ev.received_at - timedelta(hours=hours)
        rows = await session.scalars(
            select(StoredEvent.data).where(
                StoredEvent.charger_id == ev.charger_id,
                StoredEvent.kind == EventKind.REBOOT_REQUESTED.value,
                StoredEvent.received_at >= since,
                StoredEvent.received_at <= ev.received_at,
            )
        )
        if any((data or {}).get("command") in commands for data in rows.all()):
            return True
    if body.type not in EXPLAINED_BY_CREW:
        return False
    crew = await session.scalar(
        select(Ticket.id)
        .where(
            Ticket.charger_id == ev.charger_id,
            Ticket.kind == "maintenance",
            Ticket.status.in_(CREW_AT_WORK),
        )
        .limit(1)
    )
    return crew is not None
