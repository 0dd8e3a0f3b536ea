"""Which tokens go on a charger's local list, and as what (the policy).

Every token of the authorization list (`id_tokens`) goes on every charger's list, or, with
`local_list_groups` set, the tokens of those groups (a token whose `group_id` is one of them, or the group
token itself). Each goes with its status as of the sync (an Accepted token past its expiry goes as Expired),
so a Blocked or Expired card is refused offline too, with its expiry and group. A 1.6 charger gets only
tokens of at most 20 characters (the idTag limit), and a group id longer than that is left out of its entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.engine import stored_iso, stored_utc
from chargeops.db.models import IdToken, LocalListEntry
from chargeops.id_tokens import effective_status

V16_PROTOCOL = "ocpp1.6"
V16_ID_TAG_MAX = 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One token as a local list holds it."""

    id_token: str
    type: str
    status: str
    expiry: datetime | None = None
    group_id: str | None = None

    def neutral(self) -> dict[str, Any]:
        """The entry as `chargeops.SendLocalList` carries it."""
        return {
            "id_token": self.id_token,
            "type": self.type,
            "status": self.status,
            "expiry": stored_iso(self.expiry),
            "group_id": self.group_id,
        }


@dataclass(frozen=True, slots=True)
class Removal:
    """A token a differential update takes off the list."""

    id_token: str

    def neutral(self) -> dict[str, Any]:
        return {"id_token": self.id_token}


Change = Entry | Removal


def wanted(id_token: str, group_id: str | None, groups: frozenset[str]) -> bool:
    """Does the policy put this token on the lists?"""
    return not groups or id_token in groups or group_id in groups


def _entry(row: IdToken, status: str, protocol: str | None) -> Entry | None:
    group = row.group_id
    if protocol == V16_PROTOCOL:
        if len(row.id_token) > V16_ID_TAG_MAX:
            return None
        group = group if group is None or len(group) <= V16_ID_TAG_MAX else None
    expiry = stored_utc(row.expiry) if row.expiry is not None else None
    return Entry(row.id_token, row.type, status, expiry, group)


async def desired(
    session: AsyncSession, protocol: str | None, groups: frozenset[str], now: datetime
) -> dict[str, Entry]:
    """What the policy puts on a charger of `protocol`'s list now, by token."""
    query = select(IdToken).order_by(IdToken.id_token)
    if groups:
        query = query.where(or_(IdToken.group_id.in_(groups), IdToken.id_token.in_(groups)))
    out: dict[str, Entry] = {}
    for row in await session.scalars(query):
        expiry = stored_utc(row.expiry) if row.expiry is not None else None
        entry = _entry(row, effective_status(row.status, expiry, now), protocol)
        if entry is not None:
            out[entry.id_token] = entry
    return out


async def held(session: AsyncSession, charger_id: str) -> dict[str, Entry]:
    """What the charger's confirmed list holds, by token."""
    rows = await session.scalars(select(LocalListEntry).where(LocalListEntry.charger_id == charger_id))
    out: dict[str, Entry] = {}
    for r in rows:
        out[r.id_token] = Entry(
            r.id_token, r.type, r.status, stored_utc(r.expiry) if r.expiry else None, r.group_id
        )
    return out


def differences(want: dict[str, Entry], have: dict[str, Entry]) -> list[Change]:
    """A differential update from `have` to `want`: new and changed entries, then removals."""
    changes: list[Change] = [e for token, e in want.items() if have.get(token) != e]
    changes += [Removal(token) for token in have if token not in want]
    return changes


def chunks(changes: list[Change], per_message: int | None) -> Iterable[list[Change]]:
    """`changes` in messages of at most `per_message` entries (None or 0: one message)."""
    size = per_message if per_message and per_message > 0 else max(1, len(changes))
    if not changes:
        yield []
    for start in range(0, len(changes), size):
        yield changes[start : start + size]
