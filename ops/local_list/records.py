"""What chargeops keeps of each charger's local list (`local_lists`, `local_list_entries`): the confirmed
version and entries, its state, and the marks a changed token leaves on the lists it concerns."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.engine import stored_utc
from chargeops.db.models import LocalList, LocalListEntry
from ops.local_list.policy import Change, Entry

IN_STEP, STALE, NEVER, FAILED, UNSUPPORTED = "in_step", "stale", "never", "failed", "unsupported"


async def load(session: AsyncSession, charger_id: str) -> LocalList:
    """The charger's row, or a new one (state `never`) added to the session."""
    row = await session.get(LocalList, charger_id)
    if row is None:
        row = LocalList(charger_id=charger_id, state=NEVER, entries_sent=0)
        session.add(row)
    return row


async def confirm(
    session: AsyncSession, charger_id: str, version: int, full: bool, part: list[Change]
) -> None:
    """The charger accepted `part` as `version`: what its list holds now."""
    mine = LocalListEntry.charger_id == charger_id
    if full:
        await session.execute(delete(LocalListEntry).where(mine))
    elif part:
        tokens = [c.id_token for c in part]
        await session.execute(delete(LocalListEntry).where(mine, LocalListEntry.id_token.in_(tokens)))
    rows = [
        {"charger_id": charger_id, "id_token": c.id_token, "type": c.type, "status": c.status,
         "expiry": c.expiry, "group_id": c.group_id}
        for c in part if isinstance(c, Entry)
    ]  # fmt: skip
    if rows:
        await session.execute(insert(LocalListEntry), rows)
    await session.execute(update(LocalList).where(LocalList.charger_id == charger_id).values(version=version))


def changed_since(row: LocalList, started: datetime) -> bool:
    """Did a token this list concerns change while a sync that started at `started` ran?"""
    return row.changed_at is not None and stored_utc(row.changed_at) >= started


async def token_changed(session: AsyncSession, id_token: str, wanted: bool, now: datetime) -> list[str]:
    """A token changed (or went): the lists holding it, and with `wanted` (the policy puts it on lists)
    every list, are marked changed; those in step become stale. Returns the chargers marked stale."""
    holding = select(LocalListEntry.charger_id).where(LocalListEntry.id_token == id_token)
    concerned = LocalList.charger_id.in_(holding) if not wanted else LocalList.charger_id.is_not(None)
    stale = list(
        await session.scalars(select(LocalList.charger_id).where(concerned, LocalList.state == IN_STEP))
    )
    await session.execute(update(LocalList).where(concerned).values(changed_at=now))
    if stale:
        await session.execute(update(LocalList).where(LocalList.charger_id.in_(stale)).values(state=STALE))
    return stale
