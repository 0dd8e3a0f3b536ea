"""Keeping a charger's local authorization list in step with the id tokens (1.6 Local Auth List
Management, 2.0.1 D01-D04), through the neutral commands of `chargeops.commands`.

A sync reads what the charger supports (once per boot: GetLocalAuthSettings), asks its list version
(GetLocalListVersion), and then:
- a Full update when we never had a version confirmed or the charger's differs from it (D01);
- else a Differential update with what changed since the confirmed version (new and changed entries,
  removals as entries without info), or nothing when nothing changed.
Updates go in messages of at most SendLocalListMaxLength (1.6) / ItemsPerMessage (2.x) entries, and on 2.x
of at most the station's BytesPerMessage (the gateway sends the entries that fit and says how many; the rest
go in the next message): the first of a full update is Full, the rest Differential, each with the next
version (D01.FR.11; a differential version must be above the list's). Each accepted message is stored at
once (version and entries), so a sync that fails half-way leaves a true record. Answers: Accepted → the
version is stored; VersionMismatch to a differential update → a Full one; Failed / NotSupported / no
answer → stored and reported, state `failed` (`unsupported` for NotSupported, a disabled list or a 1.6
version of -1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import (
    GET_LOCAL_AUTH_SETTINGS,
    GET_LOCAL_LIST_VERSION,
    SEND_LOCAL_LIST,
    CommandReply,
    Commands,
)
from chargeops.db.engine import stored_utc
from chargeops.db.models import Charger
from chargeops.logs import for_charger
from ops.local_list import policy, records
from ops.local_list.policy import Change
from ops.local_list.records import FAILED, IN_STEP, STALE, UNSUPPORTED

log = logging.getLogger("chargeops.local_list")

_NO_SUCH_ACTION = ("NotSupported", "NotImplemented")
SETTINGS = ("list_enabled", "max_length", "items_per_message", "cache_enabled")


@dataclass(slots=True)
class SyncResult:
    """How one sync went: `result` is the charger's answer (Accepted, VersionMismatch, Failed,
    NotSupported), `InStep` (nothing to send) or what kept it from answering (not_connected, timeout,
    error, invalid, too_long)."""

    charger_id: str
    state: str
    version: int | None
    update: str | None
    result: str
    detail: str = ""
    entries_sent: int = 0
    messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Unknown(LookupError):
    """No such charger."""


class LocalListSync:
    """Syncs chargers' local lists; one sync per charger at a time (within this process)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Commands,
        *,
        groups: frozenset[str],
        timeout: float,
        concurrency: int = 8,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._groups = groups
        self._timeout = timeout
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._concurrency = asyncio.Semaphore(concurrency)

    @property
    def groups(self) -> frozenset[str]:
        return self._groups

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self._sessions

    async def ask(self, charger_id: str, action: str, payload: dict[str, Any] | None = None) -> CommandReply:
        return await self._bus.request(charger_id, action, payload or {}, self._timeout)

    async def sync_many(self, charger_ids: list[str], *, full: bool = False) -> list[SyncResult]:
        """Sync each charger (a few at a time); one that cannot be reached is reported, not raised."""

        async def one(charger_id: str) -> SyncResult:
            async with self._concurrency:
                return await self.sync(charger_id, full=full)

        return list(await asyncio.gather(*(one(c) for c in charger_ids)))

    async def sync(self, charger_id: str, *, full: bool = False) -> SyncResult:
        """Bring the charger's list in step (`full`: send it whole whatever the versions say)."""
        async with self._locks[charger_id]:
            started = clock.now()
            async with self._sessions() as session:
                charger = await session.get(Charger, charger_id)
                if charger is None:
                    raise Unknown(charger_id)
                row = await records.load(session, charger_id)
                protocol, booted = charger.protocol, charger.last_boot_at
                await session.commit()
                known = {name: getattr(row, name) for name in SETTINGS}
                read_at, confirmed = row.settings_at, row.version
            if read_at is None or (booted is not None and stored_utc(read_at) < stored_utc(booted)):
                reply = await self.ask(charger_id, GET_LOCAL_AUTH_SETTINGS)
                if reply.outcome in ("not_connected", "timeout"):
                    return await self._finish(charger_id, started, FAILED, None, reply)
                known = {n: reply.payload.get(n) for n in SETTINGS} if reply.outcome == "result" else {}
                await self.store_settings(charger_id, known)
            if known.get("list_enabled") is False:
                why = CommandReply("result", {"status": "NotSupported"}, description="local list disabled")
                return await self._finish(charger_id, started, UNSUPPORTED, None, why)
            reply = await self.ask(charger_id, GET_LOCAL_LIST_VERSION)
            if reply.outcome != "result":
                state = UNSUPPORTED if reply.error_code in _NO_SUCH_ACTION else FAILED
                return await self._finish(charger_id, started, state, None, reply)
            theirs = reply.payload.get("version")
            if not isinstance(theirs, int) or theirs < 0:
                why = CommandReply("result", {"status": "NotSupported"}, description=f"list version {theirs}")
                return await self._finish(charger_id, started, UNSUPPORTED, None, why)
            return await self._update(charger_id, protocol, started, known, theirs, confirmed, full)

    async def _update(
        self,
        charger_id: str,
        protocol: str | None,
        started: datetime,
        known: dict[str, Any],
        theirs: int,
        confirmed: int | None,
        full: bool,
    ) -> SyncResult:
        async with self._sessions() as session:
            want = await policy.desired(session, protocol, self._groups, started)
            have = {} if full or confirmed != theirs else await policy.held(session, charger_id)
        max_length = known.get("max_length")
        if isinstance(max_length, int) and 0 < max_length < len(want):
            why = CommandReply(
                "result",
                {"status": "too_long"},
                description=f"{len(want)} tokens, the list holds {max_length}: narrow local_list_groups",
            )
            return await self._finish(charger_id, started, FAILED, "Full", why)
        full = full or confirmed is None or confirmed != theirs
        changes: list[Change] = list(want.values()) if full else policy.differences(want, have)
        if not full and not changes:
            done = CommandReply("result", {"status": "InStep"})
            return await self._finish(charger_id, started, IN_STEP, None, done)
        version = max(theirs, confirmed or 0) + 1
        reply, version, sent, messages = await self._send(charger_id, known, full, changes, version)
        if not full and reply.payload.get("status") == "VersionMismatch":
            for_charger(log, charger_id).info("local list: VersionMismatch to a differential update; Full")
            changes = list(want.values())
            reply, version, more, extra = await self._send(charger_id, known, True, changes, version + 1)
            full, sent, messages = True, sent + more, messages + extra
        status = reply.payload.get("status") if reply.outcome == "result" else None
        state = {"Accepted": IN_STEP, "NotSupported": UNSUPPORTED}.get(str(status), FAILED)
        update = "Full" if full else "Differential"
        return await self._finish(charger_id, started, state, update, reply, sent, messages)

    async def _send(
        self, charger_id: str, known: dict[str, Any], full: bool, changes: list[Change], version: int
    ) -> tuple[CommandReply, int, int, int]:
        """Send `changes` in messages from `version` on, until one is not accepted; the last reply, the
        version of that message (or the next one after them all), and how many entries and messages went
        out."""
        sent = messages = 0
        reply = CommandReply("result", {"status": "Accepted"})
        parts = list(policy.chunks(changes, known.get("items_per_message")))
        while parts:
            part = parts.pop(0)
            first_full = full and messages == 0
            payload = {"version": version, "full": first_full, "entries": [c.neutral() for c in part]}
            reply = await self.ask(charger_id, SEND_LOCAL_LIST, payload)
            messages += 1
            # a 2.x station's BytesPerMessage may let only the first entries go: the rest go next
            if reply.outcome == "result":
                taken = reply.payload.get("entries_sent", len(part))
            else:  # refused by the gateway (nothing went), or sent with no usable answer
                taken = 0 if reply.outcome == "invalid" else len(part)
            sent += taken
            if reply.outcome != "result" or reply.payload.get("status") != "Accepted":
                break
            if taken < len(part):
                parts.insert(0, part[taken:])
            async with self._sessions() as session:
                await records.confirm(session, charger_id, version, first_full, part[:taken])
                await session.commit()
            version += 1
        return reply, version, sent, messages

    async def store_settings(self, charger_id: str, known: dict[str, Any]) -> None:
        """What the charger said it supports (GetLocalAuthSettings), read now."""
        async with self._sessions() as session:
            row = await records.load(session, charger_id)
            for name in SETTINGS:
                setattr(row, name, known.get(name))
            row.settings_at = clock.now()
            await session.commit()

    async def _finish(
        self,
        charger_id: str,
        started: datetime,
        state: str,
        update: str | None,
        reply: CommandReply,
        sent: int = 0,
        messages: int = 0,
    ) -> SyncResult:
        """Store and log how the sync went (not for a charger that is not connected: nothing was learned). A
        token change during the sync leaves an in-step list stale."""
        if reply.outcome == "result":
            result, detail = str(reply.payload.get("status")), reply.description or ""
            if reply.payload.get("reason"):
                detail = f"{detail} {reply.payload['reason']}".strip()
        else:
            result, detail = reply.outcome, f"{reply.error_code or ''} {reply.description or ''}".strip()
        async with self._sessions() as session:
            row = await records.load(session, charger_id, lock=True)
            if reply.outcome == "not_connected":  # nothing learned: the stored state stands
                return SyncResult(charger_id, row.state, row.version, None, result, detail)
            if state == IN_STEP and records.changed_since(row, started):
                state = STALE
            row.state, row.synced_at, row.last_update = state, clock.now(), update
            row.last_result, row.last_detail, row.entries_sent = result[:32], detail[:300], sent
            version = row.version
            await session.commit()
        level = logging.INFO if state in (IN_STEP, STALE) else logging.WARNING
        for_charger(log, charger_id).log(
            level, "local list %s: %s %s (%d entries in %d messages, version %s) %s",
            state, update or "no update", result, sent, messages, version, detail,
        )  # fmt: skip
        return SyncResult(charger_id, state, version, update, result, detail, sent, messages)


async def connected_chargers(session: AsyncSession, site: str | None = None) -> list[str]:
    """Connected chargers (not swap stations), of one site if given."""
    query = select(Charger.id).where(Charger.connected, Charger.kind == "charger").order_by(Charger.id)
    if site is not None:
        query = query.where(Charger.site == site)
    return list(await session.scalars(query))
