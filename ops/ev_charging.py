"""ISO 15118 smart charging in ops (OCPP 2.x K15–K17): an EV's charging needs → the session's charging
schedule, within the site's limit and the operator's cap on the session, sent as the session's TxProfile
and kept (`ops.ev_plan`, which says where the caps come from).

A renegotiation the EV starts (K17) is new needs, answered the same way; the new TxProfile replaces the
last (same id). One the CSMS starts (K16): every `site_plan_interval` the planner looks at the sessions it
scheduled in this process; when the site's limit for a charger moved (by more than 5 % or 100 W) from the
one the schedule was made under, the session is planned again from the EV's last needs and the new
TxProfile sent, so a lowered grid limit reaches a session whose TxProfile would otherwise outrank the site
planner's default profile. Sessions scheduled before a restart of ops are renegotiated by the EV only, and
a session superseded on its EVSE by a newer one (its end was lost) not at all. When the site planner
moves a charger's limit it asks for the renegotiation before it sends the default profile (the TxProfile
holds the running EV, so it goes first; TC_K_58 expects it first). An operator may renegotiate a session
on demand, with or without a cap of its own (`ops.ev_renegotiation`, TC_K_59): the cap is kept in
`ev_operator_caps`, so every later TxProfile of the session (K16 here, K17, after a restart) stays within
it; it goes when the transaction ends (at once on its TransactionEnded, else at the next step).
The schedule itself is `ops.ev_schedule` (pure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy import delete, exists, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import EvOperatorCap, Transaction
from chargeops.events import EvChargingNeeds, Event, TransactionEnded, TransactionStarted
from chargeops.logs import for_charger
from chargeops.settings import Settings
from ops.ev_plan import offer, operator_cap_w, site_caps_w
from telemetry.bus import Bus
from telemetry.periodic import Periodic

log = logging.getLogger("chargeops.ev_charging")


def cap_moved(before: float | None, now: float | None) -> bool:
    """Whether a site limit moved enough to renegotiate (K16): appeared, went, or changed by more than
    5 % or 100 W, whichever is more."""
    if before is None or now is None:
        return before != now
    return abs(now - before) > max(100.0, 0.05 * before)


class EvChargingPlanner(Periodic):
    """Bus listener (role ops): each EV's needs get a schedule; the charger's answer is awaited off the
    listener, in a task of its own, so a slow charger holds up no one. Its periodic step renegotiates the
    sessions whose site limit moved (K16)."""

    name = "ev_charging"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus, settings: Settings) -> None:
        super().__init__(settings.site_plan_interval)
        self._sessions = sessions
        self._bus = bus
        self._timeout = settings.call_timeout
        self._margin_pct = settings.site_margin_pct
        self._tasks: set[asyncio.Task[str]] = set()
        # (charger, transaction) → the needs' event, the needs, the site limit its schedule was made under
        self._scheduled: dict[tuple[str, str], tuple[Event, EvChargingNeeds, float | None]] = {}
        # the limit the site planner is sending a charger (stored once the charger answered): needs arriving
        # meanwhile are planned under it, not under the one it replaces
        self._announced: dict[str, float] = {}

    async def handle(self, events: Sequence[Event]) -> None:
        ended: list[tuple[str, str]] = []
        for ev in events:
            if isinstance(ev.body, TransactionStarted) and ev.body.evse_id is not None:
                self._supersede(ev.charger_id, ev.body.evse_id, ev.body.transaction_id)
            if isinstance(ev.body, TransactionEnded):
                ended.append((ev.charger_id, ev.body.transaction_id))
            if isinstance(ev.body, EvChargingNeeds):
                task = asyncio.get_running_loop().create_task(self.answer(ev, ev.body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if ended:  # the operator's caps end with their sessions
            async with self._sessions() as session, session.begin():
                key = tuple_(EvOperatorCap.charger_id, EvOperatorCap.transaction_id)
                await session.execute(delete(EvOperatorCap).where(key.in_(ended)))

    async def step(self) -> None:
        """K16: renegotiate the sessions whose site limit moved since their schedule; forget ended ones (and
        the operator's caps on sessions that ended unseen: lost ends, ends while ops was down)."""
        async with self._sessions() as session, session.begin():
            its_session = exists().where(
                Transaction.charger_id == EvOperatorCap.charger_id,
                Transaction.transaction_id == EvOperatorCap.transaction_id,
                Transaction.active,
            )
            await session.execute(delete(EvOperatorCap).where(~its_session))
        if not self._scheduled:
            return
        keys = list(self._scheduled)
        async with self._sessions() as session:
            rows = await session.execute(
                select(Transaction.charger_id, Transaction.transaction_id).where(
                    Transaction.active,
                    Transaction.charger_id.in_({c for c, _ in keys}),
                    Transaction.transaction_id.in_({t for _, t in keys}),
                )
            )
            running = {(charger_id, tx_id) for charger_id, tx_id in rows}
            caps = await site_caps_w(session, {c for c, t in keys if (c, t) in running}, self._margin_pct)
        for key in keys:
            if key not in running:
                self._scheduled.pop(key, None)
                continue
            if (entry := self._scheduled.get(key)) is None:
                continue
            ev, needs, cap_then = entry  # read now: `renegotiate` may have planned it while this step awaited
            # the limit the site planner announced last is newer than the one read above
            cap_now = self._announced.get(key[0], caps[key[0]])
            if cap_moved(cap_then, cap_now):
                for_charger(log, key[0]).info(
                    "site limit for transaction %s moved from %s to %s W: renegotiating (K16)",
                    key[1], cap_then, cap_now,
                )  # fmt: skip
                await self.answer(ev, needs, cap=cap_now)

    async def answer(self, ev: Event, needs: EvChargingNeeds, cap: float | None = None) -> str:
        """Plan, send and keep the schedule for `needs` (within `cap`, or the site's limit read now, and the
        operator's cap on the session); the charger's answer (or what went wrong)."""
        try:
            if cap is None:
                cap = self._announced.get(ev.charger_id) or await self.site_cap_w(ev.charger_id)
            self._supersede(ev.charger_id, needs.evse_id, needs.transaction_id)
            self._scheduled[(ev.charger_id, needs.transaction_id)] = (ev, needs, cap)
            async with self._sessions() as session:
                operator_cap = await operator_cap_w(session, ev.charger_id, needs.transaction_id)
            sent = await offer(
                self._sessions,
                self._bus,
                self._timeout,
                ev.charger_id,
                needs,
                site_cap_w=cap,
                operator_cap_w=operator_cap,
                row_id=ev.event_id,
            )
            return sent.status
        except Exception:
            for_charger(log, ev.charger_id).exception(
                "EV schedule for transaction %s failed", needs.transaction_id
            )
            return "error"

    async def renegotiate(self, charger_id: str, cap_w: float) -> None:
        """K16 as the site planner moves a charger's limit, before it sends the default profile
        (`SitePlanner.before_limit`): the sessions scheduled there whose limit moved get their TxProfile
        first, under the new limit; the periodic step then finds them planned under it."""
        self._announced[charger_id] = cap_w
        for key, (ev, needs, cap_then) in list(self._scheduled.items()):
            if key[0] == charger_id and cap_moved(cap_then, cap_w):
                for_charger(log, charger_id).info(
                    "site limit for transaction %s moves from %s to %s W: renegotiating (K16)",
                    key[1], cap_then, cap_w,
                )  # fmt: skip
                await self.answer(ev, needs, cap=cap_w)

    def _supersede(self, charger_id: str, evse_id: int, transaction_id: str) -> None:
        """An EVSE carries one transaction at a time: a new one starting there (or its needs) means an older
        session whose end was lost (still active in the database) is over, so K16 renegotiates it no more."""
        for key, (_, old, _) in list(self._scheduled.items()):
            if key[0] == charger_id and old.evse_id == evse_id and key[1] != transaction_id:
                del self._scheduled[key]

    async def site_cap_w(self, charger_id: str) -> float | None:
        async with self._sessions() as session:
            return (await site_caps_w(session, {charger_id}, self._margin_pct))[charger_id]

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
