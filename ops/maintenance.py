"""Faults → maintenance tickets, and what each lifecycle step does to stock.

A matched observation opens one ticket per charger and rule (later ones count as repeats, possibly raising
the priority), reserves the parts the rule suspects at the depot serving the charger's site, and lets the
supply side re-check that depot's stock. A cleared fault is noted, the ticket stays for the crew to close.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.ops_models import Ticket, TicketOccurrence
from ops import supply, tickets
from ops.inventory import move
from ops.registry import parts_for, placement
from ops.rules import Observation, Rule, RuleBook

log = logging.getLogger("chargeops.ops")


async def observe(session: AsyncSession, obs: Observation, book: RuleBook) -> Ticket | None:
    """Applies one observation; returns the ticket it opened or counted on (None: no rule, or cleared)."""
    rule = book.match(obs)
    if rule is None:
        return None
    key = tickets.maintenance_key(obs.charger_id, rule.id, obs.subject)
    ticket = await session.scalar(select(Ticket).where(Ticket.open_key == key))
    if obs.cleared:
        if ticket is not None and ticket.cleared_at is None:
            ticket.cleared_at = obs.at
            await tickets.record(session, ticket, "cleared", "charger", note=f"{obs.code} cleared")
        return None
    if ticket is not None:
        return await _repeat(
            session, ticket, obs, rule.priority_after(ticket.occurrences + 1, ticket.priority)
        )
    try:
        async with session.begin_nested():  # another ops process may open the same ticket concurrently
            return await _open(session, obs, book, rule, key)
    except IntegrityError:
        ticket = await session.scalar(select(Ticket).where(Ticket.open_key == key))
        assert ticket is not None
        return await _repeat(session, ticket, obs, ticket.priority)


async def _open(session: AsyncSession, obs: Observation, book: RuleBook, rule: Rule, key: str) -> Ticket:
    where = await placement(session, obs.charger_id)
    parts = await parts_for(session, where.model_id, [(p.category, p.qty) for p in rule.parts])
    now = clock.now()
    ticket = Ticket(
        kind="maintenance",
        status="open",
        priority=rule.priority,
        open_key=key,
        charger_id=obs.charger_id,
        site=where.site,
        depot=where.depot,
        region=where.region,
        rule=rule.id,
        evse_id=obs.evse_id,
        subject=obs.subject,
        fault_code=obs.code or obs.event,
        component=obs.component or None,
        description=" · ".join(x for x in (obs.description, obs.vendor_code) if x) or None,
        diagnosis=rule.diagnosis,
        parts=parts,
        occurrences=1,
        created_at=now,
        updated_at=now,
        last_occurred_at=obs.at,
        sla_due_at=now + timedelta(hours=book.sla_hours(rule, rule.priority)),
    )
    await tickets.create(session, ticket, "ops-engine", note=f"{obs.event} {obs.code}".strip())
    session.add(TicketOccurrence(ticket_id=ticket.id, event_id=obs.key))
    log.info(
        "cp=%s ticket %d opened: %s (%s)",
        obs.charger_id,
        ticket.id,
        rule.id,
        ticket.priority,
        extra={"charge_point_id": obs.charger_id},
    )
    await _reserve(session, ticket, "reserve")
    return ticket


async def _repeat(session: AsyncSession, ticket: Ticket, obs: Observation, priority: str) -> Ticket:
    if not await tickets.count_occurrence(session, ticket, obs.key, obs.at):
        return ticket  # the same event again (re-delivery): already counted
    ticket.cleared_at = None
    note = f"occurrence {ticket.occurrences}"
    if priority != ticket.priority:
        note += f"; priority {ticket.priority} → {priority}"
        ticket.priority = priority
    await tickets.record(session, ticket, "repeated", "charger", note=note)
    return ticket


async def _reserve(session: AsyncSession, ticket: Ticket, kind: str) -> None:
    """Reserve / release / consume the ticket's parts at its depot, then re-check those SKUs' stock."""
    if ticket.depot is None:
        return
    for part in ticket.parts:
        await move(
            session,
            ticket.depot,
            part["sku"],
            kind,
            int(part["qty"]),
            ticket_id=ticket.id,
            actor=ticket.assignee or "ops-engine",
        )
    await session.flush()
    for part in ticket.parts:
        await supply.review(session, ticket.depot, part["sku"])


async def transition(
    session: AsyncSession,
    ticket: Ticket,
    to: str,
    actor: str,
    *,
    assignee: str | None = None,
    note: str | None = None,
) -> Ticket:
    """A lifecycle step with its stock effects: resolving a maintenance ticket consumes its parts, closing
    one that was never resolved releases them; closing an open supply ticket cancels what it ordered."""
    if assignee is not None:
        ticket.assignee = assignee
    came_from = await tickets.step(session, ticket, to, actor, note)
    if ticket.kind == "maintenance":
        if to == "resolved":
            await _reserve(session, ticket, "consume")
        elif to == "closed" and came_from != "resolved":
            await _reserve(session, ticket, "release")
    elif (
        ticket.kind == "supply" and to == "closed" and came_from != "resolved" and ticket.depot and ticket.sku
    ):
        await move(
            session, ticket.depot, ticket.sku, "cancel", ticket.qty or 0, ticket_id=ticket.id, actor=actor
        )
    return ticket
