"""The audit trail of refused access, for every door: operator API calls refused with 401 / 403
(`ops/api/audit.py`) and charger handshakes the gateway refused (`ocpp_gateway/server.py`). One structured
WARNING line each on `chargeops.audit`, naming who (client address, charger or token id) and why, never a
secret.

Lines are limited per client address (`BURST` a minute, then one line saying how many more were refused), so
someone hammering a door cannot flood the log; the refusals themselves are not limited here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from chargeops.logs import LineBudget

log = logging.getLogger("chargeops.audit")
BURST = 10  # lines per client address and minute
_MAX_ADDRESSES = 10_000


class AddressBudgets:
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


_budgets = AddressBudgets()


def refused(address: str, message: str, *args: Any, **fields: Any) -> None:
    """One audit line (`message % args`, `fields` as structured extras) unless `address` used its minute."""
    ok, held = _budgets.allow(address, time.monotonic())
    if held:
        log.warning("%d more refusals from %s in the last minute", held, address)
    if ok:
        log.warning(message, *args, extra={"client": address, **fields})


def reset() -> None:
    """Start every address's minute afresh (tests)."""
    global _budgets
    _budgets = AddressBudgets()
