"""What chargeops keeps of each charger's local list (`local_lists`, `local_list_entries`): the confirmed
version and entries, its state, and the marks a changed token leaves on the lists it concerns."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.engine import stored_utc
from chargeops.db.models import LocalList, LocalListEntry
from ops.local_list.policy import Change, Entry

IN_STEP, STALE, NEVER, FAILED, UNSUPPORTED = "in_step", "stale", "never", "failed", "unsupported"


async def load(session: AsyncSession, charger_id: str, lock: bool = False) -> LocalList:
    """The charger's row, or a new one (state `never`) added to the session; `lock`: held until commit, so
    a token change waits for the sync's outcome and marks it (`token_changed`)."""
    row = await session.get(LocalList, charger_id, with_for_update=lock)
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
    every list, are marked changed; those in step become stale. Returns the chargers marked stale.

    One UPDATE, so a sync finishing at the same moment cannot slip between reading a list's state and
    marking it: whichever commits second sees the other's row (the sync locks it, `load(lock=True)`)."""
    holding = select(LocalListEntry.charger_id).where(LocalListEntry.id_token == id_token)
    concerned = LocalList.charger_id.in_(holding) if not wanted else LocalList.charger_id.is_not(None)
    marked = await session.execute(
        update(LocalList)
        .where(concerned)
        .values(changed_at=now, state=case((LocalList.state == IN_STEP, STALE), else_=LocalList.state))
        .returning(LocalList.charger_id, LocalList.state)
    )
    return [charger_id for charger_id, state in marked if state == STALE]
