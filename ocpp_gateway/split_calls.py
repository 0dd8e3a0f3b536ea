"""Sending a list request (`batching.SPLITS`) in as many calls as the station's message limits need, and
answering with one merged result; and a 2.x SendLocalList cut to the station's BytesPerMessage.

The whole request keeps the caller's timeout (the bus waits that long for one reply), shared by the calls in
turn. A request that needs one call goes out as it came. When the first call gets no answer (CALLERROR,
timeout, disconnected) that is the reply, as for an unsplit call; when a later one fails, its entries and
those of the parts not sent yet are answered `Rejected` / `Unspecified` with what happened, beside the
results the station did give: nothing is sent after a failure, and nothing is hidden from the caller.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from chargeops.commands import CommandReply
from chargeops.logs import ChargerLog
from ocpp_gateway.batching import SPLITS, TOO_LARGE, Payload, Unanswered, leading_fit, merge, plan
from ocpp_gateway.message_limits import MessageLimits

Send = Callable[[str, Payload, float], Awaitable[CommandReply]]


def _why(reply: CommandReply, timeout: float) -> str:
    if reply.outcome == "timeout":
        return f"no answer within {timeout:g} s: the station may or may not have applied it"
    if reply.outcome == "not_connected":
        return "not answered: the station disconnected"
    return f"not answered: {reply.outcome} {reply.error_code or ''} {reply.description or ''}".strip()


def _heard(limits: MessageLimits, action: str, reply: CommandReply) -> CommandReply:
    """`reply`, after noting any limits a GetVariables answer names (an operator may ask for them too)."""
    if action == "GetVariables" and reply.outcome == "result":
        limits.learn_results(reply.payload.get("getVariableResult") or ())
    return reply


async def _ask_limits(send: Send, limits: MessageLimits, action: str, timeout: float) -> CommandReply | None:
    """Ask the station once for `action`'s limits. A reply to give the caller instead, when the station
    cannot be reached at all; a refusal or a bad answer means no limits (the request goes as it came)."""
    reply = await send("GetVariables", limits.question(action), timeout)
    if reply.outcome in ("timeout", "not_connected"):
        return reply
    if reply.outcome == "result":
        limits.learn_results(reply.payload.get("getVariableResult") or ())
    limits.no_answer(action)
    return None


async def call_in_parts(
    send: Send, limits: MessageLimits, action: str, payload: Payload, timeout: float, log: ChargerLog
) -> CommandReply:
    """`payload` for `action` sent in calls that fit the station's limits; one reply for all of them."""
    deadline = time.monotonic() + timeout
    entries = SPLITS[action].entries
    if len(payload[entries]) > 1 and not limits.known(action):
        if (unreachable := await _ask_limits(send, limits, action, timeout)) is not None:
            return unreachable
    planned = plan(action, payload, limits.of(action))
    if len(planned.parts) == 1 and not planned.too_large:
        left = deadline - time.monotonic()
        if left <= 0:
            return CommandReply("timeout", description=f"no answer within {timeout:g} s")
        return _heard(limits, action, await send(action, payload, left))
    if planned.too_large:
        log.warning("%s: %d entries too large for one message, not sent", action, len(planned.too_large))
    if len(planned.parts) > 1:
        count = len(payload[entries])
        log.info("%s: %d entries in %d calls (%s)", action, count, len(planned.parts), limits.of(action))
    answers: list[Payload | Unanswered] = []
    for part in planned.parts:
        left = deadline - time.monotonic()
        if answers and isinstance(answers[-1], Unanswered):
            why = "not sent: an earlier part of this request was not answered"
        elif left <= 0:
            if not answers:
                return CommandReply("timeout", description=f"no answer within {timeout:g} s")
            why = f"not sent: the request's {timeout:g} s were used up by its other parts"
        else:
            reply = _heard(limits, action, await send(action, part.payload, left))
            if reply.outcome == "result":
                answers.append(reply.payload)
                continue
            if not answers:
                return reply  # nothing answered yet: as for an unsplit call
            why = _why(reply, left)
        answers.append(Unanswered(why))
    return CommandReply("result", payload=merge(action, payload, planned, answers))


LOCAL_LIST_ENTRIES = "localAuthorizationList"


async def call_fitted(
    send: Send, limits: MessageLimits, action: str, payload: Payload, timeout: float, log: ChargerLog
) -> CommandReply:
    """A 2.x SendLocalList within the station's BytesPerMessage (LocalAuthListCtrlr, asked once per
    connection when not known): a message cannot be split here (each carries its own list version), so
    only the leading entries that fit go, and the answer says how many (`entries_sent`, when not all);
    the caller sends the rest in its next message. An entry too large alone is not sent at all."""
    deadline = time.monotonic() + timeout
    entries = payload.get(LOCAL_LIST_ENTRIES) or []
    if len(entries) > 1 and not limits.known(action):
        if (unreachable := await _ask_limits(send, limits, action, timeout)) is not None:
            return unreachable
    limit = limits.of(action).bytes
    count = leading_fit(action, payload, LOCAL_LIST_ENTRIES, limit)
    if entries and count == 0:
        why = f"one entry alone makes a message larger than the station's BytesPerMessage ({limit})"
        return CommandReply("invalid", error_code=TOO_LARGE, description=why)
    if count < len(entries):
        log.info("%s: %d of %d entries fit %s bytes; the rest go next", action, count, len(entries), limit)
        payload = {**payload, LOCAL_LIST_ENTRIES: entries[:count]}
    left = deadline - time.monotonic()
    if left <= 0:
        return CommandReply("timeout", description=f"no answer within {timeout:g} s")
    reply = await send(action, payload, left)
    if reply.outcome == "result" and count < len(entries):
        reply.payload = {**reply.payload, "entries_sent": count}
    return reply
