"""How a charger's CALL finds what answers it: one visible route table per OCPP version.

Each version's session lists, in its `ROUTES`, every charger-initiated action its version defines (spec
direction charging station → central system; `tests/test_route_tables.py` holds each table to the schemas)
with what answers it:

* a handler: a method of the session that maps the payload to neutral events and an answer;
* `StoreOnly(answer)`: a message with no feature behind it yet, stored as reported and given a fixed answer;
* `NotSupported("because …")`: answered with CALLERROR `NotSupported` and that reason.

A CALL of an action the version defines only the other way is answered `NotSupported` too, one the version
does not define `NotImplemented` (`session.ChargerSession._handle_call`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chargeops.events import Body, Reported
from chargeops.logs import ChargerLog

Payload = dict[str, Any]


class Reporting(Protocol):
    """What handlers, and the handler mixins shared by several versions, use of their session."""

    id: str
    log: ChargerLog
    current_action: str

    async def emit(self, *bodies: Body, reported_at: datetime | None = None) -> None: ...


# A handler is called as `handler(session, payload)`; methods of a session class are handlers.
Handler = Callable[[Any, Payload], Awaitable[Payload]]


@dataclass(frozen=True, slots=True)
class StoreOnly:
    """A message with no feature behind it yet: stored as sent (OCPP field names), answered `response`."""

    response: Payload

    async def __call__(self, session: Reporting, payload: Payload) -> Payload:
        await session.emit(Reported(session.current_action, payload))
        return self.response


@dataclass(frozen=True, slots=True)
class NotSupported:
    """A charger-initiated action we know and refuse: CALLERROR `NotSupported`, with `why` as description."""

    why: str


Route = Handler | NotSupported
RouteTable = Mapping[str, Route]
