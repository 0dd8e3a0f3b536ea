"""The audit trail of refused API calls: every 401 and 403 as one structured line on `chargeops.audit`
(method, path, client address, reason; the token's id and name when it was known, never the secret).

Lines are limited per client address (`BURST` a minute, then one line saying how many more were refused), so
someone hammering the API with bad tokens cannot flood the log; the refusals themselves are not limited here.
"""

from __future__ import annotations

import logging
import time

from fastapi import Request

log = logging.getLogger("chargeops.audit")
BURST = 10  # lines per client address and minute
_MAX_ADDRESSES = 10_000


class _Limiter:
    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # address → [minute started, lines, suppressed]

    def allow(self, address: str, now: float) -> tuple[bool, int]:
        """(log this one?, lines suppressed in the window that just ended)."""
        w = self._windows.get(address)
        suppressed = 0
        if w is None or now - w[0] >= 60.0:
            suppressed = int(w[2]) if w is not None else 0
            if w is None and len(self._windows) >= _MAX_ADDRESSES:
                self._windows.pop(next(iter(self._windows)))
            w = self._windows[address] = [now, 0, 0]
        w[1] += 1
        if w[1] > BURST:
            w[2] += 1
            return False, suppressed
        return True, suppressed


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
