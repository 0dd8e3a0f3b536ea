"""What a change of an id token does to the chargers: the local lists that hold it (or, when the policy puts
it on lists, every list) are marked stale, and when it stops being Accepted (blocked, expired, invalid or
deleted) the chargers are told at once, so a stolen card stops working: the connected chargers whose list
holds it get a differential update, and those it was used at (a transaction with it) may have it in their
authorization cache and get ClearCache (2.x only when AuthCacheCtrlr is enabled; 1.6 always)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from chargeops import clock
from chargeops.commands import CLEAR_AUTH_CACHE, GET_LOCAL_AUTH_SETTINGS
from chargeops.db.engine import stored_utc
from chargeops.db.models import Charger, LocalList, LocalListEntry, Transaction
from chargeops.id_tokens import effective_status
from chargeops.logs import for_charger
from ops.local_list import policy, records
from ops.local_list.policy import V16_PROTOCOL
from ops.local_list.sync import SETTINGS, LocalListSync

log = logging.getLogger("chargeops.local_list")


@dataclass(frozen=True, slots=True)
class TokenState:
    """A token's entry as it was before or is after a change."""

    status: str
    expiry: datetime | None
    group_id: str | None

    def accepted(self, now: datetime) -> bool:
        expiry = stored_utc(self.expiry) if self.expiry is not None else None
        return effective_status(self.status, expiry, now) == "Accepted"


@dataclass(slots=True)
class Withdrawn:
    """What was done for a token that stopped being Accepted: lists synced, caches cleared (charger →
    the answer, or why not)."""

    id_token: str
    synced: dict[str, str]
    cleared: dict[str, str]


class TokenReactions:
    """Runs in the process that changed the token (the API); the urgent part in the background."""

    def __init__(self, sync: LocalListSync) -> None:
        self._sync = sync
        self._tasks: set[asyncio.Task[Withdrawn]] = set()

    async def changed(self, id_token: str, before: TokenState | None, after: TokenState | None) -> None:
        now = clock.now()
        wanted = after is not None and policy.wanted(id_token, after.group_id, self._sync.groups)
        async with self._sync.sessions() as session:
            stale = await records.token_changed(session, id_token, wanted, now)
            await session.commit()
        if stale:
            log.info("id token %s changed: %d local list(s) stale", id_token, len(stale))
        if before is not None and before.accepted(now) and not (after is not None and after.accepted(now)):
            task = asyncio.get_running_loop().create_task(self.withdraw(id_token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def withdraw(self, id_token: str) -> Withdrawn:
        """Sync the connected chargers whose list holds the token and clear the caches that may hold it."""
        async with self._sync.sessions() as session:
            connected = select(Charger.id).where(Charger.connected)
            holders = await session.scalars(
                select(LocalListEntry.charger_id).where(
                    LocalListEntry.id_token == id_token, LocalListEntry.charger_id.in_(connected)
                )
            )
            used_at = await session.scalars(
                select(Transaction.charger_id)
                .where(Transaction.id_token == id_token, Transaction.charger_id.in_(connected))
                .distinct()
            )
            holding, users = sorted(holders), sorted(used_at)
        results = await self._sync.sync_many(holding)
        cleared = dict(zip(users, await asyncio.gather(*(self.clear_cache(c) for c in users)), strict=True))
        done = Withdrawn(id_token, {r.charger_id: f"{r.state} {r.result}" for r in results}, cleared)
        log.info("id token %s withdrawn: lists %s, caches %s", id_token, done.synced, done.cleared)
        return done

    async def clear_cache(self, charger_id: str) -> str:
        """ClearCache on one charger; its answer, or why it was not sent."""
        async with self._sync.sessions() as session:
            charger = await session.get(Charger, charger_id)
            row = await session.get(LocalList, charger_id)
            if charger is None:
                return "unknown"
            protocol, booted = charger.protocol, charger.last_boot_at
            enabled, read_at = (row.cache_enabled, row.settings_at) if row is not None else (None, None)
        if protocol != V16_PROTOCOL:
            if read_at is None or (booted is not None and stored_utc(read_at) < stored_utc(booted)):
                reply = await self._sync.ask(charger_id, GET_LOCAL_AUTH_SETTINGS)
                if reply.outcome != "result":
                    return f"settings not read: {reply.outcome}"
                await self._sync.store_settings(charger_id, {n: reply.payload.get(n) for n in SETTINGS})
                enabled = reply.payload.get("cache_enabled")
            if enabled is not True:
                return "not sent: AuthCacheCtrlr not enabled"
        reply = await self._sync.ask(charger_id, CLEAR_AUTH_CACHE)
        answer = str(reply.payload.get("status")) if reply.outcome == "result" else reply.outcome
        for_charger(log, charger_id).info("ClearCache: %s", answer)
        return answer

    async def settled(self) -> list[Withdrawn]:
        """Wait for the background work started so far (tests, shutdown)."""
        return list(await asyncio.gather(*self._tasks)) if self._tasks else []
