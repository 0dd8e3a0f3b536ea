"""Faults → maintenance tickets, and what each lifecycle step does to stock.

A matched observation opens one ticket per charger and rule (later ones count as repeats, possibly raising
the priority), reserves the parts the rule suspects at the depot serving the charger's site, and lets the
supply side re-check that depot's stock. A cleared fault is noted, the ticket stays for the crew to close.

What a ticket holds in reservation is read from its stock movements (reserve − release − consume), not from
`ticket.parts` (the parts it asked for, raised by repeat failures): after a resolve and a reopen the ticket
holds nothing however many parts it lists, and only the movements know that.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.ops_models import ModelPart, Part, StockMovement, Ticket, TicketOccurrence
from chargeops.logs import for_charger
from ops import supply, tickets
from ops.inventory import move
from ops.registry import parts_for, placement
from ops.rules import Observation, Rule, RuleBook

log = logging.getLogger("chargeops.ops")
# How each movement kind changes what a ticket holds in reservation.
_HOLDS = {"reserve": 1, "release": -1, "consume": -1}


class PartsUsedInvalid(ValueError):
    """The parts the crew reported using cannot be booked (the API answers 422 with `code`)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


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
            session, ticket, obs, rule, rule.priority_after(ticket.occurrences + 1, ticket.priority)
        )
    try:
        async with session.begin_nested():  # another ops process may open the same ticket concurrently
            return await _open(session, obs, book, rule, key)
    except IntegrityError:
        ticket = await session.scalar(select(Ticket).where(Ticket.open_key == key))
        assert ticket is not None
        return await _repeat(session, ticket, obs, rule, ticket.priority)


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
    for_charger(log, obs.charger_id).info("ticket %d opened: %s (%s)", ticket.id, rule.id, ticket.priority)
    await _book(session, ticket, [(p["sku"], "reserve", int(p["qty"])) for p in ticket.parts], "ops-engine")
    return ticket


async def _repeat(
    session: AsyncSession, ticket: Ticket, obs: Observation, rule: Rule, priority: str
) -> Ticket:
    if not await tickets.count_occurrence(session, ticket, obs.key, obs.at):
        return ticket  # the same event again (re-delivery): already counted
    anew = _new_failure(ticket, obs)
    ticket.cleared_at = None
    note = f"occurrence {ticket.occurrences}"
    if priority != ticket.priority:
        note += f"; priority {ticket.priority} → {priority}"
        ticket.priority = priority
    added = await _reserve_more(session, ticket, rule) if anew else []
    if added:
        note += "; reserved " + ", ".join(f"{sku} × {qty}" for sku, _, qty in added)
    await tickets.record(session, ticket, "repeated", "charger", note=note)
    await _book(session, ticket, added, "ops-engine")
    return ticket


def _new_failure(ticket: Ticket, obs: Observation) -> bool:
    """A repeat that plausibly broke something again: the fault had been reported cleared before it, or
    it is on another EVSE. A fault that never cleared is the same failure still there: no more parts.
    EVSE 0 (or none) is the charger as a whole, not another EVSE."""
    if ticket.cleared_at is not None and stored_utc(ticket.cleared_at) <= stored_utc(obs.at):
        return True
    return bool(ticket.evse_id and obs.evse_id and obs.evse_id != ticket.evse_id)


async def _reserve_more(session: AsyncSession, ticket: Ticket, rule: Rule) -> list[tuple[str, str, int]]:
    """Raises `ticket.parts` by the rule's parts, each SKU capped at what the charger's model contains
    (without a known model: at the rule's quantity), so a flapping fault cannot hoard a depot's stock.
    Returns the reserve movements to book."""
    if ticket.depot is None or not rule.parts:
        return []
    where = await placement(session, ticket.charger_id or "")
    needs = await parts_for(session, where.model_id, [(p.category, p.qty) for p in rule.parts])
    contains: dict[str, int] = {}
    if where.model_id is not None:
        rows = await session.execute(
            select(ModelPart.sku, ModelPart.qty).where(ModelPart.model_id == where.model_id)
        )
        contains = {sku: int(qty) for sku, qty in rows.all()}
    held = await _held(session, ticket)
    parts = [dict(p) for p in ticket.parts or []]
    added: list[tuple[str, str, int]] = []
    for need in needs:
        sku, qty = str(need["sku"]), int(str(need["qty"]))
        cap = contains.get(sku, qty)
        extra = min(qty, cap - held.get(sku, 0))
        if extra <= 0:
            for_charger(log, ticket.charger_id).info(
                "ticket %d: %s already holds %d %s (the charger has %d), none more reserved",
                ticket.id,
                rule.id,
                held.get(sku, 0),
                sku,
                cap,
            )
            continue
        mine = next((p for p in parts if p["sku"] == sku), None)
        if mine is None:
            parts.append({"sku": sku, "qty": extra})
        else:
            mine["qty"] = int(mine["qty"]) + extra
        added.append((sku, "reserve", extra))
    if added:
        ticket.parts = parts  # a new list: the JSON column sees the change
        reserved = ", ".join(f"{sku} × {qty}" for sku, _, qty in added)
        for_charger(log, ticket.charger_id).info("ticket %d: new failure, reserved %s", ticket.id, reserved)
    return added


async def _held(session: AsyncSession, ticket: Ticket) -> dict[str, int]:
    """SKU → units this ticket holds in reservation at its depot now, from its own movements."""
    if ticket.depot is None:
        return {}
    await session.flush()
    rows = await session.execute(
        select(StockMovement.sku, StockMovement.kind, func.sum(StockMovement.qty))
        .where(
            StockMovement.ticket_id == ticket.id,
            StockMovement.depot_id == ticket.depot,
            StockMovement.kind.in_(_HOLDS),
        )
        .group_by(StockMovement.sku, StockMovement.kind)
    )
    held: dict[str, int] = {}
    for sku, kind, qty in rows.all():
        held[sku] = held.get(sku, 0) + _HOLDS[kind] * int(qty or 0)
    return {sku: qty for sku, qty in held.items() if qty > 0}


async def _book(session: AsyncSession, ticket: Ticket, moves: list[tuple[str, str, int]], actor: str) -> None:
    """(SKU, kind, qty) movements at the ticket's depot, then the supply side re-checks those SKUs' stock."""
    moves = [m for m in moves if m[2] > 0]
    if ticket.depot is None or not moves:
        return
    for sku, kind, qty in moves:
        await move(session, ticket.depot, sku, kind, qty, ticket_id=ticket.id, actor=actor)
    await session.flush()
    for sku in dict.fromkeys(sku for sku, _, _ in moves):
        await supply.review(session, ticket.depot, sku)


async def _check_parts_used(
    session: AsyncSession, ticket: Ticket, to: str, parts_used: list[dict[str, Any]] | None
) -> dict[str, int] | None:
    """SKU → units used, or None when the step takes no report; raises PartsUsedInvalid."""
    resolving = ticket.kind == "maintenance" and to == "resolved"
    if parts_used is None:
        if resolving and ticket.parts:
            listed = ", ".join(f"{p['sku']} × {p['qty']}" for p in ticket.parts)
            raise PartsUsedInvalid(
                "parts_used_required",
                f"ticket {ticket.id} has parts reserved ({listed}): say which were used "
                "(parts_used; [] if none, and everything goes back to stock)",
            )
        return None
    if not resolving:
        raise PartsUsedInvalid(
            "parts_used_not_allowed", "parts_used goes only with resolving a maintenance ticket"
        )
    used: dict[str, int] = {}
    for entry in parts_used:
        sku, qty = entry.get("sku"), entry.get("qty")
        if not isinstance(sku, str) or not isinstance(qty, int) or isinstance(qty, bool) or qty < 0:
            raise PartsUsedInvalid("invalid_parts_used", "each part used is {sku, qty} with qty ≥ 0")
        if sku in used:
            raise PartsUsedInvalid("invalid_parts_used", f"{sku} is listed more than once")
        used[sku] = qty
    known = set((await session.scalars(select(Part.sku).where(Part.sku.in_(used)))).all())
    unknown = sorted(set(used) - known)
    if unknown:
        raise PartsUsedInvalid("unknown_sku", f"unknown SKU(s): {', '.join(unknown)}")
    return used


def _resolve_moves(held: dict[str, int], used: dict[str, int]) -> list[tuple[str, str, int]]:
    """What a resolve books per SKU: the used part of the reservation consumed, the rest released; a part
    used beyond it reserved, then consumed (a bare consume would lower other tickets' reservations)."""
    moves: list[tuple[str, str, int]] = []
    for sku in dict.fromkeys([*held, *used]):
        have, fitted = held.get(sku, 0), used.get(sku, 0)
        taken = min(have, fitted)
        moves += [(sku, "consume", taken), (sku, "release", have - taken)]
        moves += [(sku, "reserve", fitted - taken), (sku, "consume", fitted - taken)]
    return [m for m in moves if m[2] > 0]


async def transition(
    session: AsyncSession,
    ticket: Ticket,
    to: str,
    actor: str,
    *,
    assignee: str | None = None,
    note: str | None = None,
    parts_used: list[dict[str, Any]] | None = None,
) -> Ticket:
    """A lifecycle step with its stock effects; nothing is changed when it raises (IllegalTransition,
    PartsUsedInvalid).

    Resolving a maintenance ticket takes the crew's `parts_used` (required when the ticket lists parts):
    what it holds is consumed up to what was used, the rest released, extras reserved then consumed; the
    report is added to `ticket.parts_used`. Reopening (resolved → in_progress) re-reserves nothing, so a
    second resolve books what it used as extras. Closing a ticket that was never resolved releases what it
    holds. Closing an open supply ticket (a purchase order) cancels what it still owed."""
    tickets.check_step(ticket, to)
    used = await _check_parts_used(session, ticket, to, parts_used)
    if assignee is not None:
        ticket.assignee = assignee
    if used is not None:  # before the step, so the ticket.resolved event carries it
        total = {p["sku"]: int(p["qty"]) for p in ticket.parts_used or []}
        for sku, qty in used.items():
            total[sku] = total.get(sku, 0) + qty
        ticket.parts_used = [{"sku": sku, "qty": qty} for sku, qty in total.items() if qty > 0]
    came_from = await tickets.step(session, ticket, to, actor, note)
    if ticket.kind == "maintenance":
        if to == "resolved":
            await _book(session, ticket, _resolve_moves(await _held(session, ticket), used or {}), actor)
        elif to == "closed" and came_from != "resolved":
            held = await _held(session, ticket)
            await _book(session, ticket, [(sku, "release", qty) for sku, qty in held.items()], actor)
    elif ticket.kind == "supply" and to == "closed" and came_from != "resolved":
        await supply.cancel(session, ticket, actor)
    return ticket
