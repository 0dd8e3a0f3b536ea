"""K16 on demand (TC_K_59): an operator asks for an ISO 15118 session's schedule to be renegotiated, with or
without a cap of their own. The session is the running transaction on the EVSE whose EV sent its charging
needs (ops plans each a TxProfile, `ops.ev_charging`); it is planned again from the EV's last needs within
the site's limit and the operator's cap, sent at once (a new TxProfile with the session's profile id,
replacing the last) and kept. The cap is kept in `ev_operator_caps` for the rest of the session, where the
EV planner (and the site planner: an EV held at it is not holding back) finds it: set with a number, kept
when not given, cleared with null. Nothing here asks the site planner for anything, so no TxDefaultProfile
follows the TxProfile unless the site itself changes.

Runs wherever the API runs (its own process or `serve`'s): it reads and writes the database and reaches the
charger over the bus, as the EV planner does.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import Commands
from chargeops.db.engine import insert_for
from chargeops.db.models import EvOperatorCap, StoredEvent, Transaction
from chargeops.events import EvChargingNeeds, EventKind
from chargeops.settings import Settings
from ops.ev_plan import Offer, offer, operator_cap_w, site_caps_w

NEEDS_LOOKBACK = 100  # the charger's latest needs events searched for the session's
NEEDS_FIELDS = frozenset(f.name for f in fields(EvChargingNeeds))


class NoEvSession(Exception):
    """No running ISO 15118 session that ops planned on the EVSE."""


async def planned_needs(session: AsyncSession, charger_id: str, evse_id: int) -> EvChargingNeeds | None:
    """The EV's last needs for the transaction running on the EVSE (ops plans a TxProfile for every needs
    event: the session is ISO 15118 and planned, or being planned), if it sent any."""
    transaction_id = await session.scalar(
        select(Transaction.transaction_id)
        .where(Transaction.charger_id == charger_id, Transaction.evse_id == evse_id, Transaction.active)
        .order_by(Transaction.id.desc())
        .limit(1)
    )
    if transaction_id is None:
        return None
    needs = await session.scalars(
        select(StoredEvent.data)
        .where(StoredEvent.charger_id == charger_id, StoredEvent.kind == EventKind.EV_CHARGING_NEEDS.value)
        .order_by(StoredEvent.received_at.desc())
        .limit(NEEDS_LOOKBACK)
    )
    data = next((n for n in needs if n.get("transaction_id") == transaction_id), None)
    if data is None or data.get("evse_id") != evse_id:
        return None
    known = {k: v for k, v in data.items() if k in NEEDS_FIELDS}  # as stored, whatever version wrote it
    departure = data.get("departure_at")
    return EvChargingNeeds(
        **{**known, "departure_at": datetime.fromisoformat(departure) if departure else None}
    )


async def renegotiate(
    sessions: async_sessionmaker[AsyncSession],
    bus: Commands,
    settings: Settings,
    charger_id: str,
    evse_id: int,
    *,
    set_cap: bool,
    cap_w: float | None = None,
) -> Offer:
    """Renegotiate the session on the EVSE now; with `set_cap`, `cap_w` becomes the operator's cap on it
    (None: no cap). `NoEvSession` when there is none."""
    async with sessions() as session, session.begin():
        needs = await planned_needs(session, charger_id, evse_id)
        if needs is None:
            raise NoEvSession(f"no ISO 15118 session planned on EVSE {evse_id} of charger {charger_id}")
        key = (EvOperatorCap.charger_id == charger_id, EvOperatorCap.transaction_id == needs.transaction_id)
        if set_cap and cap_w is None:
            await session.execute(delete(EvOperatorCap).where(*key))
        elif set_cap:
            dialect = (await session.connection()).dialect.name
            values = {"evse_id": evse_id, "limit_w": cap_w, "set_at": clock.now()}
            stmt = insert_for(dialect, EvOperatorCap).values(
                charger_id=charger_id, transaction_id=needs.transaction_id, **values
            )
            await session.execute(
                stmt.on_conflict_do_update(index_elements=["charger_id", "transaction_id"], set_=values)
            )
        else:
            cap_w = await operator_cap_w(session, charger_id, needs.transaction_id)
        site_cap = (await site_caps_w(session, {charger_id}, settings.site_margin_pct))[charger_id]
    return await offer(
        sessions, bus, settings.call_timeout, charger_id, needs, site_cap_w=site_cap, operator_cap_w=cap_w
    )
