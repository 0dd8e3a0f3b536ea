"""Requests per API token, so one busy script or dashboard cannot take the API (and the database behind it)
from everyone else; requests with a bad token are counted per client address, so guessing costs as much.

Moving windows from the `limits` library (several at once, e.g. `20/second;600/minute`: a short burst and a
sustained rate); a refused request uses up nothing and is told when to come back (`Retry-After`).
"""

from __future__ import annotations

import math
import time

from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from chargeops.settings import parse_rate_limit


class RateLimiter:
    """In memory, per process: with several API processes each grants the rate (documented in the README)."""

    def __init__(self, spec: str) -> None:
        self._items = parse_rate_limit(spec)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, key: str) -> int | None:
        """Count one request for `key`; None if allowed, else the whole seconds until it would be."""
        for item in self._items:
            if not self._limiter.hit(item, key):
                return self._wait(key)
        return None

    def exhausted(self, key: str) -> int | None:
        """Like `retry_after` without counting: whether `key` has already used up its rate."""
        if all(self._limiter.test(item, key) for item in self._items):
            return None
        return self._wait(key)

    def _wait(self, key: str) -> int:
        """Seconds until every used-up window has room again."""
        stats = [self._limiter.get_window_stats(i, key) for i in self._items]
        reset = max((s.reset_time for s in stats if s.remaining <= 0), default=time.time())
        return max(1, math.ceil(reset - time.time()))
