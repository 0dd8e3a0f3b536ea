"""Tickets: the lifecycle both kinds share, the audit trail, and their one outward representation.

open → assigned → in_progress → resolved → closed. An open ticket may also be closed straight away
(a false alarm, a cancelled order); resolved can go back to in_progress if the fix did not hold. What a step
does to stock lives with the ticket's kind (`ops.maintenance`, `ops.supply`); this module only walks the
states and writes down who did what, and queues the webhook event in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from chargeops import clock
from chargeops.db.engine import stored_iso
from chargeops.db.ops_models import Ticket, TicketLog, TicketOccurrence
from ops.outbox import enqueue
from telemetry.metrics import TICKET_EVENTS

OPEN_STATES = ("open", "assigned", "in_progress")
STATES = (*OPEN_STATES, "resolved", "closed")
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"assigned", "in_progress", "closed"}),
    "assigned": frozenset({"open", "in_progress", "closed"}),
    "in_progress": frozenset({"assigned", "resolved"}),
    "resolved": frozenset({"in_progress", "closed"}),
    "closed": frozenset(),
}
PRIORITIES = ("P1", "P2", "P3", "P4")


class IllegalTransition(Exception):
    """The ticket cannot go from its status to the one asked for."""

    def __init__(self, ticket: Ticket, to: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(ticket.status, ()))) or "none"
        super().__init__(f"ticket {ticket.id} is {ticket.status}: cannot go to {to} (allowed: {allowed})")


class OpenCount(NamedTuple):
    kind: str
    priority: str
    n: int
    past_sla: int  # due before `now` and still open
    unassigned: int


async def open_counts(session: AsyncSession, now: datetime, *where: ColumnElement[bool]) -> list[OpenCount]:
    """Open tickets matching `where` by kind and priority: the Prometheus gauge and the fleet summary."""
    stmt = (
        select(
            Ticket.kind,
            Ticket.priority,
            func.count(),
            func.count(case((Ticket.sla_due_at < now, 1))),
            func.count(case((Ticket.assignee.is_(None), 1))),
        )
        .where(Ticket.status.in_(OPEN_STATES), *where)
        .group_by(Ticket.kind, Ticket.priority)
    )
    return [OpenCount(*row) for row in (await session.execute(stmt)).all()]


def ticket_view(t: Ticket) -> dict[str, Any]:
    """The ticket as the API, the crew page and webhooks show it (SPEC §5)."""
    return {
        "id": t.id,
        "kind": t.kind,
        "status": t.status,
        "priority": t.priority,
        "charger_id": t.charger_id,
        "site": t.site,
        "depot": t.depot,
        "region": t.region,
        "rule": t.rule,
        "subject": t.subject,
        "fault": {"code": t.fault_code, "component": t.component, "description": t.description}
        if t.kind == "maintenance"
        else None,
        "diagnosis": t.diagnosis,
        "parts": t.parts or ([{"sku": t.sku, "qty": t.qty}] if t.sku else []),
        "parts_used": t.parts_used,
        "order": {
            "supplier": t.supplier,
            "qty": t.qty,
            "received": t.received_qty,
            "ordered_at": stored_iso(t.ordered_at),
            "promised_at": stored_iso(t.promised_at),
        }
        if t.kind == "supply"
        else None,
        "occurrences": t.occurrences,
        "assignee": t.assignee,
        "created_at": stored_iso(t.created_at),
        "updated_at": stored_iso(t.updated_at),
        "last_occurred_at": stored_iso(t.last_occurred_at),
        "sla_due_at": stored_iso(t.sla_due_at),
        "cleared_at": stored_iso(t.cleared_at),
        "resolved_at": stored_iso(t.resolved_at),
        "closed_at": stored_iso(t.closed_at),
    }


async def record(
    session: AsyncSession,
    ticket: Ticket,
    action: str,
    actor: str,
    *,
    note: str | None = None,
    from_status: str | None = None,
) -> None:
    """Audit entry plus the webhook event `ticket.{action}` carrying the ticket as it now is."""
    await session.flush()  # the ticket has its id and its new state
    session.add(
        TicketLog(
            ticket_id=ticket.id,
            actor=actor,
            action=action,
            from_status=from_status,
            to_status=ticket.status,
            note=note,
        )
    )
    TICKET_EVENTS.labels(ticket.kind, action).inc()
    await enqueue(session, f"ticket.{action}", {"ticket": ticket_view(ticket), "actor": actor, "note": note})


async def create(session: AsyncSession, ticket: Ticket, actor: str, note: str | None = None) -> Ticket:
    session.add(ticket)
    await record(session, ticket, "created", actor, note=note)
    return ticket


async def count_occurrence(session: AsyncSession, ticket: Ticket, event_key: str, at: datetime) -> bool:
    """Counts an event on the ticket once (a re-delivered event is not a repeat); True if it was new."""
    if await session.get(TicketOccurrence, (ticket.id, event_key)) is not None:
        return False
    session.add(TicketOccurrence(ticket_id=ticket.id, event_id=event_key))
    ticket.occurrences += 1
    ticket.last_occurred_at = at
    return True


def check_step(ticket: Ticket, to: str) -> None:
    """Raises IllegalTransition unless the ticket may go from its status to `to` (so a caller can refuse a
    step before it changes anything)."""
    if to not in TRANSITIONS.get(ticket.status, ()):
        raise IllegalTransition(ticket, to)


async def step(session: AsyncSession, ticket: Ticket, to: str, actor: str, note: str | None = None) -> str:
    """Moves the ticket one step (raises IllegalTransition); returns the status it came from."""
    check_step(ticket, to)
    came_from, ticket.status = ticket.status, to
    now = clock.now()
    if to in OPEN_STATES:
        ticket.resolved_at = None
    elif to == "resolved":
        ticket.resolved_at = now
    else:
        ticket.closed_at = now
    if to not in OPEN_STATES:
        ticket.open_key = None  # a repeat from now on is a new ticket
    elif ticket.open_key is None:
        ticket.open_key = reopen_key(ticket)
    ticket.updated_at = now
    await record(session, ticket, to, actor, note=note, from_status=came_from)
    return came_from


def maintenance_key(charger_id: str, rule: str, subject: str | None = None) -> str:
    """One open ticket per charger and rule; per battery pack and rule for pack rules (a pack moves)."""
    return f"maintenance:pack:{subject}:{rule}" if subject else f"maintenance:{charger_id}:{rule}"


def reopen_key(ticket: Ticket) -> str | None:
    """A maintenance ticket back in an open state holds its key again; a purchase order holds none (several
    may be open for one depot and SKU)."""
    if ticket.kind == "supply":
        return None
    return maintenance_key(ticket.charger_id or "", ticket.rule or "", ticket.subject)
