"""The audit trail of refused API calls: every 401 and 403 as one structured line on `chargeops.audit`
(method, path, client address, reason; the token's id and name when it was known, never the secret).

Lines are limited per client address (`BURST` a minute, then one line saying how many more were refused), so
someone hammering the API with bad tokens cannot flood the log; the refusals themselves are not limited here.
"""

from __future__ import annotations

import logging
import time

from fastapi import Request

from chargeops.logs import LineBudget

log = logging.getLogger("chargeops.audit")
BURST = 10  # lines per client address and minute
_MAX_ADDRESSES = 10_000


class _Limiter:
    """A `LineBudget` per client address (the oldest address forgotten beyond `_MAX_ADDRESSES`)."""

    def __init__(self) -> None:
        self._budgets: dict[str, LineBudget] = {}

    def allow(self, address: str, now: float) -> tuple[bool, int]:
        """(log this one?, lines held back in the address's minute that just ended)."""
        budget = self._budgets.get(address)
        if budget is None:
            if len(self._budgets) >= _MAX_ADDRESSES:
                self._budgets.pop(next(iter(self._budgets)))
            budget = self._budgets[address] = LineBudget(BURST)
        return budget.spend(now)


_limiter = _Limiter()


def refused(request: Request, status: int, reason: str, token_id: int | None = None, name: str = "") -> None:
    address = request.client.host if request.client else "?"
    ok, suppressed = _limiter.allow(address, time.monotonic())
    if suppressed:
        log.warning("%d more refused API calls from %s in the last minute", suppressed, address)
    if ok:
        log.warning(
            "API %d %s %s from %s: %s%s",
            status, request.method, request.url.path, address, reason,
            f" (token {token_id} {name})" if token_id is not None or name else "",
            extra={"status": status, "client": address, "reason": reason, "token_id": token_id},
        )  # fmt: skip
