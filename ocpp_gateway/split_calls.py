"""Sending a list request (`batching.SPLITS`) in as many calls as the station's message limits need, and
answering with one merged result; and a 2.x SendLocalList cut to the station's BytesPerMessage.

A station whose limits are not known yet (its NotifyReport or a GetVariables answer may have told them, on
this connection or an earlier one: `message_limits`) gets the request whole, as the operator wrote it,
unless it breaks a limit the station did tell (an `ItemsPerMessage` without its `BytesPerMessage`: TC_B_08):
most requests fit, and a station is not asked anything it was not asked for (the OCTT's TC_B_07 expects the
operator's two variables in the first GetVariables). Only when it refuses the whole as beyond its limits
(CALLERROR OccurrenceConstraintViolation or FormatViolation) are its limits asked, once, and the request sent
again in parts that fit.

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
# What a 2.x station answers a message with more entries or bytes than it takes (OCPP-J 2.0.1 §4.3).
BEYOND_LIMITS = frozenset({"OccurrenceConstraintViolation", "FormatViolation"})


def _beyond_limits(reply: CommandReply) -> bool:
    return reply.outcome == "error" and reply.error_code in BEYOND_LIMITS


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


def _fits_known(limits: MessageLimits, action: str, payload: Payload) -> bool:
    """Whether `payload` keeps to the limits the station did report for `action` (a station may have told
    its `ItemsPerMessage` and not its `BytesPerMessage`: the one it told binds, B06.FR.05 / TC_B_08)."""
    planned = plan(action, payload, limits.of(action))
    return len(planned.parts) == 1 and not planned.too_large


async def _whole_first(
    send: Send, limits: MessageLimits, action: str, payload: Payload, deadline: float, log: ChargerLog
) -> tuple[CommandReply | None, CommandReply | None]:
    """A request sent whole to a station whose limits are unknown: (the reply to give the caller, None), or,
    refused as beyond its limits, (None, that refusal) once the limits were asked."""
    timeout = deadline - time.monotonic()
    whole = _heard(limits, action, await send(action, payload, timeout))
    if not _beyond_limits(whole):
        return whole, None
    log.info("%s refused whole (%s): asking the station's message limits", action, whole.error_code)
    left = deadline - time.monotonic()
    if left <= 0:
        return whole, None
    if (unreachable := await _ask_limits(send, limits, action, left)) is not None:
        return unreachable, None
    return None, whole


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
    """`payload` for `action` sent in calls that fit the station's limits; one reply for all of them. The
    limits kept from earlier connections are read first; any it tells now are kept after."""
    await limits.load()
    reply = await _in_parts(send, limits, action, payload, timeout, log)
    await limits.keep()
    return reply


async def _in_parts(
    send: Send, limits: MessageLimits, action: str, payload: Payload, timeout: float, log: ChargerLog
) -> CommandReply:
    deadline = time.monotonic() + timeout
    entries = SPLITS[action].entries
    refused = None
    if len(payload[entries]) > 1 and not limits.known(action) and _fits_known(limits, action, payload):
        reply, refused = await _whole_first(send, limits, action, payload, deadline, log)
        if reply is not None:
            return reply
    planned = plan(action, payload, limits.of(action))
    if len(planned.parts) == 1 and not planned.too_large:
        if refused is not None:
            return refused  # the limits it told do not explain the refusal: the same again would not help
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
    """A 2.x SendLocalList within the station's BytesPerMessage (LocalAuthListCtrlr; when not known, sent
    whole and asked once the station refuses it as too large): a message cannot be split here (each carries
    its own list version), so only the leading entries that fit go, and the answer says how many
    (`entries_sent`, when not all); the caller sends the rest in its next message. An entry too large alone
    is not sent at all. The limits are read and kept as for `call_in_parts`."""
    await limits.load()
    reply = await _fitted(send, limits, action, payload, timeout, log)
    await limits.keep()
    return reply


async def _fitted(
    send: Send, limits: MessageLimits, action: str, payload: Payload, timeout: float, log: ChargerLog
) -> CommandReply:
    deadline = time.monotonic() + timeout
    entries = payload.get(LOCAL_LIST_ENTRIES) or []
    refused = None
    known_bytes = limits.of(action).bytes
    fits = known_bytes is None or leading_fit(action, payload, LOCAL_LIST_ENTRIES, known_bytes) == len(
        entries
    )
    if len(entries) > 1 and not limits.known(action) and fits:
        reply, refused = await _whole_first(send, limits, action, payload, deadline, log)
        if reply is not None:
            return reply
    limit = limits.of(action).bytes
    count = leading_fit(action, payload, LOCAL_LIST_ENTRIES, limit)
    if entries and count == 0:
        why = f"one entry alone makes a message larger than the station's BytesPerMessage ({limit})"
        return CommandReply("invalid", error_code=TOO_LARGE, description=why)
    if refused is not None and count == len(entries):
        return refused  # the limits it told do not explain the refusal: the same again would not help
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
