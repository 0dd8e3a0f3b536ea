"""Maintenance and supply tickets (SPEC §5): list, one with its audit trail, lifecycle steps.

A region-scoped token sees and moves only its region's tickets (`ops.api.scope`); a crew token bound to a
region, the crew page's, only maintenance ones.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import Select, case, select
from sqlalchemy.exc import IntegrityError

from chargeops.db.ops_models import Ticket, TicketLog
from ops import maintenance
from ops.api.auth import Caller, CrewMember, Role
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import (
    MAX_PAGE,
    IdPath,
    Items,
    Me,
    TicketDetail,
    TicketLogOut,
    TicketOut,
    TicketTransition,
)
from ops.api.scope import Scope, Scoped
from ops.tickets import OPEN_STATES, IllegalTransition, ticket_view

router = APIRouter(tags=["tickets"], responses=documented(401, 403, 422))

_PRIORITY_ORDER = case({"P1": 1, "P2": 2, "P3": 3, "P4": 4}, value=Ticket.priority, else_=5)


@router.get("/api/me")
async def me(caller: Caller) -> Me:
    """Who the token belongs to (the crew page shows it and uses the name as assignee)."""
    return Me(name=caller.name, role=caller.role, region=caller.region)


def _visible(stmt: Select[Any], scope: Scope) -> Select[Any]:
    stmt = stmt.where(scope.regions(Ticket.region))
    if scope.principal.role == Role.CREW and not scope.whole_fleet:
        stmt = stmt.where(Ticket.kind == "maintenance")
    return stmt


@router.get("/api/tickets")
async def list_tickets(
    db: Db,
    scope: Scoped,
    kind: Literal["maintenance", "supply"] | None = None,
    status: str | None = Query(None, description="one status or several, comma-separated"),
    open: bool | None = Query(None, description="only open (open, assigned, in_progress) or only not"),
    charger_id: str | None = None,
    site: str | None = None,
    region: str | None = None,
    depot: str | None = None,
    limit: int = Query(500, ge=1, le=MAX_PAGE),
) -> Items[TicketOut]:
    """Most urgent first: priority, then SLA due time."""
    stmt = _visible(select(Ticket), scope)
    for column, value in (
        (Ticket.kind, kind),
        (Ticket.charger_id, charger_id),
        (Ticket.site, site),
        (Ticket.region, region),
        (Ticket.depot, depot),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if status:
        stmt = stmt.where(Ticket.status.in_([s.strip() for s in status.split(",")]))
    if open is not None:
        stmt = stmt.where(Ticket.status.in_(OPEN_STATES) if open else Ticket.status.not_in(OPEN_STATES))
    stmt = stmt.order_by(_PRIORITY_ORDER, Ticket.sla_due_at, Ticket.id).limit(limit)
    rows = (await db.scalars(stmt)).all()
    return Items(items=[TicketOut.model_validate(ticket_view(t)) for t in rows])


async def _one(db: Db, ticket_id: int, scope: Scope, *, lock: bool = False) -> Ticket:
    stmt = _visible(select(Ticket).where(Ticket.id == ticket_id), scope)
    ticket: Ticket | None = await db.scalar(stmt.with_for_update() if lock else stmt)
    if ticket is None:
        raise ApiError(404, "not_found", f"no ticket {ticket_id}")
    return ticket


@router.get("/api/tickets/{ticket_id}", responses=documented(404))
async def get_ticket(ticket_id: IdPath, db: Db, scope: Scoped) -> TicketDetail:
    ticket = await _one(db, ticket_id, scope)
    log = (
        await db.scalars(select(TicketLog).where(TicketLog.ticket_id == ticket_id).order_by(TicketLog.id))
    ).all()
    return TicketDetail(
        **ticket_view(ticket), log=[TicketLogOut.model_validate(e, from_attributes=True) for e in log]
    )


@router.post("/api/tickets/{ticket_id}/transition", responses=documented(404, 409, 422))
async def transition(
    ticket_id: IdPath, body: TicketTransition, db: Db, caller: CrewMember, scope: Scoped
) -> TicketOut:
    """One lifecycle step (open → assigned → in_progress → resolved → closed); an illegal step is 409, and so
    is a step from a status the ticket has left (`from`: what the caller last saw).
    Resolving a maintenance ticket takes `parts_used` (required if it lists parts, 422 otherwise): those are
    consumed, the rest of its reservation released. Closing an unresolved one releases what it holds."""
    ticket = await _one(db, ticket_id, scope, lock=True)
    if not caller.at_least_operator and ticket.kind != "maintenance":
        raise ApiError(403, "forbidden", "crew tokens move maintenance tickets only")
    if body.from_ is not None and body.from_ != ticket.status:
        raise ApiError(409, "stale_ticket", f"it is {ticket.status}, not {body.from_}.")
    assignee = body.assignee
    if assignee is None and body.to == "assigned" and ticket.assignee is None:
        assignee = caller.name
    try:
        used = None if body.parts_used is None else [p.model_dump() for p in body.parts_used]
        await maintenance.transition(
            db, ticket, body.to, caller.name, assignee=assignee, note=body.note, parts_used=used
        )
        await db.flush()
    except IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    except maintenance.PartsUsedInvalid as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except IntegrityError:
        raise ApiError(409, "already_open", "another open ticket already covers this fault") from None
    out = TicketOut.model_validate(ticket_view(ticket))
    await db.commit()
    return out
